"""Reading an audience from a database (SQL audiences) vs the same rows from a CSV file.

    python bench/sql_audience.py [--customers 1000000] [--json] [--json-out FILE] [--keep]

The same N customers (bench/_common.py: email only, half zh-CN, half en) as a CSV file, as a
table of a SQLite file and as a table of a PostgreSQL database (the server tests/servers.py
starts on 127.0.0.1). For each, `incident start --dry-run --audience NAME` in a fresh process,
reaped with `os.wait4` for its own peak RSS: the whole list read, validated, selected and
counted (the SQL audiences through a server-side cursor in a read-only transaction, and
fingerprinted), nothing recorded. Rows per second are N / wall time of that process (start-up
included, the same for all three).

Targets (issue 17): peak RSS of a SQL audience at 1,000,000 rows under 200 MB (bounded memory:
the rows are streamed, not loaded) and within 1.5× the CSV's.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from _common import (  # bench/ is not a package: imported via sys.path
    PLAYBOOK,
    TITLE,
    clean_env,
    customer,
    discard,
    emit,
    incident_cmd,
    log,
    machine_info,
    machine_lines,
    make_workspace,
    run,
    servers,
    table,
    write_audience,
)

RSS_TARGET_MB = 200.0
RSS_RATIO = 1.5
QUERY = "SELECT id, name, email, phone, language FROM customers ORDER BY id"
_CREATE = ("CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, "
           "phone TEXT, language TEXT)")


def rows(n: int) -> Any:
    """The customers as table rows (the CSV's, cell for cell)."""
    for i in range(n):
        ref, name, email, lang = customer(i)
        yield ref, name, email, "", lang


def fill_sqlite(path: Path, n: int) -> str:
    """A SQLite file holding the N customers; its SQLAlchemy URL."""
    with sqlite3.connect(path) as conn:
        conn.execute(_CREATE)
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", rows(n))
    return f"sqlite:///{path}"


def fill_postgres(url: str, n: int) -> None:
    """The N customers in the PostgreSQL database at `url` (COPY)."""
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as conn, conn.cursor() as cur:
        cur.execute(_CREATE)
        with cur.copy("COPY customers FROM STDIN") as copy:
            for row in rows(n):
                copy.write_row(row)


def measure(ws_config: Path, cwd: Path, audience: str, n: int,
            env: dict[str, str]) -> dict[str, Any]:
    """`start --dry-run --audience AUDIENCE` in a fresh process: wall, CPU, peak RSS."""
    done = run([*incident_cmd(), "--config", str(ws_config), "start", PLAYBOOK, "--title",
                TITLE, "--audience", audience, "--dry-run"], cwd=cwd,
               env=clean_env(env)).check(f"start --dry-run --audience {audience}")
    return {"seconds": done.wall, "cpu": done.cpu_seconds, "peak_rss_mb": done.max_rss_mb,
            "rows_per_second": n / done.wall}


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    n = report["customers"]
    lines = ["Reading an audience: SQL (SQLite, PostgreSQL) vs CSV",
             *machine_lines(report["machine"]), "",
             f"incident start {PLAYBOOK} --dry-run --audience NAME, {n:,} customers (email "
             "only), a fresh process each", ""]
    body = [[label, f"{r['seconds']:.2f}", f"{r['cpu']:.2f}", f"{r['rows_per_second']:,.0f}",
             f"{r['peak_rss_mb']:.0f}"] for label, r in report["sources"].items()]
    lines += table(["audience", "wall s", "CPU s", "rows/s", "peak RSS MB"], body, "lrrrr")
    lines += ["", "targets (issue 17):"]
    for t in report["targets"]:
        lines.append(f"  [{'PASS' if t['pass'] else 'MISS'}] {t['name']}: {t['shown']}")
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Bounded memory for each SQL audience: under 200 MB, and within 1.5× the CSV's."""
    n, sources = report["customers"], report["sources"]
    csv_rss = sources["CSV file"]["peak_rss_mb"]
    out = []
    for label, r in sources.items():
        if label == "CSV file":
            continue
        rss = r["peak_rss_mb"]
        out.append({"name": f"{label} peak RSS < {RSS_TARGET_MB:.0f} MB at {n:,} rows",
                    "value": rss, "shown": f"{rss:.0f} MB", "goal": f"< {RSS_TARGET_MB:.0f} MB",
                    "goal_value": RSS_TARGET_MB, "comparison": "<",
                    "pass": rss < RSS_TARGET_MB})
        out.append({"name": f"{label} peak RSS ≤ {RSS_RATIO}× the CSV's",
                    "value": rss / csv_rss, "shown": f"{rss / csv_rss:.2f}×",
                    "goal": f"≤ {RSS_RATIO}×", "goal_value": RSS_RATIO, "comparison": "<",
                    "pass": rss <= RSS_RATIO * csv_rss})
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=1_000_000, help="rows (default 10^6)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    p.add_argument("--json-out", metavar="FILE", type=Path, default=None,
                   help="also write the figures as JSON to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    if args.customers < 1:
        p.error("--customers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure; print the report (or JSON)."""
    args = parse_args(argv)
    n = args.customers
    tmp = Path(tempfile.mkdtemp(prefix="incident-bench-sql-"))
    pg = servers.start_postgres(tmp / "pg")
    report: dict[str, Any] = {"benchmark": "sql_audience", "machine": machine_info(),
                              "customers": n, "query": QUERY, "sources": {}}
    try:
        ws = make_workspace(tmp / "ws")
        log(f"{n:,} customers: CSV, SQLite, PostgreSQL")
        csv_path = write_audience(tmp / "customers.csv", n)
        env = {"CRM_SQLITE_URL": fill_sqlite(tmp / "crm.db", n), "CRM_PG_URL": pg.url}
        fill_postgres(pg.url, n)
        config = yaml.safe_load(ws.config.read_text(encoding="utf-8"))
        config["audiences"].update(
            sqlite_crm={"url_env": "CRM_SQLITE_URL", "query": QUERY},
            postgres_crm={"url_env": "CRM_PG_URL", "query": QUERY})
        ws.config.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                             encoding="utf-8")
        for label, audience in (("CSV file", str(csv_path)), ("SQLite query", "sqlite_crm"),
                                ("PostgreSQL query", "postgres_crm")):
            log(f"  start --dry-run: {label}")
            report["sources"][label] = measure(ws.config, ws.path, audience, n, env)
    finally:
        pg.stop()
        discard(tmp, args.keep)
    report["targets"] = targets(report)
    emit(report, args, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
