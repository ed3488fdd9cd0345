"""Start-up: loading the command line (what `incident --help` does) imports none of SQLAlchemy,
twilio and aiosmtplib — each command imports what it uses when it runs. Checked in a fresh
interpreter, since this test session has imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import incident

PACKAGE_PARENT = str(Path(incident.__file__).resolve().parent.parent)
HEAVY = ("sqlalchemy", "twilio", "aiosmtplib")


def imported_by(code: str, packages: tuple[str, ...] = HEAVY) -> list[str]:
    """The `packages` in sys.modules after running `code` in a fresh interpreter."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps(sorted(m for m in {packages!r} if m in sys.modules)))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, check=True, timeout=60)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_loading_the_command_line_imports_no_heavy_package() -> None:
    assert imported_by("import incident.cli") == []


@pytest.mark.parametrize("args", [["--help"], ["start", "--help"], ["deliver", "--help"],
                                  ["report", "--help"], ["warnings", "ingest", "--help"]])
def test_help_imports_no_heavy_package(args: list[str]) -> None:
    code = ("import contextlib, io\nfrom incident.cli import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()), "
            "contextlib.suppress(SystemExit):\n"
            f"    cli.main({args!r}, prog_name='incident')")
    assert imported_by(code) == []


def test_a_command_still_imports_what_it_uses() -> None:
    # The probe can see an import (a test that cannot fail is worse than none).
    assert imported_by("import incident.response") == ["sqlalchemy"]


def test_the_report_options_offer_the_report_packages_choices() -> None:
    # cli/report.py spells the choices out so as not to import incident.report at start-up.
    from incident import report
    from incident.cli import report as command
    from incident.report.labels import REPORT_LANGUAGES

    assert command.FORMATS == report.FORMATS
    assert command.SECTIONS == report.SECTIONS
    assert command.REPORT_LANGUAGES == REPORT_LANGUAGES


def test_the_webhook_channel_imports_aiohttp_only_to_send() -> None:
    # `start` and `deliver` build it whenever webhooks go over http; most runs post none, and
    # aiohttp costs about 0.5 s of CPU to import (its TLS contexts included).
    build = ("from incident.channels.webhook import WebhookChannel\n"
             "channel = WebhookChannel({})\n")
    assert imported_by(build, ("aiohttp", "yarl")) == []
    assert imported_by(build + "channel._client", ("aiohttp",)) == []
    assert imported_by(build + "import asyncio\n"
                       "async def main():\n    channel._client()\n    await channel.close()\n"
                       "asyncio.run(main())", ("aiohttp",)) == ["aiohttp"]
