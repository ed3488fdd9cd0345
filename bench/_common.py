"""Helpers shared by the bench/ scripts.

- `machine_info()`: what the figures were measured on (CPU, cores, versions, date, commit).
- `servers`: tests/servers.py, imported from the repository (smtp-sink start/stop, free ports).
- `run()`: a command with its wall time and the peak RSS of that one child (os.wait4).
- `make_workspace()` / `write_audience()`: a real `incident init` workspace in a temp dir whose
  email channel points at a local SMTP server, and an N-customer CSV.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"


def _import_servers() -> ModuleType:
    """tests/servers.py (no pytest dependency): starts smtp-sink on a free 127.0.0.1 port."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    return importlib.import_module("servers")


servers = _import_servers()


# --- the machine -------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _command_output(cmd: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10,
                             cwd=REPO_ROOT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # a missing package is just "unknown"
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, versions, UTC date and git commit of this run."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    postfix = _command_output(["dpkg-query", "-W", "-f", "${Version}", "postfix"])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_mb": _mem_total_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiosmtplib": _version("aiosmtplib"),
        "sqlalchemy": _version("sqlalchemy"),
        "postfix": postfix,
        "commit": (commit + ("+dirty" if dirty else "")) if commit else None,
        "load_average_1m": load_average(),
    }


def load_average() -> float | None:
    """The 1-minute load average (other work on the machine skews every figure)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _busy_seconds() -> float | None:
    """CPU time the whole machine has spent busy (all cores; steal counts as busy)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of a running process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """CPU used during a block: by this process and the children it reaped (`own`), by the
    running processes `watch` (e.g. the SMTP server: `watched`), and by everything else on the
    machine (`others`: other users' work, steal) -- which makes the wall times pessimistic."""

    def __init__(self, watch: Sequence[int] = ()) -> None:
        self.watch = list(watch)
        self.wall = self.own = self.watched = 0.0
        self.others: float | None = None

    def __enter__(self) -> CpuMeter:
        self._t = time.perf_counter()
        self._busy = _busy_seconds()
        self._own = _own_seconds()
        self._watched = [process_cpu_seconds(pid) or 0.0 for pid in self.watch]
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t
        self.own = _own_seconds() - self._own
        self.watched = sum((process_cpu_seconds(pid) or before) - before
                           for pid, before in zip(self.watch, self._watched, strict=True))
        busy = _busy_seconds()
        if busy is not None and self._busy is not None:
            self.others = max(0.0, busy - self._busy - self.own - self.watched)

    def as_dict(self) -> dict[str, float | None]:
        """The figures, in CPU-seconds, plus others as average cores busy."""
        return {"wall": self.wall, "own_cpu": self.own, "watched_cpu": self.watched,
                "others_cpu": self.others,
                "others_cores": self.others / self.wall if self.others is not None and self.wall
                else None}


def machine_lines(info: Mapping[str, Any]) -> list[str]:
    """The machine facts as two short lines for a report header."""
    return [
        f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['memory_mb']} MB RAM, {info['os']}",
        f"date {info['date']}, commit {info['commit']}, Python {info['python']}, "
        f"aiosmtplib {info['aiosmtplib']}, SQLAlchemy {info['sqlalchemy']}, "
        f"postfix {info['postfix']}, load average at start {info['load_average_1m']}",
    ]


# --- running commands --------------------------------------------------------------------------


@dataclass
class RunResult:
    """A finished command: wall time, exit code, output and the child's own peak RSS."""

    cmd: list[str]
    wall: float
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float
    cpu_seconds: float  # user + system of that child

    def check(self, what: str) -> RunResult:
        """Raise with the output if the command failed."""
        if self.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {self.returncode}): {' '.join(self.cmd)}\n"
                               f"{self.stdout[-3000:]}\n{self.stderr[-3000:]}")
        return self


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without INCIDENT_* overrides, colour off, a wide terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_")}
    env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    env.update(extra or {})
    return env


def run(cmd: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None) -> RunResult:
    """Run `cmd`, output to temp files, and reap it with os.wait4 for its own ru_maxrss.

    (RUSAGE_CHILDREN would be the maximum over every child this process ever waited for.)
    """
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env) if env is not None else None,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, _kill, args=(proc.pid,))
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return RunResult(cmd, wall, proc.returncode, stdout, stderr, rss_mb,
                     usage.ru_utime + usage.ru_stime)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def incident_cmd(*, frozen_at: str | None = None) -> list[str]:
    """The CLI under this interpreter (run the bench with the project's virtualenv); with
    `frozen_at`, through the tests' launcher that runs it at that time (tests/frozen_incident.py:
    the CLI itself reads no time from the environment)."""
    if frozen_at is not None:
        return [sys.executable, str(TESTS_DIR / "frozen_incident.py"), frozen_at]
    return [sys.executable, "-m", "incident"]


