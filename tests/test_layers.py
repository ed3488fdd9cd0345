"""The layers hold: the import-linter contracts of pyproject.toml pass, and each one breaks when
a module crosses its line (checked on a copy of the package with one import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {c["id"]: c["name"] for c in
             tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
             ["contracts"]}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the package under `root`, with pyproject.toml's contracts."""
    # The copy's directory first on the path, so that it, not the installed package, is read.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept() -> None:
    result = lint_imports(REPO)

    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in result.stdout
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize(("module", "line", "contract", "shown"), [
    ("incident/store/engine.py", "import click", "cli-only", "incident.store.engine -> click"),
    ("incident/notices.py", "from rich.text import Text", "cli-only",
     "incident.notices -> rich"),
    ("incident/channels/file.py", "from incident.store import outbox", "channels",
     "incident.channels.file -> incident.store"),
    ("incident/channels/email.py", "from incident import delivery", "channels",
     "incident.channels.email -> incident.delivery"),
    ("incident/store/outbox.py", "from incident.channels import base", "store",
     "incident.store.outbox -> incident.channels.base"),
    ("incident/store/events.py", "from incident import response", "store",
     "incident.store.events -> incident.response"),
    ("incident/response/journal.py", "from incident.cli import output", "layers",
     "incident.response.journal -> incident.cli.output"),
    ("incident/notices.py", "from incident.response import results", "machinery",
     "incident.notices -> incident.response.results"),
    ("incident/response/manual.py", "from incident.response.coordination import Coordination",
     "peers", "incident.response.manual -> incident.response.coordination"),
    ("incident/notices.py", "import sqlalchemy", "sql", "incident.notices -> sqlalchemy"),
    ("incident/delivery/dispatcher.py", "import prometheus_client", "prometheus",
     "incident.delivery.dispatcher -> prometheus_client"),
    ("incident/report/metrics.py", "from incident.store.schema import outbox", "sql",
     "incident.report.metrics -> incident.store.schema"),
    ("incident/errors.py", "from incident import settings", "models",
     "incident.errors -> incident.settings"),
    ("incident/models.py", "from incident.store import schema", "models",
     "incident.models -> incident.store.schema"),
    ("incident/payloads.py", "from incident.store import schema", "payloads",
     "incident.payloads -> incident.store.schema"),
    ("incident/audience/rows.py", "from incident.audience.scan import Selection", "audience",
     "incident.audience.rows -> incident.audience.scan"),
    ("incident/cap/model.py", "from incident.cap.parse import parse_alert", "cap",
     "incident.cap.model -> incident.cap.parse"),
    ("incident/cap/parse.py", "from incident.cap.decide import decide", "cap",
     "incident.cap.parse -> incident.cap.decide"),
])
def test_a_contract_breaks_when_a_module_crosses_its_layer(
        tmp_path: Path, module: str, line: str, contract: str, shown: str) -> None:
    shutil.copytree(REPO / "incident", tmp_path / "incident",
                    ignore=shutil.ignore_patterns("__pycache__", "_data"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a", encoding="utf-8") as handle:
        handle.write(f"\n{line}\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{CONTRACTS[contract]} BROKEN" in result.stdout
    assert shown in result.stdout
