"""The time source: production takes the system clock and nothing else, so an environment
variable cannot backdate the hash-chained record; tests freeze the clock they pass in."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import incident
from incident.clock import FrozenClock, SystemClock

PACKAGE = Path(incident.__file__).resolve().parent
LAUNCHER = Path(__file__).resolve().parent / "frozen_incident.py"
BACKDATED = "2001-01-01T00:00:00Z"
# Names an environment variable holding a time would have (INCIDENT_NOW, FAKETIME, ...).
TIME_WORDS = ("NOW", "TIME", "DATE", "CLOCK", "EPOCH", "TODAY")


def _console_script() -> Path:
    script = Path(sys.executable).with_name("incident")
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    return script


def _declared_at(tmp_path: Path, command: list[str]) -> tuple[str, datetime]:
    """Run `command … start` as a process with INCIDENT_NOW set to 2001; return the id and
    recorded time of the incident's first event (and check that its chain verifies)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_")}
    env["INCIDENT_NOW"] = BACKDATED

    def run(*args: str) -> str:
        done = subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done.stdout

    run("init", "ops")
    config = ["--config", "ops/incident.yaml", "--json"]
    started = json.loads(run(*config, "start", "core-banking-outage", "--title",
                             "Core banking down", "--eta", "2h", "--queue-only"))
    events = json.loads(run(*config, "timeline", started["id"]))["events"]
    run(*config, "verify", started["id"])
    return started["id"], datetime.fromisoformat(events[0]["at"]).astimezone(UTC)


def test_the_console_script_records_the_system_time_whatever_incident_now_says(
        tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    incident_id, at = _declared_at(tmp_path, [str(_console_script())])
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert before <= at <= after, f"recorded {at}, not the time it ran ({before} to {after})"
    assert not incident_id.startswith("INC-2001")


def test_a_process_started_through_the_test_launcher_runs_at_its_frozen_time(
        tmp_path: Path) -> None:
    incident_id, at = _declared_at(
        tmp_path, [sys.executable, str(LAUNCHER), "2026-11-24T02:00:00Z"])
    assert at == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert incident_id.startswith("INC-20261124-")


def _modules() -> list[tuple[Path, ast.Module]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 20  # the scan sees the package (a test that cannot fail is worse)
    return [(p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in paths]


def _environment_reads(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, variable name) of each read of the environment: os.environ[...],
    os.environ.get(...), os.getenv(...) and env.get(...) on a mapping called env; a name
    given as a module constant is resolved."""
    constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                 for t in node.targets if isinstance(t, ast.Name)}

    def name_of(node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.Name):
            return constants.get(node.id, node.id)
        return ast.unparse(node)

    def is_environ(node: ast.expr) -> bool:
        text = ast.unparse(node)
        return text.endswith("environ") or text == "env"

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            found.append((node.lineno, name_of(node.slice)))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            func = node.func
            if (func.attr == "get" and is_environ(func.value)) or ast.unparse(func) in (
                    "os.getenv", "getenv"):
                found.append((node.lineno, name_of(node.args[0])))
    return found


def test_no_module_reads_a_time_from_the_environment() -> None:
    reads = {(path.relative_to(PACKAGE.parent), line, name)
             for path, tree in _modules() for line, name in _environment_reads(tree)}
    assert any(name == "INCIDENT_CONFIG" for _, _, name in reads)  # the scan finds reads
    timed = sorted(r for r in reads if any(word in r[2].upper() for word in TIME_WORDS))
    assert timed == [], f"the time read from the environment: {timed}"


def test_only_the_clock_module_reads_the_system_time() -> None:
    calls = ("datetime.now", "datetime.utcnow", "datetime.today", "date.today", "time.time")
    found = sorted((str(path.relative_to(PACKAGE.parent)), node.lineno)
                   for path, tree in _modules() for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and ast.unparse(node.func) in calls)
    assert found == [("incident/clock.py", 28)], found


def test_a_frozen_clock_stands_still_until_set_or_advanced() -> None:
    clock = FrozenClock("2026-11-24T10:00:00+08:00")
    assert clock.now() == clock.now() == datetime(2026, 11, 24, 2, tzinfo=UTC)
    clock.advance(timedelta(minutes=5))
    assert clock.now() == datetime(2026, 11, 24, 2, 5, tzinfo=UTC)
    clock.set(datetime(2026, 11, 25, 1))  # naive means UTC
    assert clock.now() == datetime(2026, 11, 25, 1, tzinfo=UTC)
    assert SystemClock().now().tzinfo is UTC


@pytest.mark.parametrize("reader", ["os.environ.get('INCIDENT_NOW')",
                                    "os.environ['FAKETIME']", "os.getenv(NOW_ENV)"])
def test_the_scan_sees_each_way_of_reading_the_environment(reader: str) -> None:
    tree = ast.parse(f"import os\nNOW_ENV = 'INCIDENT_NOW'\nvalue = {reader}\n")
    (read,) = _environment_reads(tree)
    assert any(word in read[1] for word in TIME_WORDS)
