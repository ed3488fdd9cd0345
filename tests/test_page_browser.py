"""The status page in headless Chromium: the index and an incident page in each language at
1280 and 360 px wide, no console error, nothing loaded from anywhere (strict CSP, no script),
nothing wider than a 320 px screen, screenshots written; the ETA and the hotline are on the
page; the colours are readable."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
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


# What overflows the viewport: the page's width against the window's, and the elements whose
# right edge lies beyond it or whose content is wider than them (innermost first), to name
# the culprit in a failure.
OVERFLOW = """JSON.stringify({
  scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
  wide: [...document.body.querySelectorAll('*')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5
                 || e.scrollWidth > e.clientWidth + 1)
    .reverse().slice(0, 5)
    .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '') + ': '
              + (e.textContent || '').trim().slice(0, 60))})"""


def overflow_at(binary: str, page: Path, workdir: Path, width: int = 320) -> dict[str, Any]:
    """Open `page` in headless Chromium, `width` CSS px wide (a desktop viewport, so that the
    browser does not zoom out to fit a wide page as a phone would), and measure it through the
    DevTools protocol: the page has no script and its CSP allows none, so the check runs from
    outside."""
    profile = workdir / "profile"
    browser = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0",
         f"--window-size={width},900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = _devtools_port(profile / "DevToolsActivePort", browser)
        return asyncio.run(_measure(port, page.resolve().as_uri(), width))
    finally:
        browser.terminate()
        try:
            browser.wait(60)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()


def _devtools_port(announced: Path, browser: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert browser.poll() is None, f"chromium exited with {browser.returncode}"
        text = announced.read_text() if announced.exists() else ""
        if text.strip():
            return int(text.split()[0])
        time.sleep(0.1)
    raise AssertionError("chromium did not open its DevTools port within 120 s")


async def _measure(port: int, url: str, width: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as listed:
            target = next(t for t in await listed.json() if t["type"] == "page")
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            sent: list[int] = []
            seen: set[str] = set()

            async def call(method: str, **params: Any) -> dict[str, Any]:
                sent.append(len(sent) + 1)
                await ws.send_json({"id": sent[-1], "method": method, "params": params})
                while True:
                    data = json.loads((await ws.receive(timeout=120)).data)
                    if data.get("id") == sent[-1]:
                        assert "error" not in data, (method, data)
                        return dict(data["result"])
                    seen.add(str(data.get("method")))

            await call("Emulation.setDeviceMetricsOverride", width=width, height=900,
                       deviceScaleFactor=1, mobile=False)
            await call("Page.enable")
            await call("Page.navigate", url=url)
            while "Page.loadEventFired" not in seen:
                seen.add(str(json.loads((await ws.receive(timeout=120)).data).get("method")))
            found = await call("Runtime.evaluate", expression=OVERFLOW, returnByValue=True)
            return dict(json.loads(found["result"]["value"]))


LONG_URL = ("https://www.example-bank.com.cn/announcements/2026/09/14/"
            "typhoon-haikui-branch-closures-and-manual-service-arrangements?lang=all")


@pytest.mark.parametrize("lang", ["zh-CN", "zh-HK", "en"])
def test_pages_fit_a_320_px_screen(sqlite_ws: Workspace, chromium: str, tmp_path: Path,
                                   lang: str) -> None:
    """No horizontal scrolling at 320 px (WCAG 1.4.10 reflow), with what is hardest to wrap:
    a long unbroken address in a notice, long titles, the hotline table, closed branches."""
    ws = sqlite_ws
    site = setup_site(ws)
    ws.freeze("2026-09-14T06:00:00Z")
    iid = ws.json("start", "typhoon", "--title",
                  "Typhoon Haikui: Signal 8 — counters, ATMs and cash services suspended",
                  "--title-zh", "台风“海葵”八号风球：柜台、自动柜员机及现金服务暂停",
                  "--branch", "gd-sz-futian", "--eta", "2026-09-14T12:00:00Z")["id"]
    ws.run("update", iid, "-m", f"Where to get help: {LONG_URL}",
           "--message-zh", f"求助方式：{LONG_URL}", "--status", "identified")
    for page in (site / lang / "index.html", site / lang / "incidents" / f"{iid}.html"):
        assert LONG_URL in page.read_text("utf-8")
        fit = overflow_at(chromium, page, tmp_path / f"{lang}-{page.stem}")
        assert fit["inner"] == 320
        assert fit["scroll"] <= fit["inner"], (page.name, fit)


def test_the_320_px_check_sees_a_wide_page(chromium: str, tmp_path: Path) -> None:
    """The measure itself: a page with an unbreakable line wider than the screen overflows."""
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html lang="en"><meta name="viewport" '
                    'content="width=device-width, initial-scale=1"><table><tr><td>'
                    + "x" * 200 + "</td></tr></table></html>", "utf-8")
    fit = overflow_at(chromium, page, tmp_path / "wide")
    assert fit["inner"] == 320 and fit["scroll"] > 320
    assert any(w.startswith("td") for w in fit["wide"]), fit
