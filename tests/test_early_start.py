"""`incident start` records its notice from the first recipients of a customer file and reads
the rest while sending (response/recording.py): what the operator sees, and what a file broken
after its first rows does, must be what reading the whole file first gave."""

from __future__ import annotations

import re

import pytest

from cli_fixtures import CUSTOMERS_HEADER, Workspace
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


def test_bad_rows_after_the_first_recipients_are_reported_as_before(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [customer(i) for i in range(ROWS)]
    rows[1000] = "C01000,Li Lei,not-an-email,,en,retail,guangdong,gd-sz,,normal"  # skipped
    rows[1200] = "C01200,,c1200@example.com,,en,retail,guangdong,gd-sz,,normal"  # skipped
    rows[1300] = "C01300,Wang,w1300@example.com,+86123,zh-CN,retail,guangdong,gd-sz,,normal"
    path = sqlite_ws.write_customers(rows)
    args = ["start", "core-banking-outage", "--title", "Core down", "--audience", str(path)]

    early = sqlite_ws.run(*args)
    early_json = sqlite_ws.json(*args)
    monkeypatch.setattr(recording, "FIRST_ROWS", 10**9)  # the whole file read first
    whole = sqlite_ws.run(*args)
    whole_json = sqlite_ws.json(*args)

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


BROKEN = {
    "not UTF-8": b"C00900,\xff\xfe,c900@example.com,,en,,,,,\n",
    "an unclosed quote": b'C00900,"Open quote,c900@example.com,,en,,,,,\n',
    "a cell over the CSV limit": b'C00900,"' + b"x" * 200_000 + b'",c900@example.com,,en,,,,,\n',
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
