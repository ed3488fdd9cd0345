"""Customer lists: parsing, validation with line numbers, selection and masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from incident.audience import (
    Customer,
    RowProblem,
    iter_audience,
    load_audience,
    normalize_language,
    select,
)
from incident.errors import AudienceInvalid, Location
from incident.privacy import mask_contact, mask_email, mask_name, mask_phone

HEADER = "id,name,email,phone,language,segment,region,branch,products,priority\n"
GOOD_ROW = "c0,张伟,zhang.wei@example.com,13812348000,zh,retail,华东,上海分行,card,normal\n"


def write(tmp_path: Path, text: str, name: str = "customers.csv",
          encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def customer(ref: str, *, priority: str = "normal", products: tuple[str, ...] = (),
             region: str = "", branch: str = "", segment: str = "") -> Customer:
    return Customer(ref=ref, name=ref, email=f"{ref}@example.com", phone=None,
                    language="en", segment=segment, region=region, branch=branch,
                    products=products, priority=priority)


def test_good_file_with_chinese_names_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff" + HEADER
                 + "c1,张伟,Zhang.Wei@Example.COM,138 1234 8000,zh_CN,retail,华东,上海分行,"
                   '"Card; Mobile | loan,card",VIP\n'
                 + "c2,Wei Zhang,,+44 20 7946 0958,en-GB,private,EU,London,,\n"
                 + "c3,欧阳娜娜,ouyang@example.cn,,,,,,,0\n")
    load = load_audience(path, default_language="en")
    assert load.problems == []
    assert load.rows_read == 3
    assert load.path == str(path)
    assert load.customers == [
        Customer(ref="c1", name="张伟", email="Zhang.Wei@example.com", phone="+8613812348000",
                 language="zh-CN", segment="retail", region="华东", branch="上海分行",
                 products=("card", "mobile", "loan"), priority="urgent"),
        Customer(ref="c2", name="Wei Zhang", email=None, phone="+442079460958",
                 language="en", segment="private", region="EU", branch="London",
                 products=(), priority="normal"),
        # empty language falls back to the default passed in
        Customer(ref="c3", name="欧阳娜娜", email="ouyang@example.cn", phone=None,
                 language="en", segment="", region="", branch="", products=(),
                 priority="normal"),
    ]


def test_header_is_case_insensitive_optional_columns_default_extra_ignored(
        tmp_path: Path) -> None:
    path = write(tmp_path, " ID , Name,EMAIL, Phone ,Notes\n"
                           "c1,李娜,li.na@example.com,13900001111,call after 6pm\n")
    (only,) = load_audience(path, default_language="zh-CN").customers
    assert only == Customer(ref="c1", name="李娜", email="li.na@example.com",
                            phone="+8613900001111", language="zh-CN", segment="", region="",
                            branch="", products=(), priority="normal")


def test_default_region_parses_national_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "id,name,email,phone\nc1,Ann,,020 7946 0958\n")
    (only,) = load_audience(path, default_region="GB").customers
    assert only.phone == "+442079460958"


def test_multiline_cell_keeps_physical_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "id,name,email,phone,notes\n"            # 1
                           'c1,张伟,a@example.com,,"first\n'        # 2
                           "second\n"                              # 3
                           'third"\n'                              # 4
                           "c2,,b@example.com,,\n"                 # 5: empty name
                           '"c3\n'                                 # 6: id cell spans 6-7
                           '",Bob,bad-email,,\n')                  # 7
    load = load_audience(path)
    assert [c.ref for c in load.customers] == ["c1"]
    assert [(p.line, p.field) for p in load.problems] == [(5, "name"), (6, "email")]
    assert load.rows_read == 3


def test_blank_lines_are_skipped_but_counted_for_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "\n" + GOOD_ROW + ",,,,,,,,,\n\nc9,X,,,,,,,,\n")
    load = load_audience(path)
    assert load.rows_read == 2
    assert [(p.line, p.field) for p in load.problems] == [(6, "email/phone")]


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, (HEADER + GOOD_ROW + "c2,,a@example.com,,,,,,,\n")
                 .replace("\n", "\r\n"))
    load = load_audience(path)
    assert [c.ref for c in load.customers] == ["c0"]
    assert [(p.line, p.field) for p in load.problems] == [(3, "name")]


@pytest.mark.parametrize(("row", "field", "fragment"), [
    (",李四,li@example.com,,,,,,,", "id", "empty id"),
    ("c0,李四,li@example.com,,,,,,,", "id", "duplicate id 'c0' (first on line 2)"),
    ("c1,,li@example.com,,,,,,,", "name", "empty name"),
    ("c1,  ,li@example.com,,,,,,,", "name", "empty name"),
    ("c1,李四,,,,,,,,", "email/phone", "neither an email nor a phone"),
    ("c1,李四,li@,,,,,,,", "email", "invalid email"),
    ("c1,李四,,12345,,,,,,", "phone", "not a valid number"),
    ("c1,李四,,not-a-phone,,,,,,", "phone", "invalid phone"),
    ("c1,李四,,+86 1,,,,,,", "phone", "invalid phone"),
    ("c1,李四,li@example.com,,,,,,,maybe", "priority", "unknown priority 'maybe'"),
    ("c1,李四,li@example.com,,,,,,,2", "priority", "unknown priority"),
    ("c1,李四,li@example.com,,klingon,,,,,", "language", "unsupported language 'klingon'"),
    ("c1,李四,li@example.com,,,,,,", "", "expected 10 cells, found 9"),
    ("c1,Li, Si,li@example.com,,,,,,,", "", "expected 10 cells, found 11"),
])
def test_bad_rows_are_reported_with_line_and_field(tmp_path: Path, row: str, field: str,
                                                   fragment: str) -> None:
    path = write(tmp_path, HEADER + GOOD_ROW + row + "\n" + GOOD_ROW.replace("c0", "c9"))
    load = load_audience(path)
    assert [c.ref for c in load.customers] == ["c0", "c9"]
    assert len(load.problems) == 1
    (problem,) = load.problems
    assert (problem.line, problem.field) == (3, field)
    assert fragment in problem.message
    assert load.rows_read == 3
    assert load.locations() == [(Location(file=str(path), line=3, field=field or None),
                                 problem.message)]


@pytest.mark.parametrize(("row", "field", "fragment", "email", "phone"), [
    ("c1,李四,li@example.com,999,,,,,,", "phone", "invalid phone '**9'",
     "li@example.com", None),
    ("c1,李四,li@example.com,1381234800,,,,,,", "phone", "invalid phone '13*****800'",
     "li@example.com", None),
    ("c1,李四,li.example.com,13812348000,,,,,,", "email", "invalid email",
     None, "+8613812348000"),
])
def test_a_bad_contact_costs_its_channel_not_the_customer(
        tmp_path: Path, row: str, field: str, fragment: str, email: str | None,
        phone: str | None) -> None:
    path = write(tmp_path, HEADER + GOOD_ROW + row + "\n")
    load = load_audience(path)
    assert [(c.ref, c.email, c.phone) for c in load.customers] == [
        ("c0", "zhang.wei@example.com", "+8613812348000"), ("c1", email, phone)]
    (problem,) = load.problems
    assert (problem.line, problem.field, problem.skipped) == (3, field, False)
    assert fragment in problem.message
    assert f"notified by {'email' if email else 'SMS'} only" in problem.message
    assert (load.bad_rows, load.partial_rows, load.rows_read) == (0, 1, 2)


def test_a_contact_refused_by_a_channel_check_leaves_the_other_channels(
        tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "c1,李四,李四@例子.广告,13812348000,,,,,,\n"
                 + "c2,王五,王五@例子.广告,,,,,,,\n")
    load = load_audience(path, checks={
        "email": lambda a: None if a.isascii() else "the relay cannot take this address"})
    assert [(c.ref, c.email, c.phone) for c in load.customers] == [
        ("c1", None, "+8613812348000")]
    assert [(p.line, p.field, p.skipped) for p in load.problems] == [
        (2, "email", False), (3, "email", True)]
    assert "the relay cannot take this address" in load.problems[0].message


def test_every_problem_of_a_row_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + GOOD_ROW + ",,bad,123,xx,,,,,what\n")
    load = load_audience(path)
    assert [(p.line, p.field) for p in load.problems] == [
        (3, "id"), (3, "name"), (3, "email"), (3, "phone"), (3, "language"), (3, "priority")]
    assert load.rows_read == 2


@pytest.mark.parametrize(("cell", "expected"), [
    ("urgent", "urgent"), ("HIGH", "urgent"), ("vip", "urgent"), ("1", "urgent"),
    ("", "normal"), ("normal", "normal"), (" Normal ", "normal"), ("0", "normal"),
])
def test_priority_values(tmp_path: Path, cell: str, expected: str) -> None:
    path = write(tmp_path, "id,name,email,phone,priority\n"
                           f"c1,Ann,ann@example.com,,{cell}\n")
    assert load_audience(path).customers[0].priority == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("zh", "zh-CN"), ("zh-cn", "zh-CN"), ("zh_CN", "zh-CN"), ("ZH-CN", "zh-CN"),
    ("cn", "zh-CN"), ("zh-Hans", "zh-CN"), ("en", "en"), ("en-GB", "en"), ("en-US", "en"),
    ("EN_us", "en"),
])
def test_language_normalisation(value: str, expected: str) -> None:
    assert normalize_language(value) == expected


@pytest.mark.parametrize("value", ["fr", "english-ish", "", "e", "zhcn"])
def test_unsupported_languages(value: str) -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        normalize_language(value)


@pytest.mark.parametrize(("text", "fragment"), [
    ("id,name,phone\nc1,A,13812348000\n", "email"),
    ("ID,Email,Phone\nc1,a@example.com,\n", "name"),
    ("name,email\nA,a@example.com\n", "id, phone"),
    ("id,name,email,phone,email\nc1,A,a@example.com,,b@example.com\n", "email"),
    ("", "empty"),
    ("\n\n", "empty"),
    (HEADER, "no data rows"),
    (HEADER + "c1,,,,,,,,,\nc2,B,bad,,,,,,,\n", "all 2 rows are bad"),
])
def test_unusable_files_raise(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text, name="客户名单.csv")
    with pytest.raises(AudienceInvalid) as info:
        load_audience(path)
    assert str(path) in info.value.message
    assert fragment in info.value.message
    assert info.value.problems
    assert all(loc.file == str(path) for loc, _ in info.value.problems)


def test_all_bad_lists_every_row_problem(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "c1,,a@example.com,,,,,,,\nc2,B,,,,,,,,\n")
    with pytest.raises(AudienceInvalid) as info:
        load_audience(path)
    assert info.value.problems == [
        (Location(file=str(path), line=2, field="name"), "empty name"),
        (Location(file=str(path), line=3, field="email/phone"),
         "neither an email nor a phone"),
    ]


def test_an_unclosed_quote_that_swallows_later_rows_refuses_the_file(tmp_path: Path) -> None:
    # Line 12 opens a quote never closed: the 38 customers after it would vanish into one
    # cell, and the file was accepted with a single skipped row.
    rows = [f"c{n},Customer {n},c{n}@example.com,,en,,,,," for n in range(1, 50)]
    rows[10] = 'c11,"Broken quote,c11@example.com,,en,,,,,'
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    with pytest.raises(AudienceInvalid) as info:
        load_audience(path)
    assert f"{path}:12: a quote" in info.value.message
    assert "until line 50: lines 13–50" in info.value.message
    assert info.value.problems == [
        (Location(file=str(path), line=12, field="name"), "unclosed quote")]


def test_a_quoted_name_on_two_lines_is_still_one_customer(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + 'c1,"Li\nLei",li@example.com,,en,,,,,\n'
                 "c2,Wang,wang@example.com,,en,,,,,\n")
    loaded = load_audience(path)
    assert [c.name for c in loaded.customers] == ["Li Lei", "Wang"]


def test_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(AudienceInvalid, match=r"not found: .*nope\.csv"):
        load_audience(path)


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(AudienceInvalid, match="cannot read"):
        load_audience(tmp_path)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "c1,Ann,ann@example.com,,,,,,,\nc2,张伟,z@example.com,,,,,,,\n",
                 encoding="gbk")
    with pytest.raises(AudienceInvalid) as info:
        load_audience(path)
    assert f"{path}:3: not UTF-8" in info.value.message
    assert info.value.problems[0][0] == Location(file=str(path), line=3)
    assert info.value.hint and "UTF-8" in info.value.hint


def test_unclosed_quote_is_reported_not_swallowed(tmp_path: Path) -> None:
    # The csv module's field size limit stops a runaway quoted cell.
    filler = ("x" * 1000 + "\n") * 200
    path = write(tmp_path, HEADER + GOOD_ROW + 'c1,"Ann,a@example.com,,,,,,,\n' + filler)
    with pytest.raises(AudienceInvalid, match=r"customers\.csv:3: not readable as CSV"):
        load_audience(path)


def test_iter_audience_streams(tmp_path: Path) -> None:
    # Rows before a broken line are yielded before the error: nothing reads ahead.
    path = tmp_path / "customers.csv"
    path.write_bytes((HEADER + GOOD_ROW + "c2,,x@example.com,,,,,,,\n").encode()
                     + b"c3,\xd5\xc5,z@example.com,,,,,,,\n")
    items = iter_audience(path)
    first = next(items)
    assert isinstance(first, Customer) and first.ref == "c0"
    assert next(items) == RowProblem(3, "name", "empty name")
    with pytest.raises(AudienceInvalid, match=":4: not UTF-8"):
        next(items)


def test_bad_default_language_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + GOOD_ROW)
    with pytest.raises(ValueError, match="unsupported language"):
        load_audience(path, default_language="fr")


PEOPLE = [
    customer("a", products=("card",), region="华东", branch="Shanghai", segment="retail"),
    customer("b", products=("loan", "card"), region="华南", branch="Shenzhen",
             segment="private", priority="urgent"),
    customer("c", products=("mobile",), region="华东", branch="Hangzhou", segment="SME"),
    customer("d", products=(), region="EU", branch="London", segment="corporate",
             priority="urgent"),
    customer("e", products=("loan",), region="华东", branch="shanghai", segment="Retail"),
]


@pytest.mark.parametrize(("criteria", "expected"), [
    ({}, ["b", "d", "a", "c", "e"]),
    ({"products": ["card"]}, ["b", "a"]),
    ({"products": ["Mobile", "loan"]}, ["b", "c", "e"]),
    ({"regions": ["华东"]}, ["a", "c", "e"]),
    ({"regions": ["eu", "华南"]}, ["b", "d"]),
    ({"branches": ["SHANGHAI"]}, ["a", "e"]),
    ({"segments": ["retail", "sme"]}, ["a", "c", "e"]),
    ({"products": ["loan"], "regions": ["华东"]}, ["e"]),
    ({"products": ["card"], "segments": ["corporate"]}, []),
    ({"products": ["insurance"]}, []),
])
def test_select(criteria: dict[str, list[str]], expected: list[str]) -> None:
    assert [c.ref for c in select(PEOPLE, **criteria)] == expected


def test_select_accepts_any_iterable() -> None:
    assert [c.ref for c in select(iter(PEOPLE), regions=["EU"])] == ["d"]


@pytest.mark.parametrize(("func", "value", "expected"), [
    (mask_phone, "+8613812348000", "+86 13******000"),
    (mask_phone, "+442079460958", "+44 20*****958"),
    (mask_phone, "+12025550143", "+1 20*****143"),
    (mask_phone, "+85291234567", "+852 91****67"),
    (mask_phone, "+3531234567", "+353 1****67"),
    (mask_phone, "13812348000", "13******000"),
    (mask_phone, "12", "*2"),
    (mask_phone, "7", "*"),
    (mask_phone, "no digits", "***"),
    (mask_phone, "", ""),
    (mask_phone, None, ""),
    (mask_email, "zhang.wei@example.com", "z***@example.com"),
    (mask_email, "Li@example.cn", "L***@example.cn"),
    (mask_email, "a@example.com", "***@example.com"),
    (mask_email, "not-an-email", "***"),
    (mask_email, "", ""),
    (mask_contact, "zhang.wei@example.com", "z***@example.com"),
    (mask_contact, "+8613812348000", "+86 13******000"),
    (mask_contact, None, ""),
    (mask_name, "张伟", "张*"),
    (mask_name, "欧阳娜娜", "欧***"),
    (mask_name, "Wei Zhang", "W** Z****"),
    (mask_name, "张", "*"),
    (mask_name, "J Smith", "* S****"),
    (mask_name, "", ""),
])
def test_masking(func: object, value: str | None, expected: str) -> None:
    assert callable(func)
    assert func(value) == expected


@pytest.mark.parametrize("value", ["***", "*", "+", "@", " ", "a", "张", "*@x", "+1", "**"])
@pytest.mark.parametrize("func", [mask_phone, mask_email, mask_contact, mask_name])
def test_masking_never_returns_the_input(func: object, value: str) -> None:
    assert callable(func)
    assert func(value) != value
