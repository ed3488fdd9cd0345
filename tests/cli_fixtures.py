"""Fixtures that drive the real command line on a fresh workspace (incident init)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from incident.cli import cli
from incident.clock import FrozenClock

CUSTOMERS_HEADER = "id,name,email,phone,language,segment,region,branch,products,priority\n"


@dataclass
class Workspace:
    """A folder made by `incident init`, a database URL, and a way to run commands in it
    (on the system clock until `freeze` stops it)."""

    root: Path
    db: str
    runner: CliRunner
    operator: str = "duty-lead"
    clock: FrozenClock | None = None

    def freeze(self, at: datetime | str) -> FrozenClock:
        """Run the next commands at `at` (UTC if naive), until frozen at another time."""
        if self.clock is None:
            self.clock = FrozenClock(at)
        else:
            self.clock.set(at)
        return self.clock

    @property
    def config(self) -> Path:
        return self.root / "incident.yaml"

    def run(self, *args: str, code: int | None = 0, env: dict[str, str] | None = None
            ) -> Result:
        """Run `incident --config … --db … ARGS`; assert the exit code (None: any)."""
        full = ["--config", str(self.config), "--db", self.db, "--as", self.operator, *args]
        # The clock is passed in as the context object, as a program embedding the CLI would.
        result = self.runner.invoke(cli, full, catch_exceptions=False, env=env, obj=self.clock)
        if code is not None:
            assert result.exit_code == code, (
                f"exit {result.exit_code} != {code} for {args}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def json(self, *args: str, code: int | None = 0) -> Any:
        """Run with --json and parse stdout."""
        return json.loads(self.run("--json", *args, code=code).stdout)

    def write_customers(self, rows: list[str], name: str = "customers.csv") -> Path:
        """Replace a customer list with these CSV rows (header added)."""
        path = self.root / name
        path.write_text(CUSTOMERS_HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
        return path

    def outbox_files(self, incident_id: str, suffix: str, *,
                     internal: bool = False) -> list[Path]:
        """Files the file channel wrote for an incident's customers (or, with `internal`, for
        its parties)."""
        folder = self.root / "outbox" / incident_id
        found = sorted(folder.rglob(f"*.{suffix}"))
        return [p for p in found if (p.relative_to(folder).parts[0] == "internal") == internal]

    def configure(self, edit: Callable[[dict[str, Any]], None]) -> None:
        """Change incident.yaml through its parsed form (comments are dropped)."""
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        edit(data)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                               encoding="utf-8")

    def use_smtp(self, port: int, *, connections: int = 4, rate: float = 5000) -> None:
        """Send email over SMTP (no TLS, no login) to 127.0.0.1:port."""
        def edit(cfg: dict[str, Any]) -> None:
            cfg["channels"]["email"].update(transport="smtp", rate=rate, smtp={
                "host": "127.0.0.1", "port": port, "security": "none",
                "connections": connections, "timeout": 10})
        self.configure(edit)

    def use_twilio(self, url: str, *, rate: float = 1000) -> None:
        """Send SMS through a Twilio-compatible API at `url` (credentials from the env)."""
        def edit(cfg: dict[str, Any]) -> None:
            cfg["channels"]["sms"].update(transport="twilio", rate=rate, twilio={
                "from_number": "+15005550006", "api_base_url": url})
        self.configure(edit)

    def fast_retries(self, *, wait: str = "1s", attempts: int = 20) -> None:
        """Retry after about a second, and let a foreground send wait `wait` for retries."""
        def edit(cfg: dict[str, Any]) -> None:
            cfg["delivery"] = {"backoff_base": "1s", "backoff_cap": "1s",
                               "wait_for_retries": wait, "max_attempts": attempts}
        self.configure(edit)

    def set_config(self, old: str, new: str) -> None:
        """Edit incident.yaml in place."""
        text = self.config.read_text(encoding="utf-8")
        assert old in text, old
        self.config.write_text(text.replace(old, new), encoding="utf-8")


@pytest.fixture
def ws(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A fresh workspace on each database backend (SQLite file and PostgreSQL)."""
    yield _workspace(tmp_path, db_url, monkeypatch)


@pytest.fixture
def sqlite_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A fresh workspace on SQLite only (for tests about input, not storage)."""
    yield _workspace(tmp_path, f"sqlite:///{tmp_path}/ws/incident.db", monkeypatch)


def _workspace(tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.delenv("INCIDENT_CONFIG", raising=False)
    monkeypatch.delenv("INCIDENT_DB", raising=False)
    runner = CliRunner()
    root = tmp_path / "ws"
    result = runner.invoke(cli, ["init", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return Workspace(root=root, db=db, runner=runner)