def find_smtp_source() -> Path:
    """Postfix's load generator, next to smtp-sink (Debian puts both in /usr/sbin)."""
    found = shutil.which("smtp-source")
    if found:
        return Path(found)
    candidate = servers.find_smtp_sink().parent / "smtp-source"
    if os.access(candidate, os.X_OK):
        return candidate
    raise RuntimeError("smtp-source not found: it comes with Debian's postfix package "
                       "(scripts/install-test-deps.sh installs it)")


# --- an incident workspace ---------------------------------------------------------------------


@dataclass
class Workspace:
    """A folder made by `incident init`, with its own incident.yaml and SQLite database."""

    path: Path

    @property
    def config(self) -> Path:
        """Its incident.yaml."""
        return self.path / "incident.yaml"

    def incident(self, *args: str, timeout: float | None = None) -> RunResult:
        """`incident --config WS/incident.yaml ARGS...` as a fresh process."""
        return run([*incident_cmd(), "--config", str(self.config), *args], cwd=self.path,
                   env=clean_env(), timeout=timeout)

    def copy(self, target: Path) -> Workspace:
        """A copy of the whole workspace, database included (e.g. to replay a queue)."""
        shutil.copytree(self.path, target)
        return Workspace(target)


def make_workspace(path: Path, *, smtp_port: int | None = None, connections: int = 8,
                   rate: float = 1_000_000.0, batch: int | None = None) -> Workspace:
    """`incident init PATH`; with `smtp_port`, email goes over SMTP to 127.0.0.1:smtp_port
    (security none, `connections` connections, a rate high enough never to limit); with
    `batch`, `delivery.batch` (outbox rows claimed per transaction; default: incident's)."""
    import yaml

    run([*incident_cmd(), "init", str(path)], env=clean_env()).check("incident init")
    ws = Workspace(path)
    config = yaml.safe_load(ws.config.read_text(encoding="utf-8"))
    email = config["channels"]["email"]
    if smtp_port is not None:
        email["transport"] = "smtp"
        email["rate"] = rate
        email["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                         "connections": connections, "timeout": 60}
    if batch is not None:
        config["delivery"] = {**(config.get("delivery") or {}), "batch": batch}
    ws.config.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                         encoding="utf-8")
    return ws


ZH_NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强", "周杰", "吴婷"]
EN_NAMES = ["Wei Zhang", "Fang Wang", "Na Li", "Yang Liu", "Jing Chen", "Lei Yang",
            "Min Zhao", "Qiang Huang", "Jie Zhou", "Ting Wu"]
LANGS = ("zh-CN", "en")


def customer(i: int) -> tuple[str, str, str, str]:
    """Customer number i: (ref, name, email, language); languages alternate zh-CN / en."""
    lang = LANGS[i % 2]
    names = ZH_NAMES if lang == "zh-CN" else EN_NAMES
    return f"C{i:08d}", names[(i // 2) % len(names)], f"customer{i}@example.com", lang


def write_audience(path: Path, n: int) -> Path:
    """An N-customer CSV, email only (no phone), half zh-CN, half en."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "email", "phone", "language"])
        for i in range(n):
            ref, name, email, lang = customer(i)
            w.writerow([ref, name, email, "", lang])
    return path


# --- formatting --------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          align: str | None = None) -> list[str]:
    """A plain-text table; `align` is one l/r per column (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(row, widths, align, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(cells[0]), rule, *(line(r) for r in cells[1:])]


PLAYBOOK = "core-banking-outage"  # the playbook every benchmark starts
TITLE = "核心系统故障 Core banking unavailable"


def log(text: str) -> None:
    """Progress on stderr (stdout carries the report or the JSON)."""
    print(text, file=sys.stderr, flush=True)


def discard(tmp: Path, keep: bool) -> None:
    """Remove a benchmark's temporary folder, or say where it was kept (--keep)."""
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def emit(report: Mapping[str, Any], args: Any, render: Callable[[Any], str]) -> None:
    """The figures as JSON to --json-out (if given), and the report (or JSON, --json) on
    stdout."""
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    print(text if args.json else render(report))
