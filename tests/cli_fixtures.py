"""Fixtures that drive the real command line on a fresh workspace (incident init)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from incident.cli import cli

CUSTOMERS_HEADER = "id,name,email,phone,language,segment,region,branch,products,priority\n"


@dataclass
class Workspace:
    """A folder made by `incident init`, a database URL, and a way to run commands in it."""

    root: Path
    db: str
    runner: CliRunner
    operator: str = "duty-lead"

    @property
    def config(self) -> Path:
        return self.root / "incident.yaml"

    def run(self, *args: str, code: int | None = 0, env: dict[str, str] | None = None
            ) -> Result:
        """Run `incident --config … --db … ARGS`; assert the exit code (None: any)."""
        full = ["--config", str(self.config), "--db", self.db, "--as", self.operator, *args]
        result = self.runner.invoke(cli, full, catch_exceptions=False, env=env)
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

    def outbox_files(self, incident_id: str, suffix: str) -> list[Path]:
        """Files the file channel wrote for an incident."""
        return sorted((self.root / "outbox" / incident_id).rglob(f"*.{suffix}"))

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
    monkeypatch.delenv("INCIDENT_NOW", raising=False)
    monkeypatch.delenv("INCIDENT_CONFIG", raising=False)
    monkeypatch.delenv("INCIDENT_DB", raising=False)
    runner = CliRunner()
    root = tmp_path / "ws"
    result = runner.invoke(cli, ["init", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return Workspace(root=root, db=db, runner=runner)
