"""The server fixtures start real servers that behave as the other tests expect."""

from __future__ import annotations

import base64
import json
import re
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from servers import PrismServer, SmtpSink

    SinkFactory = Callable[..., SmtpSink]

ACCOUNT_SID = "AC" + "0" * 32
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


def _pg_conninfo(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


@pytest.mark.postgres
def test_postgres_is_real_and_recent(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    with psycopg.connect(_pg_conninfo(postgres_url)) as conn:
        (version,) = conn.execute("select version()").fetchone()  # type: ignore[misc]
        (db,) = conn.execute("select current_database()").fetchone()  # type: ignore[misc]
    match = re.search(r"PostgreSQL (\d+)", version)
    assert match, version
    assert int(match.group(1)) >= 15, version
    assert db == make_url(postgres_url).database


def test_db_url_is_a_fresh_empty_database(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (id integer primary key, name text)"))
            conn.execute(sa.text("insert into t (id, name) values (1, 'ä€')"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select name from t")).scalar_one() == "ä€"
    finally:
        engine.dispose()
    if db_url.startswith("postgresql"):
        assert (make_url(db_url).database or "").startswith("t_")


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "incident@bank.example"
    msg["To"] = "customer@example.org"
    msg["Subject"] = "Service disruption"
    msg.set_content("Online banking is unavailable; we are working on it.")
    return msg


def test_smtp_sink_accepts_mail(smtp_sink: SinkFactory) -> None:
    sink = smtp_sink()
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
        assert smtp.ehlo()[0] == 250
        assert smtp.mail("incident@bank.example")[0] == 250
        assert smtp.rcpt("customer@example.org")[0] == 250
        code, _ = smtp.data(_message().as_bytes())
        assert code == 250
    # and through the high-level API: no refused recipients
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
        assert smtp.send_message(_message()) == {}


def test_smtp_sink_can_reject_recipients(smtp_sink: SinkFactory) -> None:
    sink = smtp_sink("-f", "RCPT")  # -f: reject these commands with a hard (5xx) error
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
        assert smtp.mail("incident@bank.example")[0] == 250
        code, _ = smtp.rcpt("customer@example.org")
        assert 500 <= code < 600
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.send_message(_message())


def test_two_smtp_sinks_in_one_test_get_different_ports(smtp_sink: SinkFactory) -> None:
    a, b = smtp_sink(), smtp_sink("-r", "MAIL")  # -r: soft (4xx) rejection
    assert a.port != b.port
    with smtplib.SMTP(b.host, b.port, timeout=10) as smtp:
        assert 400 <= smtp.mail("incident@bank.example")[0] < 500


def _post_form(url: str, form: dict[str, str], *, auth: bool = True) -> tuple[int, Any]:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if auth:
        token = base64.b64encode(f"{ACCOUNT_SID}:test-auth-token".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_prism_creates_a_message(prism: PrismServer) -> None:
    status, body = _post_form(
        prism.url + MESSAGES_PATH,
        {"To": "+15005550006", "From": "+15005550001", "Body": "Online banking is down"},
    )
    assert status == 201, body
    assert body["sid"].startswith(("SM", "MM"))
    assert "status" in body


def test_prism_rejects_a_message_without_to(prism: PrismServer) -> None:
    status, body = _post_form(
        prism.url + MESSAGES_PATH, {"From": "+15005550001", "Body": "Online banking is down"}
    )
    assert 400 <= status < 500, body
    assert "To" in json.dumps(body.get("validation", body))


def test_prism_requires_basic_auth(prism: PrismServer) -> None:
    status, _ = _post_form(
        prism.url + MESSAGES_PATH,
        {"To": "+15005550006", "From": "+15005550001", "Body": "x"},
        auth=False,
    )
    assert status == 401
