from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/servers.py, any import mode
import servers

REPO_ROOT = Path(__file__).resolve().parent.parent
# Twilio's published OpenAPI description, vendored (MIT, tests/data/twilio/README.md) so that a
# clone anywhere runs the contract tests.
TWILIO_SPEC = REPO_ROOT / "tests" / "data" / "twilio" / "twilio_api_v2010.json"


# --- real servers (tests/servers.py). A server that cannot start is an error, never a skip. ----


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL (postgresql+psycopg://...) of an empty database on a PostgreSQL server
    started once per session; or $INCIDENT_TEST_PG_URL if set (a bare postgresql:// URL is
    switched to the psycopg driver)."""
    external = os.environ.get("INCIDENT_TEST_PG_URL")
    if external:
        from sqlalchemy.engine import make_url

        url = make_url(external)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        yield url.render_as_string(hide_password=False)
        return
    # Not under pytest's basetemp: every pytest session resets /tmp/pytest-of-<user> to 0700,
    # which would cut the `postgres` user off from a data directory inside it mid-run.
    base = Path(tempfile.mkdtemp(prefix="incident-pg-"))
    server = servers.start_postgres(base)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Callable[..., servers.SmtpSink]]:
    """Factory: ``smtp_sink(*smtp_sink_options)`` starts a Postfix smtp-sink (``.host``,
    ``.port``) for this test, e.g. ``smtp_sink("-f", "RCPT")`` rejects RCPT TO with a 5xx."""
    started: list[servers.SmtpSink] = []

    def start(*args: str, port: int | None = None) -> servers.SmtpSink:
        sink = servers.start_smtp_sink(tmp_path / f"smtp-sink-{len(started)}", *args, port=port)
        started.append(sink)
        return sink

    yield start
    for sink in reversed(started):
        sink.stop()


@pytest.fixture(scope="session")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.PrismServer]:
    """Prism mocking Twilio's REST API v2010 (``.url`` stands in for https://api.twilio.com)."""
    if not TWILIO_SPEC.is_file():
        raise RuntimeError(f"Twilio OpenAPI description not found at {TWILIO_SPEC}")
    server = servers.start_prism(TWILIO_SPEC, tmp_path_factory.mktemp("prism"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy URL of an empty database: a SQLite file, or a fresh PostgreSQL database
    created for this test on the session server and dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/incident.db"
        return

    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(request.getfixturevalue("postgres_url"))
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The command-line workspace fixtures (ws, sqlite_ws) live in tests/cli_fixtures.py.
pytest_plugins = ["cli_fixtures"]
