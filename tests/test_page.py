"""The public status page (incident/page, `incident page build`): what it shows of a full
incident, what it never shows (customers, internal updates, drills, manual cases), the
Statuspage-shaped API checked against a JSON Schema written from Statuspage's documented
responses, the feeds read by a real feed reader, deterministic builds and atomic writes."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import feedparser
import jsonschema
import pytest
from jinja2 import Environment

from cli_fixtures import Workspace
from incident.page import api
from incident.page.cache import BuildCache
from incident.page.model import public_incident
from incident.page.site import SiteBuilder, SiteInfo
from incident.page.writer import SiteWriter
from incident.response import Response
from incident.settings import load_runtime
from incident.store import Store

DATA = Path(__file__).resolve().parent / "data" / "statuspage"
ROOT = Path(__file__).resolve().parent.parent
MAINLAND, HK_HOTLINE = "400-000-0000", "+852 2888 8888"
# Customers whose every detail must stay off the site: hostile names (markup, right-to-left
# override, quotes, CJK), and their contacts.
CUSTOMERS = [
    ("C0001", '<script>alert("pwned")</script>', "script.kid@example.com", "+8613800138001",
     "zh-CN", "guangdong"),
    ("C0002", "\u202eevil\u202c ليلى", "rtl.reader@example.org", "+8613900139002", "en",
     "guangdong"),
    ("C0003", "O'Brien \"Bobby\" & Co", "obrien.quotes@example.net", "+85291234567", "zh-HK",
     "hong-kong"),
    ("C0004", "欧阳娜娜", "ouyang.nana@example.cn", "+8613700137004", "zh-CN", "guangdong"),
]
INTERNAL = "Root cause: operator dropped table TX_LEDGER (internal only)"
CASE_REQUEST = "Urgent withdrawal, call back on 13812345678"
DRILL_TITLE = "Quarterly drill DRL-7781"


def setup_site(ws: Workspace, **page: Any) -> Path:
    """Per-region hotlines and zones, hostile customers, status_page.dir = site."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg["organisation"]["hotline"] = {"default": MAINLAND, "hong-kong": HK_HOTLINE}
        cfg["regions"] = {"hong-kong": {"zone": "Asia/Hong_Kong"},
                          "default": {"zone": "Asia/Shanghai"}}
        cfg["status_page"] = {"dir": "site", **page}
    ws.configure(edit)
    ws.write_customers([f'{ref},"{name.replace(chr(34), chr(34) * 2)}",{mail},{phone},{lang},'
                        f"retail,{region},gd-sz-futian,,"
                        for ref, name, mail, phone, lang, region in CUSTOMERS])
    return ws.root / "site"


def full_incident(ws: Workspace) -> str:
    """A typhoon closing a branch, from start to close: public updates, an internal one, a
    new ETA, a manual case, recovery; and a drill beside it. Returns the incident id."""
    ws.freeze("2026-09-14T06:00:00Z")
    iid = ws.json("start", "typhoon", "--title", "Typhoon <b>Haikui</b> & \"Signal 8\"",
                  "--title-zh", "台风“海葵”<i>八号风球</i>", "--branch", "gd-sz-futian",
                  "--eta", "2026-09-14T12:00:00Z")["id"]
    ws.freeze("2026-09-14T06:30:00Z")
    ws.run("update", iid, "-m", "Branch staff are safe; counters stay closed",
           "--message-zh", "员工平安，柜台继续暂停", "--status", "identified")
    ws.freeze("2026-09-14T06:40:00Z")
    ws.run("update", iid, "-m", INTERNAL, "--internal")
    ws.freeze("2026-09-14T06:45:00Z")
    ws.run("manual", "log", iid, "--customer", "C0001", "--request", CASE_REQUEST)
    ws.freeze("2026-09-14T07:00:00Z")
    ws.run("eta", iid, "2026-09-14T14:00:00Z", "--reason", "Flooding near the branch")
    ws.freeze("2026-09-14T07:05:00Z")
    ws.run("start", "typhoon", "--title", DRILL_TITLE, "--drill", "--branch", "gd-sz-futian")
    ws.freeze("2026-09-14T13:30:00Z")
    ws.run("resolve", iid, "-m", "Branch reopened; all services normal")
    ws.freeze("2026-09-14T13:40:00Z")
    ws.run("manual", "reconcile", iid, "M001")
    ws.run("close", iid)
    return iid


