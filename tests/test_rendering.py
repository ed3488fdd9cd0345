"""Notice templates in the sandbox: rendering, located errors, escaping, SMS segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from incident.errors import Location, TemplateInvalid
from incident.rendering import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    RenderedEmail,
    Renderer,
    SmsInfo,
    compiled_templates,
    sms_segments,
    template_names,
)

CONTEXT = {
    "customer": {"name": "张伟"},
    "incident": {"title": "手机银行无法登录", "eta": "14:30"},
    "hotline": "95588",
}


def put(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def email_set(subject: str = "【通知】{{ incident.title }}",
              text: str = "尊敬的{{ customer.name }}：\n预计恢复时间 {{ incident.eta }}。\n",
              html: str = "<p>尊敬的{{ customer.name }}：</p>\n",
              lang: str = "zh-CN", phase: str = "initial") -> dict[str, str]:
    return {
        f"bank/{phase}/email.subject.{lang}.txt": subject,
        f"bank/{phase}/email.text.{lang}.txt": text,
        f"bank/{phase}/email.html.{lang}.html": html,
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "templates"


def test_render_email(root: Path) -> None:
    renderer = Renderer([put(root, email_set())])
    assert renderer.render_email("bank", "initial", "zh-CN", CONTEXT) == RenderedEmail(
        subject="【通知】手机银行无法登录",
        text="尊敬的张伟：\n预计恢复时间 14:30。",
        html="<p>尊敬的张伟：</p>",
    )


def test_trim_blocks_and_lstrip_blocks(root: Path) -> None:
    text = "A\n  {% if hotline %}\nCall {{ hotline }}\n  {% endif %}\nB\n"
    renderer = Renderer([put(root, email_set(text=text))])
    assert renderer.render_email("bank", "initial", "zh-CN", CONTEXT).text == "A\nCall 95588\nB"


@pytest.mark.parametrize(("subject", "expected"), [
    ("Line one\nline two\n", "Line one line two"),
    ("  spaced \t out \r\n  {{ incident.title }}  ", "spaced out 手机银行无法登录"),
    ("{% if true %}\nOutage\n{% endif %}\n", "Outage"),
])
def test_subject_is_one_line(root: Path, subject: str, expected: str) -> None:
    renderer = Renderer([put(root, email_set(subject=subject))])
    assert renderer.render_email("bank", "initial", "zh-CN", CONTEXT).subject == expected


def test_subject_with_newline_in_a_value_is_still_one_line(root: Path) -> None:
    renderer = Renderer([put(root, email_set())])
    context = {**CONTEXT, "incident": {"title": "a\r\nBcc: x@example.com", "eta": "1"}}
    assert renderer.render_email("bank", "initial", "zh-CN", context).subject == \
        "【通知】a Bcc: x@example.com"


def test_empty_subject_is_invalid(root: Path) -> None:
    renderer = Renderer([put(root, email_set(subject="{% if false %}x{% endif %}\n"))])
    with pytest.raises(TemplateInvalid, match="empty subject"):
        renderer.render_email("bank", "initial", "zh-CN", CONTEXT)


def test_render_sms_tidies_whitespace(root: Path) -> None:
    put(root, {"bank/update/sms.en.txt":
               "\n  Dear {{ customer.name }},   \n\n\n\nETA {{ incident.eta }}.\r\n\n\n"
               "Hotline {{ hotline }}\n\n"})
    sms = Renderer([root]).render_sms("bank", "update", "en", CONTEXT)
    assert sms.text == "Dear 张伟,\n\nETA 14:30.\n\nHotline 95588"
    assert sms.info == SmsInfo("UCS-2", len(sms.text), 1)


def test_render_sms_counts_gsm(root: Path) -> None:
    put(root, {"bank/resolved/sms.en.txt": "{{ 'x' * 161 }}"})
    sms = Renderer([root]).render_sms("bank", "resolved", "en", {})
    assert sms.info == SmsInfo("GSM-7", 161, 2)


def test_first_directory_in_search_path_wins(tmp_path: Path) -> None:
    local = put(tmp_path / "local", {"bank/initial/sms.en.txt": "local {{ hotline }}"})
    shipped = put(tmp_path / "shipped", {"bank/initial/sms.en.txt": "shipped",
                                         "bank/update/sms.en.txt": "shipped update"})
    renderer = Renderer([local, shipped])
    assert renderer.render_sms("bank", "initial", "en", CONTEXT).text == "local 95588"
    assert renderer.render_sms("bank", "update", "en", CONTEXT).text == "shipped update"


def test_undefined_variable_names_variable_and_line(root: Path) -> None:
    put(root, {"bank/initial/sms.en.txt": "Dear {{ customer.name }},\n\nETA {{ eta }}\n"})
    with pytest.raises(TemplateInvalid) as info:
        Renderer([root]).render_sms("bank", "initial", "en", CONTEXT)
    ((location, message),) = info.value.problems
    assert location == Location(file=str(root / "bank/initial/sms.en.txt"), line=3,
                                field="eta")
    assert "'eta' is undefined" in message


def test_undefined_attribute_names_attribute_and_line(root: Path) -> None:
    put(root, {"bank/initial/sms.en.txt":
               "{% for i in [1] %}\n{{ i }}\n{% endfor %}\n{{ incident.next_update }}\n"})
    with pytest.raises(TemplateInvalid) as info:
        Renderer([root]).render_sms("bank", "initial", "en", CONTEXT)
    ((location, _),) = info.value.problems
    assert (location.line, location.field) == (4, "next_update")


def test_undefined_in_an_include_points_at_the_included_file(root: Path) -> None:
    put(root, {"bank/initial/sms.en.txt": "Hello\n{% include 'bank/footer.txt' %}\n",
               "bank/footer.txt": "Call us\nat {{ hotline_missing }}\n"})
    with pytest.raises(TemplateInvalid) as info:
        Renderer([root]).render_sms("bank", "initial", "en", CONTEXT)
    ((location, _),) = info.value.problems
    assert location == Location(file=str(root / "bank/footer.txt"), line=2,
                                field="hotline_missing")


@pytest.mark.parametrize(("source", "line"), [
    ("ok\n{% if %}\n", 2),
    ("one\ntwo\nthree {{ customer.name \n", 3),
    ("{% for x in y %}\nno end\n", 2),
    ("a\n{{ x | no_such_filter }}\n", 2),
])
def test_syntax_error_names_the_line(root: Path, source: str, line: int) -> None:
    put(root, {"bank/initial/sms.zh-CN.txt": source})
    with pytest.raises(TemplateInvalid) as info:
        Renderer([root]).render_sms("bank", "initial", "zh-CN", CONTEXT)
    ((location, message),) = info.value.problems
    assert location == Location(file=str(root / "bank/initial/sms.zh-CN.txt"), line=line)
    assert message.startswith("syntax error:")


def test_missing_template_names_the_file(root: Path) -> None:
    put(root, {"bank/initial/sms.en.txt": "x"})
    with pytest.raises(TemplateInvalid) as info:
        Renderer([root]).render_sms("bank", "resolved", "en", CONTEXT)
    assert "bank/resolved/sms.en.txt" in info.value.message
    ((location, message),) = info.value.problems
    assert location == Location(file="bank/resolved/sms.en.txt")
    assert str(root) in message


def test_missing_include_names_includer_and_included(root: Path) -> None:
    put(root, {"bank/initial/sms.en.txt": "x\n\n{% include 'bank/gone.txt' %}\n"})
    with pytest.raises(TemplateInvalid) as info:
        Renderer([root]).render_sms("bank", "initial", "en", CONTEXT)
    ((location, message),) = info.value.problems
    assert location == Location(file=str(root / "bank/initial/sms.en.txt"), line=3)
    assert "bank/gone.txt" in message


def test_email_reports_every_broken_part(root: Path) -> None:
    files = email_set(subject="{{ nope }}")
    del files["bank/initial/email.html.zh-CN.html"]
    renderer = Renderer([put(root, files)])
    with pytest.raises(TemplateInvalid) as info:
        renderer.render_email("bank", "initial", "zh-CN", CONTEXT)
    assert [(loc.file, loc.field) for loc, _ in info.value.problems] == [
        (str(root / "bank/initial/email.subject.zh-CN.txt"), "nope"),
        ("bank/initial/email.html.zh-CN.html", None),
    ]


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ customer.__class__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% set x = [] %}{{ x.append(1) }}",
    "{{ customer.update({'name': 'x'}) }}",
])
def test_sandbox_blocks_unsafe_access(root: Path, source: str) -> None:
    put(root, {"bank/initial/sms.en.txt": "Hi\n" + source})
    with pytest.raises(TemplateInvalid) as info:
        Renderer([root]).render_sms("bank", "initial", "en", CONTEXT)
    ((location, message),) = info.value.problems
    assert location.file == str(root / "bank/initial/sms.en.txt")
    assert location.line == 2
    assert "not allowed in a template" in message
    assert CONTEXT["customer"] == {"name": "张伟"}


def test_html_escapes_customer_values_text_does_not(root: Path) -> None:
    renderer = Renderer([put(root, email_set(
        text="Dear {{ customer.name }}", html="<p>Dear {{ customer.name }}</p>"))])
    context = {**CONTEXT, "customer": {"name": "<script>alert(1)</script> & Co"}}
    email = renderer.render_email("bank", "initial", "zh-CN", context)
    assert email.html == "<p>Dear &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</p>"
    assert email.text == "Dear <script>alert(1)</script> & Co"
    assert email.subject == "【通知】手机银行无法登录"


@pytest.mark.parametrize("name", ["{{ 7*7 }}", "{% raw %}{{ 7*7 }}", "{{ ''.__class__ }}"])
def test_template_syntax_in_a_value_stays_literal(root: Path, name: str) -> None:
    put(root, {"bank/initial/sms.en.txt": "Dear {{ customer.name }}"})
    put(root, email_set(subject="To {{ customer.name }}", text="{{ customer.name }}",
                        html="{{ customer.name }}", lang="en"))
    renderer = Renderer([root])
    context = {**CONTEXT, "customer": {"name": name}}
    assert renderer.render_sms("bank", "initial", "en", context).text == f"Dear {name}"
    email = renderer.render_email("bank", "initial", "en", context)
    assert (email.subject, email.text) == (f"To {name}", name)
    assert email.html == str(escape(name))


@pytest.mark.parametrize(("channel", "expected"), [
    ("email", {"subject": "bank/eta_changed/email.subject.en.txt",
               "text": "bank/eta_changed/email.text.en.txt",
               "html": "bank/eta_changed/email.html.en.html"}),
    ("sms", {"text": "bank/eta_changed/sms.en.txt"}),
])
def test_template_names(channel: str, expected: dict[str, str]) -> None:
    assert template_names("bank", "eta_changed", channel, "en") == expected


@pytest.mark.parametrize(("phase", "channel", "lang", "fragment"), [
    ("started", "sms", "en", "unknown phase"),
    ("initial", "fax", "en", "no templates for channel"),
    ("initial", "sms", "zh", "unknown language"),
])
def test_template_names_rejects_unknown(phase: str, channel: str, lang: str,
                                        fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        template_names("bank", phase, channel, lang)


def test_render_with_unknown_phase_is_template_invalid(root: Path) -> None:
    with pytest.raises(TemplateInvalid, match="unknown phase"):
        Renderer([root]).render_sms("bank", "later", "en", CONTEXT)


def test_check_good_set_has_no_problems(root: Path) -> None:
    for phase in ("initial", "resolved"):
        for lang in ("zh-CN", "en"):
            put(root, email_set(lang=lang, phase=phase))
            put(root, {f"bank/{phase}/sms.{lang}.txt": "{{ customer.name }} {{ hotline }}"})
    problems = Renderer([root]).check("bank", ["initial", "resolved"], ["email", "sms"],
                                      ["zh-CN", "en"], CONTEXT)
    assert problems == []


def test_check_collects_all_problems_once(root: Path) -> None:
    put(root, email_set(text="{% include 'bank/footer.txt' %}"))
    put(root, email_set(text="{% include 'bank/footer.txt' %}", phase="update"))
    put(root, {"bank/footer.txt": "{{ missing }}",
               "bank/initial/sms.zh-CN.txt": "{% if %}"})
    problems = Renderer([root]).check("bank", ["initial", "update"], ["email", "sms"],
                                      ["zh-CN"], CONTEXT)
    assert [(loc.file, loc.line, loc.field) for loc, _ in problems] == [
        # the shared footer fails for both phases but is reported once
        (str(root / "bank/footer.txt"), 1, "missing"),
        (str(root / "bank/initial/sms.zh-CN.txt"), 1, None),
        ("bank/update/sms.zh-CN.txt", None, None),
    ]


def test_gsm7_tables() -> None:
    # 128 codes minus ESC; the extension characters are not in the basic set.
    assert len(GSM7_BASIC) == 127
    assert not GSM7_BASIC & GSM7_EXTENSION
    for ch in "£¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà @$\r\n":
        assert ch in GSM7_BASIC, ch
    for ch in "ç`€^{}\\[~]|\f\t":
        assert ch not in GSM7_BASIC, ch


@pytest.mark.parametrize(("text", "expected"), [
    ("", SmsInfo("GSM-7", 0, 0)),
    ("a", SmsInfo("GSM-7", 1, 1)),
    ("a" * 160, SmsInfo("GSM-7", 160, 1)),
    ("a" * 161, SmsInfo("GSM-7", 161, 2)),
    ("a" * 306, SmsInfo("GSM-7", 306, 2)),
    ("a" * 307, SmsInfo("GSM-7", 307, 3)),
    ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà",
     SmsInfo("GSM-7", 65, 1)),
    # extension characters take two septets each
    ("€", SmsInfo("GSM-7", 2, 1)),
    ("^{}\\[~]|€\f", SmsInfo("GSM-7", 20, 1)),
    ("a" * 158 + "€", SmsInfo("GSM-7", 160, 1)),
    ("a" * 159 + "€", SmsInfo("GSM-7", 161, 2)),
    ("[" * 80, SmsInfo("GSM-7", 160, 1)),
    ("[" * 81, SmsInfo("GSM-7", 162, 2)),
    # an ESC pair is never split across parts: 152 + (2) does not fit in 153
    ("a" * 152 + "€" + "a" * 152, SmsInfo("GSM-7", 306, 3)),
    ("a" * 151 + "€" + "a" * 153, SmsInfo("GSM-7", 306, 2)),
    # one character outside GSM-7 makes the whole message UCS-2
    ("中", SmsInfo("UCS-2", 1, 1)),
    ("a" * 159 + "中", SmsInfo("UCS-2", 160, 3)),
    ("ç", SmsInfo("UCS-2", 1, 1)),
    ("“quoted”", SmsInfo("UCS-2", 8, 1)),
    ("中" * 70, SmsInfo("UCS-2", 70, 1)),
    ("中" * 71, SmsInfo("UCS-2", 71, 2)),
    ("中" * 134, SmsInfo("UCS-2", 134, 2)),
    ("中" * 135, SmsInfo("UCS-2", 135, 3)),
    ("€中", SmsInfo("UCS-2", 2, 1)),
    # emoji outside the BMP are a surrogate pair: two UTF-16 units
    ("😀", SmsInfo("UCS-2", 2, 1)),
    ("😀" * 35, SmsInfo("UCS-2", 70, 1)),
    ("a" + "😀" * 35, SmsInfo("UCS-2", 71, 2)),
    # a surrogate pair is never split: 66 + (2) does not fit in 67
    ("中" * 66 + "😀" + "中" * 66, SmsInfo("UCS-2", 134, 3)),
])
def test_sms_segments(text: str, expected: SmsInfo) -> None:
    assert sms_segments(text) == expected


def test_template_names_accepts_str_enums() -> None:
    from enum import StrEnum

    class Phase(StrEnum):
        RESOLVED = "resolved"

    assert template_names("bank", Phase.RESOLVED, "sms", "zh-CN") == {
        "text": "bank/resolved/sms.zh-CN.txt"}


def test_compiled_templates_are_reused_by_a_later_renderer(root: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A later process (a new Renderer on the same cache) renders without compiling; a
    template whose source changed is compiled again."""
    put(root, email_set())
    cache = tmp_path / "compiled"
    cache.mkdir()
    first = Renderer([root], compiled_templates(cache)).render_email("bank", "initial", "zh-CN",
                                                                     CONTEXT)
    assert len(list(cache.iterdir())) == 3  # subject, text, HTML

    later = Renderer([root], compiled_templates(cache))
    compiled: list[str] = []
    real = later.env.compile

    def compile_counted(*args: Any, **kwargs: Any) -> Any:
        compiled.append(str(args[1:2] or kwargs.get("name")))
        return real(*args, **kwargs)

    monkeypatch.setattr(later.env, "compile", compile_counted)
    assert later.render_email("bank", "initial", "zh-CN", CONTEXT) == first
    assert compiled == []

    put(root, email_set(text="您好{{ customer.name }}。\n"))
    changed = Renderer([root], compiled_templates(cache))
    assert changed.render_email("bank", "initial", "zh-CN", CONTEXT).text == "您好张伟。"


def test_a_cache_that_cannot_be_used_is_only_a_miss(root: Path, tmp_path: Path) -> None:
    """A cache directory that is not one (nothing can be written) or holds broken files:
    the templates are compiled and rendered as without a cache."""
    put(root, email_set())
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    expected = Renderer([root]).render_email("bank", "initial", "zh-CN", CONTEXT)
    assert Renderer([root], compiled_templates(not_a_dir)).render_email(
        "bank", "initial", "zh-CN", CONTEXT) == expected
    cache = tmp_path / "compiled"
    cache.mkdir()
    Renderer([root], compiled_templates(cache)).render_email("bank", "initial", "zh-CN", CONTEXT)
    for file in cache.iterdir():
        file.write_bytes(file.read_bytes()[:40])  # truncated after jinja2's header
    assert Renderer([root], compiled_templates(cache)).render_email(
        "bank", "initial", "zh-CN", CONTEXT) == expected
