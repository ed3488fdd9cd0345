"""The HTML report opens in headless Chromium (Debian's `chromium`) with no console error and
no resource load, and a screenshot of it is produced; the page is self-contained."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report import REJECTED, Clock, Recorder, _build_incident, _setup

from cli_fixtures import Workspace
from counting_smtp import _LocalController

WINDOW = (1280, 2400)


@pytest.fixture
def chromium() -> str:
    """The Chromium binary (scripts/install-test-deps.sh installs it); missing fails the test,
    as a test server that cannot start does."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium not found: run scripts/install-test-deps.sh (Debian package "
                    "chromium)")
    return found


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int]]:
    handler = Recorder({REJECTED})
    controller = _LocalController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


@dataclass
class Page:
    """What Chromium did with one page."""

    screenshot: Path
    console: list[str]  # console messages (errors, CSP violations) about the page
    dom: str


def open_in_chromium(binary: str, page: Path, workdir: Path,
                     window: tuple[int, int] = WINDOW) -> Page:
    """Load `page` in headless Chromium twice (screenshot at `window` size, then the DOM after
    load), with background networking off, and collect every console message it logged."""
    workdir.mkdir(parents=True, exist_ok=True)
    shot = workdir / f"{page.stem}.png"
    common = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--no-first-run", "--no-default-browser-check", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-default-apps", "--disable-domain-reliability",
              "--metrics-recording-only", f"--user-data-dir={workdir / 'profile'}",
              "--enable-logging=stderr", "--v=0"]
    url = page.resolve().as_uri()
    taken = subprocess.run([*common, f"--screenshot={shot}",
                            f"--window-size={window[0]},{window[1]}", url],
                           capture_output=True, text=True, timeout=120, check=False)
    dumped = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                            timeout=120, check=False)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    console = [line for out in (taken.stderr, dumped.stderr) for line in out.splitlines()
               if ":CONSOLE" in line or "Failed to load resource" in line]
    return Page(shot, console, dumped.stdout)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


class Resources(HTMLParser):
    """Every element and attribute that could load something from outside the page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "link", "iframe", "object", "embed", "img", "audio", "video",
                   "source", "base"}:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name in {"src", "href", "xlink:href", "srcset", "data", "action", "poster"}:
                self.found.append(f"{tag} {name}={value}")
            if name.startswith("on"):
                self.found.append(f"{tag} {name}")


def _need_chinese_font() -> None:
    """A zh-CN screenshot without a Chinese font shows boxes: that fails the test."""
    listed = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True,
                            check=False) if shutil.which("fc-list") else None
    if listed is None or not listed.stdout.strip():
        pytest.fail("no Chinese font: run scripts/install-test-deps.sh (fonts-wqy-microhei)")


def _report_html(ws: Workspace, iid: str, lang: str) -> Path:
    path = ws.root / f"report-{lang}.html"
    ws.run("report", iid, "--format", "html", "--lang", lang, "-o", str(path))
    return path


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_html_report_opens_in_chromium_without_errors(
        sqlite_ws: Workspace, smtp: tuple[Recorder, int], chromium: str, tmp_path: Path,
        lang: str) -> None:
    if lang == "zh-CN":
        _need_chinese_font()
    ws = sqlite_ws
    _setup(ws, smtp[1])
    iid = _build_incident(ws, Clock(ws))
    path = _report_html(ws, iid, lang)
    html = path.read_text("utf-8")

    # Self-contained: nothing in the page can load anything; CSS only inline, no url().
    parser = Resources()
    parser.feed(html)
    assert parser.found == []
    assert "url(" not in html and "@import" not in html

    page = open_in_chromium(chromium, path, tmp_path / "chromium")
    assert page.console == []
    assert png_size(page.screenshot) == WINDOW
    # Not a blank page: the report's screenshot is far richer than an empty one's.
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    empty = open_in_chromium(chromium, blank, tmp_path / "chromium-blank")
    assert page.screenshot.stat().st_size > 10 * empty.screenshot.stat().st_size
    # What the browser built: the timeline, the verdicts, every section.
    dom = page.dom
    assert dom.count('<svg xmlns="http://www.w3.org/2000/svg" class="timeline"') == 1
    assert dom.count("<circle") >= 5 + 4  # five customer notices, parties notified and acked
    assert dom.count("<polygon") == 3  # three ETA versions
    for principle in ("fast_response", "minimal_impact", "coordination", "transparency"):
        assert f'id="verdict-{principle}"' in dom
    words = {"en": ["Post-incident report", "partly met", "missed", "Timeline"],
             "zh-CN": ["事件总结报告", "部分达标", "未达标", "时间线"]}[lang]
    for word in words:
        assert word in dom
    assert "t***@example.org" in dom and REJECTED not in dom


def test_the_browser_check_catches_errors_and_resource_loads(
        chromium: str, tmp_path: Path) -> None:
    """The checks above can fail: a page with a script error and a blocked image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv="
        "'Content-Security-Policy' content=\"default-src 'none'; script-src 'unsafe-inline'\">"
        "</head><body><img src='missing.png'><script>console.error('boom'); nope();</script>"
        "</body></html>", encoding="utf-8")
    page = open_in_chromium(chromium, bad, tmp_path / "chromium")
    text = "\n".join(page.console)
    assert "boom" in text and "nope is not defined" in text and "missing.png" in text
    parser = Resources()
    parser.feed(bad.read_text("utf-8"))
    assert "<img>" in parser.found and "<script>" in parser.found
