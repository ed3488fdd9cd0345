"""Bounce parsing: DSNs per second from an mbox of 100,000, next to Python's `email` parsing
of the same messages alone (the floor any parser in Python starts from).

    python bench/bounces.py [--messages 100000] [--runs 3] [--json] [--json-out FILE] [--keep]

The mbox is written from the corpus of tests/data/bounces/ (Postfix, Exim, Exchange, Gmail,
QQ Mail style, a plain-text Outlook NDR), each copy with its own Message-IDs. Then, each run
reading the mbox afresh through Python's `mailbox` (its table of contents included):

1. baseline:  `email.message_from_bytes` on each message (compat32: the lenient, fast policy),
              nothing else;
2. incident:  `incident.bounces.read_sources` + `parse_bounce` on each: the DSN's
              per-recipient fields, the returned headers, the plain-text search, the class.

The best of `--runs` for each, DSNs/second, and incident's time over the baseline's.
"""

from __future__ import annotations

import argparse
import email
import mailbox
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, discard, emit, log, machine_info, machine_lines, table

sys.path.insert(0, str(REPO_ROOT))
from incident.bounces import Kind, parse_bounce, read_sources

CORPUS = REPO_ROOT / "tests" / "data" / "bounces"
SAMPLES = ["postfix-hard.eml", "exim-hard.eml", "exchange-hard.eml", "gmail-delayed.eml",
           "qq-hard.eml", "outlook-ndr-text.eml", "exim-verp-soft.eml"]
ORIGINAL = b"<INC-20261124-3F2A7C.0123456789abcdef01234567@bank.example>"


def write_mbox(path: Path, count: int) -> int:
    """`count` bounces from the corpus, each with its own Message-IDs; the file's size."""
    samples = [(CORPUS / name).read_bytes() for name in SAMPLES]
    with path.open("wb") as out:
        for i in range(count):
            data = samples[i % len(samples)].replace(
                ORIGINAL, b"<INC-20261124-3F2A7C.%024x@bank.example>" % i)
            data = data.replace(b"Message-Id: <", b"Message-Id: <%d." % i, 1).replace(
                b"Message-ID: <", b"Message-ID: <%d." % i, 1)
            # mbox quoting: a body line starting "From " would start a new message
            body = b"\n".join(b">" + line if line.startswith(b"From ") else line
                              for line in data.split(b"\n"))
            out.write(b"From MAILER-DAEMON Tue Nov 24 02:03:11 2026\n" + body.rstrip(b"\n")
                      + b"\n\n")
    return path.stat().st_size


def baseline(path: Path) -> tuple[float, int]:
    """Python's email parsing alone, over the mbox read by `mailbox`."""
    started = time.perf_counter()
    box = mailbox.mbox(str(path), create=False)
    count = 0
    for key in box.iterkeys():
        email.message_from_bytes(box.get_bytes(key))
        count += 1
    box.close()
    return time.perf_counter() - started, count


def incident(path: Path) -> tuple[float, int, dict[str, int]]:
    """incident.bounces: the sources and the parser, as `bounces ingest` runs them."""
    started = time.perf_counter()
    kinds: dict[str, int] = {}
    count = 0
    for source in read_sources([path]):
        parsed = parse_bounce(source.data or b"")
        key = parsed.kind.value if parsed.kind is not Kind.DSN else "dsn"
        kinds[key] = kinds.get(key, 0) + 1
        count += 1
    return time.perf_counter() - started, count, kinds


def render(report: dict[str, Any]) -> str:
    rows = [[r["what"], f"{r['seconds']:.2f}", f"{r['per_second']:,.0f}", r["ratio"]]
            for r in report["results"]]
    lines = [f"Bounce parsing: an mbox of {report['messages']:,} bounces "
             f"({report['mbox_mb']:.0f} MB), best of {report['runs']}",
             *machine_lines(report["machine"]), "",
             *table(["", "seconds", "messages/s", "time vs baseline"], rows), "",
             f"read as: {report['kinds']}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--json-out", metavar="FILE", type=Path, default=None,
                        help="also write the figures as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the mbox")
    args = parser.parse_args()
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="incident-bench-bounces-"))
    try:
        mbox = tmp / "bounces.mbox"
        log(f"writing {args.messages:,} bounces to {mbox}…")
        size = write_mbox(mbox, args.messages)
        base: list[float] = []
        ours: list[float] = []
        kinds: dict[str, int] = {}
        for run in range(args.runs):
            seconds, count = baseline(mbox)
            base.append(seconds)
            assert count == args.messages, count
            seconds, count, kinds = incident(mbox)
            ours.append(seconds)
            assert count == args.messages, count
            log(f"run {run + 1}: baseline {base[-1]:.2f} s, incident {ours[-1]:.2f} s")
        best_base, best_ours = min(base), min(ours)
        report = {
            "messages": args.messages, "mbox_mb": size / 1e6, "runs": args.runs,
            "machine": info, "kinds": kinds,
            "results": [
                {"what": "baseline: email.message_from_bytes", "seconds": best_base,
                 "per_second": args.messages / best_base, "ratio": "1.00×"},
                {"what": "incident: read_sources + parse_bounce", "seconds": best_ours,
                 "per_second": args.messages / best_ours,
                 "ratio": f"{best_ours / best_base:.2f}×"}]}
        emit(report, args, render)
    finally:
        discard(tmp, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
