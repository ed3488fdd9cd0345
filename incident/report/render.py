"""Report documents: JSON (every figure), Markdown (for the wiki) and self-contained HTML
(printable, inline CSS and SVG, no script, no external asset), in zh-CN or en.

The Markdown and HTML are rendered from the JSON-ready report dict by the shipped Jinja
templates in `templates/_report/` (`*.j2`, so the notice-template checks leave them alone), in
a sandboxed environment with StrictUndefined; the HTML environment autoescapes everything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from incident.errors import InvalidValue, TemplateInvalid
from incident.report.labels import REPORT_LANGUAGES, labels
from incident.report.svg import timeline_svg
from incident.timeutil import format_duration, local_text, parse_iso

Format = Literal["md", "html", "json"]
FORMATS = ("md", "html", "json")
SUFFIX = {"md": "md", "html": "html"}


def check_choice(fmt: str, lang: str) -> None:
    """Refuse an unknown format or language (exit 2, naming the option)."""
    if fmt not in FORMATS:
        raise InvalidValue(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if lang not in REPORT_LANGUAGES:
        raise InvalidValue(f"--lang {lang!r} is not one of {', '.join(REPORT_LANGUAGES)}")


def to_json(data: dict[str, Any]) -> str:
    """The report as JSON text."""
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def _md(value: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph: no raw HTML, no column breaks,
    no link or image (`[x](javascript:…)` in a title must stay text in the wiki)."""
    text = "" if value is None else str(value)
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("[", "\\[")
            .replace("]", "\\]").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", " ").replace("\n", "<br>"))


def _environment(dirs: Sequence[Path], *, html: bool, lang: str,
                 zone: ZoneInfo) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(d) for d in dirs]), undefined=StrictUndefined,
        autoescape=html, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    words = labels(lang)

    def when(value: str | None) -> str:
        return local_text(parse_iso(value), zone) if value else words["none"]

    def dur(value: int | None) -> str:
        return format_duration(timedelta(seconds=value)) if value is not None else words["none"]

    def tx(value: dict[str, str] | None) -> str:
        return value.get(lang) or value.get("en", "") if value else words["none"]

    def pct(value: float | None) -> str:
        return f"{value * 100:.1f}%" if value is not None else words["none"]

    def checkval(check: dict[str, Any], field: str = "value") -> str:
        value = check[field]
        if value is None:
            return words["none"]
        return dur(value) if check["unit"] == "seconds" else str(value)

    def passed(value: bool | None) -> str:
        return words["passed"]["none" if value is None else str(bool(value)).lower()]

    env.filters.update(when=when, dur=dur, tx=tx, pct=pct, checkval=checkval, passed=passed,
                       md=_md)
    env.globals.update(t=words, lang=lang)
    return env


def render(data: dict[str, Any], fmt: Format, *, lang: str, zone: ZoneInfo,
           template_dirs: Sequence[Path], kind: str = "report") -> str:
    """One report (`kind` report) or period summary (`kind` summary) as text in `fmt`."""
    check_choice(fmt, lang)
    if fmt == "json":
        return to_json(data)
    html = fmt == "html"
    env = _environment(template_dirs, html=html, lang=lang, zone=zone)
    name = f"{kind}.{SUFFIX[fmt]}.j2"
    context: dict[str, Any] = {"r": data}
    if kind == "report" and html:
        # Built with every text escaped (svg.py); marked safe so autoescape keeps it as markup.
        context["timeline"] = Markup(timeline_svg(data, labels(lang), zone))
    try:
        return env.get_template(name).render(context)
    except TemplateError as exc:
        where = getattr(exc, "filename", None) or name
        line = getattr(exc, "lineno", None)
        raise TemplateInvalid(f"report template {where}"
                              + (f":{line}" if line else "") + f": {exc}") from exc
