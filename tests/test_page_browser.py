"""The status page in headless Chromium: the index and an incident page in each language at
1280 and 360 px wide, no console error, nothing loaded from anywhere (strict CSP, no script),
screenshots written; the ETA and the hotline are on the page; the colours are readable."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_page import HK_HOTLINE, MAINLAND, setup_site
from test_report_html import _need_chinese_font, chromium, open_in_chromium, png_size

from cli_fixtures import Workspace

__all__ = ["chromium"]  # the fixture, imported for the tests below

ROOT = Path(__file__).resolve().parent.parent
SIZES = [(1280, 1400), (360, 1400)]
ETA = {"en": "2026-09-14 16:00 China Standard Time", "zh-CN": "北京时间2026-09-14 16:00",
       "zh-HK": "香港時間2026-09-14 16:00"}


class Loads(HTMLParser):
    """Anything that could load or run something: elements, handlers, non-relative links."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.lang: str | None = None
        self.csp = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "html":
            self.lang = values.get("lang")
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.csp = values.get("content") or ""
        if tag in {"script", "link", "iframe", "object", "embed", "img", "audio", "video",
                   "source", "base", "form"}:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in {"src", "srcset", "data", "action", "poster"}:
                self.found.append(f"{tag} {name}")
            if name == "href" and re.match(r"^([a-z]+:|//)", value or ""):
                self.found.append(f"{tag} href={value}")


@pytest.mark.parametrize("lang", ["zh-CN", "zh-HK", "en"])
def test_pages_in_chromium_at_desktop_and_phone_width(
        sqlite_ws: Workspace, chromium: str, tmp_path: Path, lang: str) -> None:
    if lang != "en":
        _need_chinese_font()
    ws = sqlite_ws
    site = setup_site(ws)
    ws.freeze("2026-09-14T06:00:00Z")
    iid = ws.json("start", "core-banking-outage", "--title", "Transfers down",
                  "--title-zh", "转账暂停", "--eta", "2026-09-14T08:00:00Z")["id"]
    ws.run("update", iid, "-m", "Failover in progress", "--status", "identified")
    for page in (site / lang / "index.html", site / lang / "incidents" / f"{iid}.html"):
        html = page.read_text("utf-8")
        parser = Loads()
        parser.feed(html)
        assert parser.found == [] and "url(" not in html and "@import" not in html
        assert parser.lang == lang
        assert "default-src 'none'" in parser.csp and "unsafe-inline" not in parser.csp
        assert "<h1>" in html and html.count("<h1>") == 1
        for width, height in SIZES:
            shot = open_in_chromium(chromium, page, tmp_path / f"{lang}-{page.stem}-{width}",
                                    window=(width, height))
            assert shot.console == []  # no error, no CSP violation, nothing blocked
            assert png_size(shot.screenshot) == (width, height)
            assert ETA[lang] in shot.dom and MAINLAND in shot.dom
        # Each other language is one link away, on the same incident.
        for other in {"zh-CN", "zh-HK", "en"} - {lang}:
            assert f'hreflang="{other}"' in html
    detail = (site / lang / "incidents" / f"{iid}.html").read_text("utf-8")
    assert HK_HOTLINE in detail  # the Hong Kong customers' own hotline


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(one: str, two: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    high, low = sorted((_luminance(one), _luminance(two)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_text_colours_meet_wcag_aa_contrast() -> None:
    css = (ROOT / "templates" / "page" / "page.css").read_text("utf-8")
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", css)
    checked = 0
    for selector, body in rules:
        colour = re.search(r"(?<![-\w])color:(#[0-9a-fA-F]{6})", body)
        if not colour:
            continue
        background = re.search(r"background:(#[0-9a-fA-F]{6})", body)
        ratio = contrast(colour.group(1), background.group(1) if background else "#ffffff")
        assert ratio >= 4.5, (selector.strip(), ratio)
        checked += 1
    assert checked >= 5
    assert contrast("#767676", "#ffffff") >= 4.5 > contrast("#999999", "#ffffff")
