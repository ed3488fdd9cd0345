"""`incident start` records its notice from the first recipients of a customer file and reads
the rest while sending (response/recording.py): what the operator sees, and what a file broken
after its first rows does, must be what reading the whole file first gave."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cli_fixtures import CUSTOMERS_HEADER, Workspace
from incident.audience import Selection, plain_file, scan_audience
from incident.response import recording

ROWS = 1500  # well past FIRST_ROWS (500): the early path


def customer(i: int) -> str:
    return (f"C{i:05d},Customer {i},customer{i:05d}@example.com,+86138{i:08d},"
            f"{'zh-CN' if i % 2 else 'en'},retail,guangdong,gd-sz,,"
            f"{'urgent' if i % 7 == 0 else 'normal'}")


def _masked(text: str) -> str:
    """Output without what differs between two starts (ids, times, durations)."""
    text = re.sub(r"INC-\d{8}-[0-9A-Z]{6}|\b[0-9A-Z]{6}\b", "ID", text)
    return re.sub(r"\d+(\.\d+)?s\b|\d\d:\d\d(:\d\d)?", "T", text)


@pytest.mark.parametrize("queue", [False, True])
def test_bad_rows_after_the_first_recipients_are_reported_as_before(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch, queue: bool) -> None:
    rows = [customer(i) for i in range(ROWS)]
    rows[1000] = "C01000,Li Lei,not-an-email,,en,retail,guangdong,gd-sz,,normal"  # skipped
    rows[1200] = "C01200,,c1200@example.com,,en,retail,guangdong,gd-sz,,normal"  # skipped
    rows[1300] = "C01300,Wang,w1300@example.com,+86123,zh-CN,retail,guangdong,gd-sz,,normal"
    path = sqlite_ws.write_customers(rows)
    args = ["start", "core-banking-outage", "--title", "Core down", "--audience", str(path),
            *(["--queue-only"] if queue else [])]

    early, early_json, whole, whole_json = _early_and_whole(sqlite_ws, monkeypatch, args)

    assert early.exit_code == whole.exit_code == 0
    assert "customers.csv:1002" in early.stderr and "customers.csv:1302" in early.stderr
    assert sorted(_masked(early.stdout).splitlines()) == sorted(
        _masked(whole.stdout).splitlines())
    assert _masked(early.stderr) == _masked(whole.stderr)
    assert early_json["notice"]["messages"] == 2 * (ROWS - 2) - 1  # one bad phone not used
    assert early_json["audience"]["recipients"] == ROWS - 2
    for key in ("notice", "audience", "deliveries", "deliveries_by_channel"):
        assert early_json[key] == whole_json[key], key
    for each in sqlite_ws.json("list"):
        assert sum(sqlite_ws.json("status", each["id"])["deliveries"].values()) == 2995
        assert ws_pending(sqlite_ws, each["id"]) == (2995 if queue else 0)
        # Readers of the notice's totals see the exact counts (state.fold: audience_read).
        assert _found(sqlite_ws.json("report", each["id"]), "customers_affected") == ROWS - 2


def _early_and_whole(ws: Workspace, monkeypatch: pytest.MonkeyPatch, args: list[str]
                     ) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    """`args` run (and as JSON) read early, then with the whole file read first."""
    early, early_json = ws.run(*args), ws.json(*args)
    monkeypatch.setattr(recording, "FIRST_ROWS", 10**9)  # the whole file read first
    return early, early_json, ws.run(*args), ws.json(*args)


def ws_pending(ws: Workspace, incident_id: str) -> int:
    return int(ws.json("status", incident_id)["deliveries"]["pending"])


def _found(data: Any, key: str) -> Any:
    """The value of the first `key` anywhere in a JSON document."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    for item in data if isinstance(data, list) else []:
        if (value := _found(item, key)) is not None:
            return value
    return None


