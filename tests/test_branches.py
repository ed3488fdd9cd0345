"""The branch list: CSV validation with line and field, distances, nearby open branches, scope."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from incident.branches import Branch, haversine_km, load_branches, nearby_open, scope_branches
from incident.errors import BranchesInvalid, InvalidValue, Location

ROOT = Path(__file__).resolve().parent.parent
HEADER = "id,name,name_en,region,latitude,longitude,geocodes\n"


def write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "branches.csv"
    path.write_bytes(text.encode(encoding))
    return path


def problems_of(path: Path) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(BranchesInvalid) as caught:
        load_branches(path)
    assert str(path) in caught.value.message
    assert all(loc.file == str(path) for loc, _ in caught.value.problems)
    return [(loc.line, loc.field, message) for loc, message in caught.value.problems]


def branch(branch_id: str, lat: float, lon: float, region: str = "r") -> Branch:
    return Branch(id=branch_id, name=branch_id, name_en="", region=region, latitude=lat,
                  longitude=lon, geocodes=())


# ---------------------------------------------------------------- loading


def test_shipped_branch_list_covers_every_customer_branch() -> None:
    branches = load_branches(ROOT / "examples" / "branches.csv")
    ids = {b.id for b in branches}
    for name in ("customers.csv", "drill.csv"):
        with (ROOT / "examples" / name).open(encoding="utf-8", newline="") as handle:
            used = {row["branch"] for row in csv.DictReader(handle)}
        assert used <= ids, f"{name}: branches missing from branches.csv: {used - ids}"
    central = next(b for b in branches if b.id == "hk-central")
    assert (central.label("zh-CN"), central.label("en")) == ("中环分行", "Central Branch")
    # Every region has at least one branch that is not in the customer list, so a closure
    # always has a nearby open candidate.
    assert {b.region for b in branches} == {"guangdong", "hong-kong", "shanghai", "beijing",
                                            "fujian"}
    futian = next(b for b in branches if b.id == "gd-sz-futian")
    assert "440304" in futian.geocodes


def test_good_file_with_bom_crlf_extra_column_and_no_english_name(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffid,name,region,latitude,longitude,geocodes,manager\r\n"
                 "hk-central,中环分行,hong-kong,22.2819,114.1582, 810000 ;;810000,陈经理\r\n"
                 "\r\n"
                 "sh-pudong,浦东支行,shanghai,31.2397,121.4998,,\r\n")
    assert load_branches(path) == [
        Branch(id="hk-central", name="中环分行", name_en="", region="hong-kong",
               latitude=22.2819, longitude=114.1582, geocodes=("810000",)),
        Branch(id="sh-pudong", name="浦东支行", name_en="", region="shanghai",
               latitude=31.2397, longitude=121.4998, geocodes=()),
    ]


def test_label_falls_back_to_the_chinese_name() -> None:
    named = Branch("a", "中环分行", "Central Branch", "hong-kong", 22.28, 114.16, ())
    unnamed = Branch("b", "浦东支行", "", "shanghai", 31.24, 121.5, ())
    assert [named.label("zh-CN"), named.label("en")] == ["中环分行", "Central Branch"]
    assert [unnamed.label("zh-CN"), unnamed.label("en")] == ["浦东支行", "浦东支行"]


def test_missing_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.csv") == [(None, None, "no such file")]


def test_missing_columns_are_all_named_on_the_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\n\nID,Name,lat,lon,name\n")
    # The first non-blank line is the header: here line 3. Names are matched in any case.
    assert problems_of(path) == [
        (3, "name", "column appears twice"),
        (3, "region", "required column missing"),
        (3, "latitude", "required column missing"),
        (3, "longitude", "required column missing"),
    ]
    path = write(tmp_path, "id,name,region,latitude\n")
    assert problems_of(path) == [(1, "longitude", "required column missing")]


def test_every_bad_row_is_reported_with_its_physical_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER
                 + "a,甲,Alpha,r,22.1,114.1,\n"                        # line 2: good
                 + 'b,"乙\n(second line of a quoted name)",,r,22.2,114.2,\n'  # lines 3-4: good
                 + "a,丙,,r,22.3,114.3,\n"                              # line 5: duplicate id
                 + "c,丁,,r,north,114.4,\n"                             # line 6: not a number
                 + "d,戊,,r,91,-180.5,\n"                               # line 7: both out of range
                 + ",,,,,,\n"                                          # blank cells: skipped
                 + " ,己,, ,22.5,,\n"                           # line 9: empty id, region, lon
                 + "e,庚,,r,nan,inf,\n"                                 # line 10: not finite
                 + "f,辛,,r,22.6\n")                                    # line 11: short row
    assert problems_of(path) == [
        (5, "id", "duplicate id 'a' (first on line 2)"),
        (6, "latitude", "latitude 'north' is not a number"),
        (7, "latitude", "latitude 91 is out of range (-90 to 90)"),
        (7, "longitude", "longitude -180.5 is out of range (-180 to 180)"),
        (9, "id", "empty id"),
        (9, "region", "empty region"),
        (9, "longitude", "empty longitude"),
        (10, "latitude", "latitude nan is out of range (-90 to 90)"),
        (10, "longitude", "longitude inf is out of range (-180 to 180)"),
        (11, None, "expected 7 cells, found 5 (quote cells that contain commas)"),
    ]


def test_the_error_message_names_the_first_problem(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "a,,,r,22.1,114.1,\na,乙,,r,22.1,114.1,\n")
    with pytest.raises(BranchesInvalid) as caught:
        load_branches(path)
    assert caught.value.message == (f"branch list {path} is not usable: {path}:2: name: "
                                    "empty name (and 1 more)")
    assert caught.value.problems[1] == (Location(str(path), 3, "id"),
                                        "duplicate id 'a' (first on line 2)")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "a,甲,,r,22.1,114.1,\nb,福田支行,,r,22.2,114.2,\n",
                 encoding="gbk")
    [(line, field, message)] = problems_of(path)
    assert (line, field) == (2, None)
    assert message.startswith("not UTF-8")


@pytest.mark.parametrize("text", ["", "\n\n", HEADER])
def test_empty_lists_are_refused(tmp_path: Path, text: str) -> None:
    assert len(problems_of(write(tmp_path, text))) == 1


# ---------------------------------------------------------------- distances


def test_haversine_known_distances() -> None:
    # Beijing (Tiananmen) to Shanghai (People's Square): about 1,067 km great-circle.
    assert haversine_km(39.9042, 116.4074, 31.2304, 121.4737) == pytest.approx(1067, abs=3)
    # One degree of longitude on the equator: 2πR / 360.
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.195, abs=0.01)
    assert haversine_km(22.28, 114.16, 22.28, 114.16) == 0
    assert haversine_km(22.28, 114.16, 22.54, 114.06) == haversine_km(22.54, 114.06, 22.28,
                                                                      114.16)
    # Antipodes: half the circumference, no domain error from rounding.
    assert haversine_km(0, 0, 0, 180) == pytest.approx(20015.1, abs=0.5)


def test_nearby_open_sorts_by_distance_to_the_nearest_closed_branch() -> None:
    # On the equator 0.01° of longitude is 1.112 km.
    closed_a, closed_b = branch("closed-a", 0, 0), branch("closed-b", 0, 0.10)
    far = branch("far", 0, 0.40)          # 33.4 km from closed-b
    near_b = branch("near-b", 0, 0.12)    # 2.2 km from closed-b (11.1+ from closed-a)
    near_a = branch("near-a", 0, -0.01)   # 1.1 km from closed-a
    middle = branch("middle", 0, 0.05)    # 5.6 km from both: nearest wins, not the sum
    everything = [far, closed_a, near_b, middle, closed_b, near_a]
    found = nearby_open([closed_a, closed_b], everything, within_km=20, limit=10)
    assert [(b.id, d) for b, d in found] == [("near-a", 1.1), ("near-b", 2.2), ("middle", 5.6)]
    assert [b.id for b, _ in nearby_open([closed_a, closed_b], everything, within_km=40,
                                         limit=10)] == ["near-a", "near-b", "middle", "far"]
    assert [b.id for b, _ in nearby_open([closed_a, closed_b], everything, within_km=40,
                                         limit=2)] == ["near-a", "near-b"]
    assert nearby_open([closed_a], everything, within_km=20, limit=0) == []
    assert nearby_open([], everything, within_km=20, limit=3) == []
    # The distance limit is inclusive of a branch exactly at it (after no rounding).
    exact = haversine_km(0, 0, 0, -0.01)
    assert [b.id for b, _ in nearby_open([closed_a], [near_a], within_km=exact,
                                         limit=1)] == ["near-a"]


def test_nearby_open_with_the_shipped_list() -> None:
    branches = load_branches(ROOT / "examples" / "branches.csv")
    closed = scope_branches(branches, branch_ids=["gd-sz-futian", "gd-sz-nanshan"])
    found = nearby_open(closed, branches, within_km=20, limit=3)
    assert [b.id for b, _ in found] == ["gd-sz-baoan", "gd-sz-luohu"]
    assert [d for _, d in found] == sorted(d for _, d in found)
    assert all(0 < d <= 20 for _, d in found)


def test_scope_branches_by_region_and_id_in_list_order() -> None:
    branches = [branch("hk-1", 22.3, 114.2, "hong-kong"), branch("sz-1", 22.5, 114.0, "guangdong"),
                branch("hk-2", 22.3, 114.1, "hong-kong"), branch("sh-1", 31.2, 121.5, "shanghai")]
    assert [b.id for b in scope_branches(branches, regions=["Hong-Kong"])] == ["hk-1", "hk-2"]
    assert [b.id for b in scope_branches(branches, regions=["shanghai"],
                                         branch_ids=["hk-2", "sh-1"])] == ["hk-2", "sh-1"]
    assert scope_branches(branches) == []


def test_scope_branches_unknown_id_names_it_and_the_known_ones() -> None:
    branches = [branch(f"b{n:02d}", 0, 0) for n in range(20)]
    with pytest.raises(InvalidValue) as caught:
        scope_branches(branches, branch_ids=["b01", "b99"])
    assert caught.value.message == "unknown branch 'b99'"
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("known branches: b00, b01")
    assert "(20 in all)" in caught.value.hint
