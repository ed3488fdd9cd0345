"""A 50 MB malformed customer list: `incident start --audience big.csv` refuses it with exit 2,
naming the file, the line and the field, in bounded memory (measured on a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import incident
from cli_fixtures import CUSTOMERS_HEADER, Workspace

SIZE = 50 * 1024 * 1024
RSS_LIMIT_MB = 300
PACKAGE_PARENT = str(Path(incident.__file__).resolve().parent.parent)
GOOD = "C{i:07d},Customer {i},customer{i}@example.com,,en,retail,guangdong,gd-sz,savings,normal\n"


def write_until(path: Path, head: str, line: Callable[[int], str]) -> int:
    """`head`, then `line(i)` for i = 0, 1, ... until the file holds SIZE bytes; line count."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        size = f.write(head)
        i = 0
        while size < SIZE:
            chunk = "".join(line(i + k) for k in range(1000))
            size += len(chunk.encode("utf-8"))
            f.write(chunk)
            i += 1000
    return i


def every_row_broken(path: Path) -> tuple[int, str]:
    # No id, no name, neither email nor phone: three problems in every one of ~450,000 rows.
    write_until(path, CUSTOMERS_HEADER,
                lambda i: f",,,,zh-CN,retail-{i:09d}-customers-of-the-southern-region,"
                          "guangdong,gd-sz-futian-branch-counter-3,savings;credit-card,normal\n")
    return 2, "id"


def one_unclosed_quote(path: Path) -> tuple[int, str]:
    # Three good rows, then a name whose quote never closes: 50 MB of "name" over many lines.
    head = CUSTOMERS_HEADER + "".join(GOOD.format(i=i) for i in range(3))
    head += 'C0000099,"Zhang Wei,zhang@example.com,,zh-CN,retail,guangdong,gd,savings,normal\n'
    write_until(path, head, lambda i: f"note {i:09d} " + "x" * 80 + "\n")
    return 5, "name"


def one_endless_line(path: Path) -> tuple[int, str]:
    # Not a CSV at all past the header: one 50 MB line without a newline (no quote involved).
    head = CUSTOMERS_HEADER + "".join(GOOD.format(i=i) for i in range(3))
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + "C0000099,")
        block = "y" * (1 << 20)
        for _ in range(SIZE >> 20):
            f.write(block)
    return 5, "name"


def run_start(ws: Workspace, audience: Path) -> tuple[int, str, float]:
    """`incident start ... --audience FILE` as its own process: exit code, stderr and its peak
    RSS in MB (os.wait4 gives that child's own ru_maxrss, not the maximum of every child)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
    env.update({"NO_COLOR": "1", "COLUMNS": "200"})
    err_path = ws.root.parent / "start.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "incident", "--config", str(ws.config), "--db", ws.db,
             "start", "core-banking-outage", "--title", "Core down", "--audience",
             str(audience)], env=env, cwd=ws.root, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err_path.read_text("utf-8", "replace"), usage.ru_maxrss / 1024


@pytest.mark.parametrize("make", [every_row_broken, one_unclosed_quote, one_endless_line])
def test_a_50mb_malformed_audience_is_refused_clearly_in_bounded_memory(
        sqlite_ws: Workspace, make: Callable[[Path], tuple[int, str]]) -> None:
    ws = sqlite_ws
    audience = ws.root.parent / "big.csv"
    line, field = make(audience)
    assert audience.stat().st_size >= SIZE
    code, stderr, rss_mb = run_start(ws, audience)
    print(f"\n{make.__name__}: exit {code}, peak RSS {rss_mb:.0f} MB, "
          f"{len(stderr.splitlines())} lines on stderr:\n{stderr[:600]}")
    assert code == 2, stderr
    assert "Traceback" not in stderr
    first = stderr.splitlines()[0]
    assert first.startswith(f"error: {audience}:"), first
    # The first located problem names the file, the record's first line and the column.
    assert f"{audience}:{line}: {field}" in stderr or (
        f"{audience}:{line}:" in first and f"(in column {field})" in first), stderr
    assert len(stderr.splitlines()) <= 40  # a summary, not one line per bad row
    assert rss_mb < RSS_LIMIT_MB
    # Nothing was declared.
    assert ws.json("list", "--all") == []