BROKEN = {
    "not UTF-8": b"C00900,\xff\xfe,c900@example.com,,en,,,,,\n",
    "an unclosed quote": b'C00900,"Open quote,c900@example.com,,en,,,,,\n',
    "a cell over the CSV limit": b'C00900,"' + b"x" * 200_000 + b'",c900@example.com,,en,,,,,\n',
    "a lone carriage return": b"C00900,Ca\rrol,c900@example.com,,en,,,,,\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_file_broken_after_its_first_rows_is_refused_as_before(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """What reading the rest could refuse the whole file for is checked before recording:
    such a file is read in full first, as before — refused (exit 2, the line named, nothing
    recorded) exactly as when every file was."""
    lines = [(customer(i) + "\n").encode() for i in range(ROWS)]
    lines[900] = BROKEN[case]
    path = sqlite_ws.root / "customers.csv"
    path.write_bytes(CUSTOMERS_HEADER.encode() + b"".join(lines))
    args = ["start", "core-banking-outage", "--title", "Core down", "--audience", str(path)]
    early = sqlite_ws.run(*args, code=2)
    assert "customers.csv:902" in early.stderr and "Traceback" not in early.output
    assert sqlite_ws.json("list", "--all") == []
    monkeypatch.setattr(recording, "FIRST_ROWS", 10**9)  # the whole file read first
    assert _masked(sqlite_ws.run(*args, code=2).stderr) == _masked(early.stderr)


def test_plain_file_hashes_what_the_scan_hashes_and_spots_what_could_refuse_it(
        tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    rows = [(customer(i) + "\n").encode() for i in range(ROWS)]
    rows[3] = b'C00003,"Chan, Mary",mary@example.com,,en,,,,,\n'  # quotes: one line
    rows[4] = "C00004,张伟,zhang.wei@example.com,,zh-CN,,,,,\n".encode()  # non-ASCII name
    path.write_bytes(b"\xef\xbb\xbf" + CUSTOMERS_HEADER.encode() + b"".join(rows))
    plain = plain_file(path, ascii_local_parts=True)
    scan = scan_audience(path, Selection())
    assert scan.spool is not None
    scan.spool.close()
    assert plain == (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size,
                     ROWS + 1)
    assert plain[0] == scan.sha256

    def with_row(row: bytes, **options: bool) -> tuple[str, int, int] | None:
        changed = tmp_path / "changed.csv"
        changed.write_bytes(CUSTOMERS_HEADER.encode() + b"".join(rows[:900]) + row
                            + b"".join(rows[901:]))
        return plain_file(changed, **options)

    utf8_local = "C00900,张伟,张伟@example.com,,zh-CN,,,,,\n".encode()
    assert with_row(utf8_local, ascii_local_parts=True) is None  # may need SMTPUTF8: asked
    assert with_row(utf8_local) is not None  # sent as it is (file transport, SMTPUTF8 on)
    assert with_row(b'C00900,"Two\nlines",c@example.com,,en,,,,,\n') is None
    assert with_row(b"C00900,\xe5\xbc,c@example.com,,en,,,,,\n") is None  # cut UTF-8
    assert with_row(b"C00900,Long,c@example.com,," + b"x" * (1 << 17) + b",,,,\n") is None
    assert plain_file(tmp_path / "missing.csv") is None


def test_a_file_changed_while_it_is_read_is_not_counted_and_not_completed(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes read after recording must hash to the SHA-256 recorded up front. A file
    replaced between the two (faked: the up-front hash of another file) gets no counts, and
    completion refuses it as a changed file, naming it (`deliver` warns, `update` exits 2)."""
    path = sqlite_ws.write_customers([customer(i) for i in range(ROWS)])
    other = sqlite_ws.write_customers([customer(i) for i in range(ROWS - 1)], "other.csv")
    real = recording.plain_file
    monkeypatch.setattr(recording, "plain_file", lambda p, **kw: real(other, **kw))
    result = sqlite_ws.run("start", "core-banking-outage", "--title", "Core down",
                           "--audience", str(path), code=None)
    assert result.exit_code == 2 and "changed while" in result.stderr
    assert "Traceback" not in result.output
    [incident] = sqlite_ws.json("list")  # on record: its first messages may have gone
    monkeypatch.setattr(recording, "plain_file", real)
    warned = sqlite_ws.run("deliver", incident["id"])  # sends what is recorded, and says so
    assert "changed since the notice was declared" in warned.stderr
    refused = sqlite_ws.run("update", incident["id"], "-m", "Failover", code=2)
    assert "changed since the notice was declared" in refused.stderr
    assert "customers.csv" in refused.stderr


def _first_refs(ws: Workspace, incident_id: str) -> list[str]:
    """The customers of notice #1 in the order their email rows were recorded."""
    engine = create_engine(ws.db)
    try:
        with engine.connect() as conn:
            return [ref for (ref,) in conn.execute(text(
                "SELECT recipient_ref FROM outbox WHERE incident_id = :i AND notice_seq = 1 "
                "AND channel = 'email' AND recipient_ref NOT LIKE 'party:%' ORDER BY id"),
                {"i": incident_id})]
    finally:
        engine.dispose()


def test_urgent_customers_at_the_end_of_the_file_are_recorded_first(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read early, the urgent customers are found first wherever they are in the file and
    recorded with the notice, before the ordinary ones near the top; the counts, the problems
    (each once, with its line) and the rows are those of reading the whole file first."""
    n = 2000
    rows = [customer(i).rpartition(",")[0] + ("," + ("urgent" if i >= n - 30 else "normal"))
            for i in range(n)]
    rows[n - 10] = "C00005,Again,again@example.com,,en,retail,guangdong,gd-sz,,urgent"  # dup
    rows[n - 9] = "C01991,,c1991@example.com,,en,retail,guangdong,gd-sz,,urgent"  # no name
    rows[n - 8] = rows[n - 8].rpartition(",")[0] + ", VIP "  # urgent as the parser reads it
    rows[n - 7] = "C01993,Li,li1993@example.com,+86123,en,retail,guangdong,gd-sz,,urgent"
    rows[n - 6] = "C01994,Dup,dup@example.com,,en,retail,guangdong,gd-sz,,urgent"
    rows[n - 5] = "C01994,Dup2,dup2@example.com,,en,retail,guangdong,gd-sz,,urgent"  # dup
    path = sqlite_ws.write_customers(rows)
    urgent = [f"C{i:05d}" for i in range(n - 30, n) if i not in (n - 10, n - 9, n - 5)]
    args = ["start", "core-banking-outage", "--title", "Core down", "--audience", str(path)]

    early, early_json, whole, whole_json = _early_and_whole(sqlite_ws, monkeypatch, args)

    assert early.exit_code == whole.exit_code == 0
    for i in (n - 10, n - 9, n - 7, n - 5):  # each problem once (row i on line i + 2)
        assert early.stderr.count(f"customers.csv:{i + 2}:") == 1, i
    assert _masked(early.stderr) == _masked(whole.stderr)
    for key in ("notice", "audience", "deliveries", "deliveries_by_channel"):
        assert early_json[key] == whole_json[key], key
    ids = [each["id"] for each in sqlite_ws.json("list")]
    orders = [_first_refs(sqlite_ws, each) for each in ids]
    for order in orders:
        assert order[:len(urgent)] == urgent  # first, in the notice's first transaction
        assert len(order) == len(set(order)) == n - 3
    assert all(sorted(order) == sorted(orders[0]) for order in orders)


def test_read_early_yields_each_recipient_once_urgent_first(tmp_path: Path) -> None:
    """The early read's recipients are those of a full read (scan_audience), each once, the
    urgent ones first (beyond the first batch too), and its counts are the full read's."""
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_HEADER + "".join(customer(i) + "\n" for i in range(ROWS)),
                    encoding="utf-8")
    options: dict[str, Any] = {"default_language": "zh-CN", "default_region": "CN",
                               "checks": None, "refuse_utf8": None}
    scan, early = recording.read_audience(path, Selection(), **options)
    assert early is not None and scan.rows_read < ROWS  # read early
    got = list(early.recipients())
    full = scan_audience(path, Selection())
    assert full.spool is not None
    expected = list(full.spool)
    full.spool.close()
    assert got == expected  # urgent first, then file order: as the spool orders them
    assert sum(r.priority == "urgent" for r in got[:recording.FIRST_ROWS]) == (ROWS + 6) // 7
    read = early.scanner.scan()
    assert (read.rows_read, read.selected, read.reach) == (ROWS, full.selected, full.reach)

