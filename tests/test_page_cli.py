"""`incident page build | serve`, and the rebuild after every public notice: the site follows
the record, `status_page.publish` runs on it, and a publish or build that fails is a warning
that never blocks the notice nor changes its exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_page import setup_site

from cli_fixtures import Workspace
from counting_smtp import counting_smtp

PUBLISH = """\
import json, os, sys
site = sys.argv[-1]
pages = sorted(os.path.relpath(os.path.join(d, f), site) for d, _, fs in os.walk(site) for f in fs)
with open({log!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "pages": len(pages)}}) + "\\n")
if {fail!r}:
    print("bucket unreachable: 503 from s3.example.com", file=sys.stderr)
    sys.exit(4)
"""


def publisher(tmp_path: Path, *, fail: bool = False) -> tuple[str, Path]:
    """A publish command (a Python script logging what it was given) and its log."""
    log = tmp_path / "published.log"
    script = tmp_path / "publish.py"
    script.write_text(PUBLISH.format(log=str(log), fail=fail), encoding="utf-8")
    return f"{sys.executable} {script} --to s3://status-bucket {{dir}}", log


def runs(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text("utf-8").splitlines()]


def test_every_public_notice_rebuilds_and_publishes_the_site(sqlite_ws: Workspace,
                                                               tmp_path: Path) -> None:
    ws = sqlite_ws
    command, log = publisher(tmp_path)
    site = setup_site(ws, publish=command)
    ws.freeze("2026-09-14T06:00:00Z")
    iid = ws.json("start", "core-banking-outage", "--title", "Transfers down")["id"]
    assert len(runs(log)) == 1
    assert runs(log)[0]["argv"] == ["--to", "s3://status-bucket", str(site)]
    page = site / "en" / "incidents" / f"{iid}.html"
    steps = [("update", iid, "-m", "Failover in progress"),
             ("eta", iid, "3h", "--reason", "Database checks"),
             ("resolve", iid, "-m", "Transfers restored")]
    for n, args in enumerate(steps, start=2):
        ws.freeze(f"2026-09-14T0{n + 5}:00:00Z")
        ws.run(*args)
        assert len(runs(log)) == n, args
    html = page.read_text("utf-8")
    for text in ("Failover in progress", "Database checks", "Transfers restored"):
        assert text in html
    # Nothing public changed: the site is not rewritten and not published again.
    ws.run("update", iid, "-m", "internal note", "--internal", code=None)
    assert len(runs(log)) == 4
    # A drill is never shown, so it does not publish either.
    ws.run("start", "core-banking-outage", "--title", "Drill", "--drill")
    assert len(runs(log)) == 4 and "Drill" not in (site / "en" / "index.html").read_text()
    ws.run("close", iid)
    assert all(run["pages"] == runs(log)[0]["pages"] for run in runs(log))


def test_a_failed_publish_is_a_warning_and_the_notice_stands(sqlite_ws: Workspace,
                                                              tmp_path: Path) -> None:
    ws = sqlite_ws
    command, log = publisher(tmp_path, fail=True)
    site = setup_site(ws, publish=command)
    started = ws.run("--json", "start", "core-banking-outage", "--title", "Transfers down")
    iid = json.loads(started.stdout)["id"]
    assert "status page not published" in started.stderr
    assert "exited with code 4" in started.stderr and "bucket unreachable" in started.stderr
    updated = ws.run("update", iid, "-m", "Failover in progress")  # exit 0 all the same
    assert "status page not published" in updated.stderr
    assert "Failover in progress" in (site / "en" / "incidents" / f"{iid}.html").read_text()
    assert ws.json("status", iid)["status"] == "investigating"
    assert len(runs(log)) == 2
    # `page build` asked for explicitly: the failure is its outcome (exit 1).
    (site / "en" / "index.html").unlink()
    built = ws.run("page", "build", code=1)
    assert "not published" in built.stderr and "bucket unreachable" in built.stderr


def test_a_publish_that_hangs_or_cannot_start_is_a_warning(sqlite_ws: Workspace,
                                                            tmp_path: Path) -> None:
    ws = sqlite_ws
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    setup_site(ws, publish=f"{sys.executable} {hang}", publish_timeout="1s")
    began = time.monotonic()
    started = ws.run("--json", "start", "core-banking-outage", "--title", "Transfers down")
    assert time.monotonic() - began < 50
    assert "did not finish within 1s" in started.stderr
    iid = json.loads(started.stdout)["id"]
    setup_site(ws, publish=str(tmp_path / "no-such-command"))
    updated = ws.run("update", iid, "-m", "Failover in progress")
    assert "cannot run" in updated.stderr and "no-such-command" in updated.stderr


def test_a_site_that_cannot_be_written_is_a_warning(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    setup_site(ws)
    (ws.root / "site").write_text("a file where the site should be", encoding="utf-8")
    started = ws.run("start", "core-banking-outage", "--title", "Transfers down")
    assert "status page not rebuilt" in started.stderr


def test_page_build_needs_a_directory(sqlite_ws: Workspace) -> None:
    refused = sqlite_ws.run("page", "build", code=2)
    assert "status_page.dir" in refused.stderr and "Traceback" not in refused.stderr


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status), answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return int(exc.code), b"", ""


def test_page_serve_previews_the_site_and_follows_the_record(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    setup_site(ws)
    iid = ws.json("start", "core-banking-outage", "--title", "Transfers down")["id"]
    server = subprocess.Popen(
        [sys.executable, "-m", "incident", "--config", str(ws.config), "--db", ws.db,
         "page", "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, (line, server.stderr.read() if server.stderr else "")
        base = found.group(0)
        status, body, kind = _get(base)
        assert status == 200 and kind.startswith("text/html") and iid.encode() in body
        status, body, kind = _get(base + "api/v2/summary.json")
        assert status == 200 and kind.startswith("application/json")
        assert json.loads(body)["incidents"][0]["id"] == iid
        assert _get(base + "en/history.atom")[2].startswith("application/atom+xml")
        assert _get(base + "../incident.yaml")[0] == 404
        assert _get(base + "%2e%2e/incident.yaml")[0] == 404
        # Recorded by another process (the page was not rebuilt by it: no status_page.dir in
        # that config): the preview picks it up from the record.
        ws.configure(lambda cfg: cfg.pop("status_page"))
        ws.run("update", iid, "-m", "Failover in progress")
        page = f"{base}en/incidents/{iid}.html"
        deadline = time.monotonic() + 60
        while b"Failover in progress" not in _get(page)[1]:
            assert time.monotonic() < deadline, "the preview did not follow the record"
            time.sleep(0.2)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0


def test_a_broken_page_template_is_bad_input_and_only_a_warning_after_a_notice(
        sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    setup_site(ws)
    ws.json("start", "core-banking-outage", "--title", "Transfers down")
    broken = ws.root / "templates" / "page" / "incident.html"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text('{% extends "page/base.html" %}{% block main %}{{ i.nope.deeper }}'
                      "{% endblock %}", encoding="utf-8")
    (ws.root / "site" / "en" / "index.html").unlink()
    refused = ws.run("page", "build", code=2)
    assert "status page templates cannot be rendered" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (ws.root / "site" / "en" / "index.html").exists()  # nothing half-written
    updated = ws.run("--json", "start", "core-banking-outage", "--title", "Cards down")
    assert "status page not rebuilt" in updated.stderr


def test_no_second_sender_is_forked_while_the_page_is_rebuilt(sqlite_ws: Workspace,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The page is rebuilt (and published) in a thread while the notice goes out; a fork then
    would copy locks that thread holds into the second sender process, so the send stays in
    one process (response/senders.py, can_fork)."""
    ws = sqlite_ws
    slow = tmp_path / "slow.py"  # the rebuild's thread lives on while it publishes
    slow.write_text("import time\ntime.sleep(8)\n", encoding="utf-8")
    setup_site(ws, publish=f"{sys.executable} {slow}")
    forks: list[int] = []

    def no_fork() -> int:
        forks.append(1)
        raise OSError("fork refused by the test")

    monkeypatch.setattr(os, "fork", no_fork)
    with counting_smtp() as server:
        ws.use_smtp(server.port, connections=4)
        ws.configure(lambda cfg: cfg["delivery"].update(processes=2) if cfg.get("delivery")
                     else cfg.update(delivery={"processes": 2}))
        ws.write_customers([f"C{i:04d},Customer {i},c{i}@example.com,,en,retail,CN-GD,,,normal"
                            for i in range(50)])
        ws.run("start", "core-banking-outage", "--title", "Transfers down")
        assert server.total() >= 50
    assert forks == []