def site_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_full_incident_on_the_site_without_customer_data(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    site = setup_site(ws)
    iid = full_incident(ws)  # every public notice rebuilt the site (status_page.dir)
    files = site_files(site)
    for lang in ("zh-CN", "zh-HK", "en"):
        assert f"{lang}/incidents/{iid}.html" in files
        assert f"{lang}/history.atom" in files and f"{lang}/history.rss" in files
    # The cache the builds leave next to the site holds only what the site shows too.
    # (templates/: the page templates compiled, binary)
    cached = sorted(p for p in (ws.root / ".site.cache").rglob("*") if p.is_file())
    assert any(p.name == f"{iid}.incident" for p in cached) and len(cached) >= 2
    assert any(p.parent.name == "templates" for p in cached)
    text = "\n".join([*(p.read_bytes().decode("utf-8", "replace") for p in cached),
                      *(data.decode("utf-8") for data in files.values())])
    # Nothing of a customer, of the internal update, the manual case or the drill.
    for ref, name, mail, phone, _lang, _region in CUSTOMERS:
        for secret in (name, mail, phone, phone[-8:], mail.split("@")[0], ref):
            assert secret not in text, secret
    for secret in ("<script>", "\u202e", "ليلى", "欧阳娜娜", "O'Brien", INTERNAL, "TX_LEDGER",
                   CASE_REQUEST, "13812345678", DRILL_TITLE, "DRL-7781", "customers.csv"):
        assert secret not in text, secret
    # The title is escaped in every page, never markup (the JSON carries it as text).
    page = files[f"en/incidents/{iid}.html"].decode()
    assert "Typhoon &lt;b&gt;Haikui&lt;/b&gt; &amp; &#34;Signal 8&#34;" in page
    html = "".join(data.decode() for path, data in files.items() if path.endswith(".html"))
    assert "<b>Haikui" not in html and "<i>八号风球" not in html and "八号风球" in html
    # What the page says: the notices in order, ETA history, hotlines, branches.
    for needle in ("Branch staff are safe", "Flooding near the branch",
                   "Branch reopened; all services normal", MAINLAND, HK_HOTLINE,
                   "Shenzhen Futian Branch", "Shenzhen Luohu Branch (7.6 km)",
                   "2026-09-14 20:00", "2026-09-14 22:00"):  # the two ETAs, Beijing time
        assert needle in page, needle
    assert page.index("Branch staff are safe") < page.index("Flooding near the branch") \
        < page.index("Branch reopened")
    zh = files[f"zh-CN/incidents/{iid}.html"].decode()
    assert '<html lang="zh-CN">' in zh and "员工平安，柜台继续暂停" in zh and "深圳福田支行" in zh
    hk = files[f"zh-HK/incidents/{iid}.html"].decode()
    assert '<html lang="zh-HK">' in hk and "香港時間" in hk and "深圳福田支行" in hk
    index = files["en/index.html"].decode()
    assert "All services are running normally" in index and f"incidents/{iid}.html" in index


def test_the_site_shows_the_eta_next_update_and_hotline_while_open(
        sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    site = setup_site(ws)
    ws.freeze("2026-09-14T06:00:00Z")
    iid = ws.json("start", "core-banking-outage", "--title", "Transfers down",
                  "--eta", "2026-09-14T08:00:00Z")["id"]
    index = (site / "en" / "index.html").read_text("utf-8")
    assert "Some services are disrupted" in index and "Transfers down" in index
    for page in (index, (site / "en" / "incidents" / f"{iid}.html").read_text("utf-8")):
        assert "2026-09-14 16:00 China Standard Time" in page  # the ETA
        assert "Next update by" in page and MAINLAND in page
    summary = json.loads((site / "api/v2/summary.json").read_text("utf-8"))
    assert summary["status"]["indicator"] in {"minor", "major", "critical"}
    [incident] = summary["incidents"]
    assert incident["eta"] == "2026-09-14T08:00:00.000Z"
    assert incident["manual_channel"]["hotlines"] == {"hong-kong": HK_HOTLINE}


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((DATA / "schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_api_has_statuspages_shape(sqlite_ws: Workspace) -> None:
    validator = _validator()
    # The schema fits Statuspage's documented response, and refuses what Statuspage would not
    # send (so validating ours means something).
    sample = json.loads((DATA / "summary.sample.json").read_text("utf-8"))
    validator.validate(sample)
    broken = json.loads(json.dumps(sample))
    broken["status"]["indicator"] = "red"
    del broken["incidents"][0]["incident_updates"][0]["body"]
    assert len(list(validator.iter_errors(broken))) == 2

    ws = sqlite_ws
    site = setup_site(ws)
    iid = full_incident(ws)
    for name in ("summary", "status", "incidents", "incidents/unresolved"):
        validator.validate(json.loads((site / f"api/v2/{name}.json").read_text("utf-8")))
    incidents = json.loads((site / "api/v2/incidents.json").read_text("utf-8"))["incidents"]
    [incident] = incidents  # the drill is not there
    assert incident["id"] == iid and incident["status"] == "resolved"
    assert incident["resolved_at"] == "2026-09-14T13:30:00.000Z"
    updates = incident["incident_updates"]  # newest first, as Statuspage
    assert [u["status"] for u in updates] == ["resolved", "identified", "identified",
                                              "investigating"]
    assert incident["eta"] is None and updates[1]["eta"] == "2026-09-14T14:00:00.000Z"
    summary = json.loads((site / "api/v2/summary.json").read_text("utf-8"))
    assert summary["status"] == {"indicator": "none", "description": "All Systems Operational"}
    assert summary["incidents"] == []
    assert json.loads((site / "api/v2/incidents/unresolved.json").read_text())["incidents"] == []


def test_feeds_parse_and_match_the_public_notices(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    site = setup_site(ws)
    iid = full_incident(ws)
    bodies = {"en": ["Branch reopened; all services normal", "Flooding near the branch",
                     "Branch staff are safe; counters stay closed"],
              "zh-CN": ["员工平安，柜台继续暂停"]}
    for lang in ("zh-CN", "zh-HK", "en"):
        for kind in ("atom", "rss"):
            feed = feedparser.parse((site / lang / f"history.{kind}").read_bytes())
            assert not feed.bozo, feed.bozo_exception
            assert feed.version == ("atom10" if kind == "atom" else "rss20")
            entries = feed.entries
            assert len(entries) == 4  # start, update, ETA, resolve: not the internal one
            assert all(iid in e.link for e in entries)
            assert [e.published_parsed[3:5] for e in entries] == [(13, 30), (7, 0), (6, 30),
                                                                   (6, 0)]
            summaries = [e.summary for e in entries]
            for body in bodies.get(lang, []):
                assert any(body in s for s in summaries), (lang, kind, body)
            assert not any(INTERNAL in s for s in summaries)
    assert (site / "history.atom").read_bytes() == (site / "zh-CN" / "history.atom").read_bytes()


def test_same_record_same_bytes_and_only_changes_are_written(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    site = setup_site(ws)
    full_incident(ws)
    first = site_files(site)
    other = ws.root / "again"
    ws.run("page", "build", str(other))
    assert site_files(other) == first
    before = {p: (site / p).stat().st_mtime_ns for p in first}
    built = ws.json("page", "build")
    assert built["written"] == [] and built["files"] == len(first)
    assert {p: (site / p).stat().st_mtime_ns for p in first} == before
    # The cache next to the site only saves work: broken or gone, the bytes are the same.
    # One incident's file broken (a cut-off header, then a cut-off view), or the index, or
    # the whole directory gone: the bytes are the same.
    cache = ws.root / ".site.cache"
    for name, damage in [("incident", "{not json"), ("incident", None), ("index.json",
                         "{not json"), ("", None)]:
        path = next(cache.glob("*.incident")) if name == "incident" else cache / name
        if name == "":
            shutil.rmtree(cache)
        elif damage is None:  # the view cut short, the header intact
            path.write_text(path.read_text("utf-8")[:-20], encoding="utf-8")
        else:
            path.write_text(damage, encoding="utf-8")
        (site / "en" / "index.html").write_bytes(b"stale")
        built = ws.json("page", "build")
        assert built["written"] == ["en/index.html"]
        assert site_files(site) == first


def _builder(ws: Workspace) -> tuple[SiteBuilder, list[Any]]:
    rt = load_runtime(str(ws.config), db=ws.db)
    store = Store.open(ws.db)
    views = [public_incident(store.events(row.id)) for row in store.incidents()]
    store.close()
    info = SiteInfo(name=rt.settings.organisation.name.texts(), page_id="p", url="",
                    time_zone="Asia/Shanghai", default_language="zh-CN")
    return SiteBuilder(rt.template_path, info), [v for v in views if v is not None]


def _open_incident(ws: Workspace, title: str) -> str:
    ws.freeze("2026-09-15T02:00:00Z")
    return str(ws.json("start", "typhoon", "--title", title, "--branch", "gd-sz-futian",
                       "--queue-only")["id"])


def test_spliced_api_documents_and_index_are_the_bytes_of_one_encoding(
        sqlite_ws: Workspace) -> None:
    """The API documents and index pages are spliced from each incident's encoded document
    and entry (kept between builds): byte for byte what encoding / rendering them whole
    gives."""
    ws = sqlite_ws
    setup_site(ws)
    full_incident(ws)  # resolved: in incidents.json and the index's past
    for n in range(3):  # open: in summary.json, unresolved.json and the index's current
        _open_incident(ws, f"Open <{n}> \"quoted\" & 中文 \u2028")
    builder, views = _builder(ws)
    files = builder.build(views)
    docs = {name: files[f"api/v2/{name}.json"]
            for name in ("summary", "status", "incidents", "incidents/unresolved")}
    for name, data in docs.items():
        whole = json.dumps(json.loads(data), ensure_ascii=False, sort_keys=True,
                           separators=(",", ":")).encode() + b"\n"
        assert data == whole, name
    ordered = sorted(views, key=lambda i: (i.created_at, i.id), reverse=True)
    summary = json.loads(docs["summary"])
    assert summary["incidents"] == [json.loads(api.encode(api.incident_doc(i, builder.info)))
                                    for i in ordered if not i.resolved]
    assert len(summary["incidents"]) == 3
    updated = max(i.updated_at for i in views)
    for lang, here, path in [("en", "../", "en/index.html"), ("zh-CN", "", "index.html")]:
        assert files[path] == builder._render_index(ordered, lang, here, updated, splice=False)
        assert b"\0" not in files[path] and files[path].count(b'<article class="incident') == 3
    # A NUL of the site's own is not taken for a marker.
    nul = SiteBuilder(builder.env.loader.searchpath,  # type: ignore[union-attr]
                      replace(builder.info, name={"en": "Bank\0 of <Test>"}))
    page = nul._render_index(ordered, "en", "../", updated)  # (feeds refuse such a name)
    assert page == nul._render_index(ordered, "en", "../", updated, splice=False)
    assert page.count(b'<article class="incident') == 3


def test_a_rebuild_in_a_new_process_compiles_nothing_and_matches_a_fresh_build(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild after a notice in a new process (`incident update`): templates come
    compiled from the cache, the changed incident is read from the record, and the site is
    byte for byte a build from scratch."""
    ws = sqlite_ws
    setup_site(ws)
    full_incident(ws)
    iids = [_open_incident(ws, f"Open {n}") for n in range(3)]
    rt = load_runtime(str(ws.config), db=ws.db)
    Response(rt).page.build(str(ws.root / "other"), publish=False)
    ws.freeze("2026-09-15T03:00:00Z")
    ws.run("update", iids[1], "-m", "One more notice", "--queue-only")

    (ws.root / f"other/zh-HK/incidents/{iids[0]}.html").unlink()  # gone: written again
    entries = ws.root / ".other.cache/entries"
    before = entries.stat()
    compiled: list[str] = []
    read: list[str] = []
    monkeypatch.setattr(Environment, "compile", lambda self, source, name=None, *a, **k:
                        compiled.append(str(name)) or ORIGINAL_COMPILE(self, source, name,
                                                                       *a, **k))
    monkeypatch.setattr(BuildCache, "_view_json", lambda self, iid: read.append(iid) or
                        ORIGINAL_VIEW(self, iid))
    built = Response(load_runtime(str(ws.config), db=ws.db)).page.build(
        str(ws.root / "other"), publish=False)
    assert compiled == []
    # The changed incident is read from the record; the others' views only for the feeds'
    # notices (here all of them: 100 notices a feed).
    assert iids[1] not in read and len(read) == len(set(read))
    assert f"en/incidents/{iids[1]}.html" in built.written
    assert f"zh-HK/incidents/{iids[0]}.html" in built.written
    assert b"One more notice" in (ws.root / "other/en/index.html").read_bytes()
    monkeypatch.undo()
    Response(load_runtime(str(ws.config), db=ws.db)).page.build(str(ws.root / "fresh"),
                                                                  publish=False)
    assert site_files(ws.root / "other") == site_files(ws.root / "fresh")
    # One incident's entries appended to the entries file, not all of them written again.
    after = entries.stat()
    assert after.st_ino == before.st_ino and 0 < after.st_size - before.st_size < before.st_size
    # Damaged, it only costs time.
    with open(entries, "r+b") as handle:
        handle.truncate(after.st_size - 10)
    (ws.root / "other/en/index.html").write_bytes(b"stale")
    Response(load_runtime(str(ws.config), db=ws.db)).page.build(str(ws.root / "other"),
                                                                  publish=False)
    assert site_files(ws.root / "other") == site_files(ws.root / "fresh")
    # Once mostly stale, written anew.
    for n in range(8):
        ws.freeze(f"2026-09-15T04:{n:02d}:00Z")
        ws.run("update", iids[n % 3], "-m", f"Notice {n}", "--queue-only")
        Response(load_runtime(str(ws.config), db=ws.db)).page.build(str(ws.root / "other"),
                                                                      publish=False)
        if entries.stat().st_ino != after.st_ino:
            break
    else:
        raise AssertionError("the entries file was never compacted")
    Response(load_runtime(str(ws.config), db=ws.db)).page.build(str(ws.root / "fresh"),
                                                                  publish=False)
    assert site_files(ws.root / "other") == site_files(ws.root / "fresh")


def test_a_template_change_reaches_every_entry_in_later_processes(sqlite_ws: Workspace) -> None:
    """Entries kept in the cache are those of the templates in use: after a template
    change, a new process's rebuild after a notice shows the new template for every
    incident, not the entries kept from before."""
    ws = sqlite_ws
    setup_site(ws)
    iids = [_open_incident(ws, f"Open {n}") for n in range(3)]

    def build() -> bytes:
        Response(load_runtime(str(ws.config), db=ws.db)).page.build(str(ws.root / "other"),
                                                                      publish=False)
        return (ws.root / "other/en/index.html").read_bytes()

    assert build().count(b"<!-- v2 -->") == 0
    current = ws.root / "templates/page/_current.html"
    current.write_text(current.read_text("utf-8") + "<!-- v2 -->", encoding="utf-8")
    assert build().count(b"<!-- v2 -->") == 3
    ws.freeze("2026-09-15T03:00:00Z")
    ws.run("update", iids[0], "-m", "One more notice", "--queue-only")
    assert build().count(b"<!-- v2 -->") == 3


ORIGINAL_COMPILE = Environment.compile
ORIGINAL_VIEW = BuildCache._view_json


def test_a_reader_never_sees_a_missing_or_partial_file(sqlite_ws: Workspace,
                                                       tmp_path: Path) -> None:
    """100 rebuilds alternate between two records (every page changes each time) while a
    reader reads every file in a loop: each read is whole, one build's or the other's."""
    ws = sqlite_ws
    setup_site(ws)
    full_incident(ws)
    builder, views = _builder(ws)
    builds = [builder.build(views), builder.build(views[:0])]
    builds[1] = {**builds[0], **builds[1]}  # same paths; index, feeds and API differ
    changed = [p for p in builds[0] if builds[0][p] != builds[1][p]]
    assert len(changed) >= 10
    root = tmp_path / "site"
    writer = SiteWriter(root)
    writer.write(builds[0])
    stop, seen, problems = threading.Event(), [0], []

    def read() -> None:
        while not stop.is_set():
            for path in changed:
                try:
                    data = (root / path).read_bytes()
                except FileNotFoundError:
                    problems.append(f"missing {path}")
                    continue
                if data not in (builds[0][path], builds[1][path]):
                    problems.append(f"partial {path} ({len(data)} bytes)")
                seen[0] += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(100):
            done = writer.write(builds[(n + 1) % 2])
            assert sorted(done.written) == sorted(changed)
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert seen[0] > len(changed)  # the reader did read during the rebuilds
    assert site_files(root) == builds[0]  # 100 writes: back at the first build


@pytest.mark.parametrize("break_it", ["partial", "missing"])
def test_the_reader_check_catches_non_atomic_writes(tmp_path: Path, break_it: str) -> None:
    """The check above can fail: a writer that truncates then writes, or deletes then writes,
    is caught by the same reader."""
    path = tmp_path / "page.html"
    whole = [b"A" * 400_000, b"B" * 400_000]
    path.write_bytes(whole[0])
    stop, problems = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                problems.append("missing")
                continue
            if data not in whole:
                problems.append("partial")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(300):
            if break_it == "missing":
                path.unlink()
            with open(path, "wb") as handle:
                for start in range(0, 400_000, 4096):
                    handle.write(whole[n % 2][start:start + 4096])
                    handle.flush()
    finally:
        stop.set()
        reader.join()
    assert problems
