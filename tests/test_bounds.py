"""Times, sizes and hostile input have bounds (issue 11 §3 and §4): a clear refusal with exit 2
before anything is recorded, and whatever is already stored still renders."""

from __future__ import annotations

import email
import email.policy
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from cli_fixtures import Workspace
from incident.cli import cli
from incident.controls import one_line


def _start(ws: Workspace, *extra: str) -> str:
    args = ["start", "core-banking-outage", "--title", "Core down", "--queue-only", *extra]
    return str(ws.json(*args)["id"])


def _refused(ws: Workspace, *args: str) -> str:
    """Run a command expected to be refused as bad input; its stderr."""
    result = ws.run(*args, code=2)
    assert "Traceback" not in result.output
    return str(result.stderr)


# ---------------------------------------------------------------- times


@pytest.mark.parametrize(("args", "expected"), [
    (["--eta", "99999h"], ["--eta '99999h'", "more than 30d ahead", "limits.max_eta"]),
    (["--eta", "9999-12-31T23:59"], ["--eta", "more than 30d ahead"]),
    (["--detected-at", "1900-01-01T00:00"], ["--detected-at", "more than 30d ago"]),
])
def test_start_refuses_times_out_of_bounds(sqlite_ws: Workspace, args: list[str],
                                           expected: list[str]) -> None:
    stderr = _refused(sqlite_ws, "start", "core-banking-outage", "--title", "x", *args)
    for fragment in expected:
        assert fragment in stderr, stderr
    assert sqlite_ws.json("list", "--all") == []


def test_eta_and_update_refuse_an_eta_beyond_the_bound(sqlite_ws: Workspace) -> None:
    iid = _start(sqlite_ws)
    assert "more than 30d ahead" in _refused(sqlite_ws, "eta", iid, "99999h", "--reason", "x")
    assert "more than 30d ahead" in _refused(sqlite_ws, "update", iid, "-m", "x",
                                             "--eta", "9999-12-31T23:59")
    events = sqlite_ws.json("timeline", iid)["events"]
    assert [e["type"] for e in events if e["type"] in ("eta_revised", "updated")] == []


def test_the_eta_bound_is_configurable(sqlite_ws: Workspace) -> None:
    sqlite_ws.configure(lambda cfg: cfg.update(limits={"max_eta": "2h"}))
    assert "more than 2h ahead" in _refused(sqlite_ws, "start", "core-banking-outage",
                                            "--title", "x", "--eta", "3h")
    assert _start(sqlite_ws, "--eta", "90m")


def test_resolve_refuses_a_recovery_time_in_the_future(sqlite_ws: Workspace) -> None:
    iid = _start(sqlite_ws)
    stderr = _refused(sqlite_ws, "resolve", iid, "-m", "Restored", "--at", "2030-01-01T00:00")
    assert "--at '2030-01-01T00:00' is in the future" in stderr
    assert sqlite_ws.json("status", iid)["status"] == "investigating"


def test_a_stored_year_9999_eta_still_renders_everywhere(sqlite_ws: Workspace) -> None:
    """A record made before the bound (here: with a huge bound, in UTC) holds an ETA at the
    end of the calendar; shown east of UTC it is past year 9999. Every view still renders."""
    sqlite_ws.configure(lambda cfg: cfg.update(limits={"max_eta": "3000000d"},
                                               timezone="UTC"))
    iid = _start(sqlite_ws, "--eta", "9999-12-31T23:59")
    sqlite_ws.configure(lambda cfg: cfg.update(limits={}, timezone="Asia/Shanghai"))
    for fmt in ("md", "html", "json"):
        out = sqlite_ws.run("report", iid, "--format", fmt).stdout
        assert "9999-12-31" in out, fmt
    assert "9999-12-31" in sqlite_ws.run("status", iid).stdout
    assert "9999-12-31" in sqlite_ws.run("timeline", iid).stdout
    sqlite_ws.run("resolve", iid, "-m", "Restored", "--queue-only")
    assert "9999-12-31" in sqlite_ws.run("report", iid, "--format", "html").stdout


# ---------------------------------------------------------------- hostile YAML

BOMB = "".join(
    ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)])


def test_an_alias_bomb_in_a_playbook_is_refused_at_once(sqlite_ws: Workspace) -> None:
    path = sqlite_ws.root / "playbooks" / "bomb.yaml"
    path.write_text(BOMB, "utf-8")
    started = time.monotonic()
    stderr = _refused(sqlite_ws, "playbooks", "validate", str(path))
    assert time.monotonic() - started < 10
    assert "bomb.yaml" in stderr and "more than 100,000 values" in stderr


def test_an_alias_bomb_in_the_config_is_refused_at_once(sqlite_ws: Workspace) -> None:
    sqlite_ws.config.write_text(sqlite_ws.config.read_text("utf-8") + BOMB, "utf-8")
    started = time.monotonic()
    stderr = _refused(sqlite_ws, "list")
    assert time.monotonic() - started < 10
    assert "incident.yaml" in stderr and "aliases" in stderr


def test_a_duplicate_key_is_refused_naming_both_lines(sqlite_ws: Workspace) -> None:
    text = sqlite_ws.config.read_text("utf-8")
    first = next(n for n, line in enumerate(text.splitlines(), 1)
                 if line.startswith("timezone:"))
    sqlite_ws.config.write_text(text + "timezone: UTC\n", "utf-8")
    second = len(sqlite_ws.config.read_text("utf-8").splitlines())
    stderr = _refused(sqlite_ws, "list")
    assert f"incident.yaml:{second}: timezone" in stderr
    assert f"lines {first} and {second}" in stderr


def test_a_duplicate_key_in_a_playbook_is_refused(sqlite_ws: Workspace) -> None:
    source = sqlite_ws.root / "playbooks" / "core-banking-outage.yaml"
    text = source.read_text("utf-8")
    path = sqlite_ws.root / "playbooks" / "twice.yaml"
    path.write_text(text.replace("kind:", "kind: natural_disaster\nkind:", 1), "utf-8")
    stderr = _refused(sqlite_ws, "playbooks", "validate", str(path))
    assert "twice.yaml:" in stderr and "'kind' twice" in stderr


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(("amount", "expected"), [
    ("1e309", "is not a number"), ("1e12", "is not a number"), ("1_000", "is not a number"),
    ("2000000000", "is more than 1,000,000,000"), ("inf", "is not a number"),
    ("-5", "is not a number"), ("1.234", "at most 2 decimals")])
def test_manual_log_refuses_an_absurd_amount(sqlite_ws: Workspace, amount: str,
                                             expected: str) -> None:
    iid = _start(sqlite_ws)
    stderr = _refused(sqlite_ws, "manual", "log", iid, "--customer", "C1", "--request", "Cash",
                      "--amount", amount)
    assert f"--amount {amount!r}" in stderr and expected in stderr
    sqlite_ws.run("manual", "log", iid, "--customer", "C1", "--request", "Cash",
                  "--amount", "999999999.99")
    assert [c["amount"] for c in sqlite_ws.json("manual", "list", iid)["cases"]] == [
        "999999999.99"]


def _events(ws: Workspace, iid: str) -> list[str]:
    return [e["type"] for e in ws.json("timeline", iid)["events"]]


def test_an_update_too_long_for_an_sms_is_refused_before_it_is_recorded(
        sqlite_ws: Workspace) -> None:
    iid = _start(sqlite_ws)
    before = _events(sqlite_ws, iid), sqlite_ws.json("status", iid)["deliveries"]
    stderr = _refused(sqlite_ws, "update", iid, "-m", "x" * 100_000)
    assert "sms.en" in stderr and "the limit is 1,600" in stderr
    length = int(stderr.split("sms text would be ")[1].split(" characters")[0].replace(",", ""))
    assert length > 100_000
    assert "nothing was recorded" in stderr
    assert (_events(sqlite_ws, iid), sqlite_ws.json("status", iid)["deliveries"]) == before
    sqlite_ws.run("update", iid, "-m", "x" * 1000, "--queue-only")  # fits in one SMS body


def test_email_text_has_its_own_configurable_bound(sqlite_ws: Workspace) -> None:
    sqlite_ws.configure(lambda cfg: cfg.update(limits={"email_chars": 3000}))
    iid = _start(sqlite_ws)
    stderr = _refused(sqlite_ws, "resolve", iid, "-m", "y" * 1300)
    assert "email.en" in stderr and "the limit is 3,000" in stderr
    assert "resolved" not in _events(sqlite_ws, iid)


# ---------------------------------------------------------------- terminal safety

HOSTILE_TITLE = "\x1b]0;pwned\x07\x1b[31mRed [/bold] [link=x]y\x00\u202ez"


def test_a_hostile_title_is_printed_as_text_by_every_view(sqlite_ws: Workspace) -> None:
    iid = str(sqlite_ws.json("start", "core-banking-outage", "--title", HOSTILE_TITLE,
                             "--queue-only")["id"])
    outputs = {args[0]: sqlite_ws.run(*args).output for args in (
        ["status", iid], ["status"], ["list"], ["timeline", iid], ["report", iid])}
    for command, output in outputs.items():
        for raw in ("\x1b", "\x07", "\x00", "\u202e"):
            assert raw not in output, (command, raw)
        assert "[/bold" in output, command  # shown as typed, not read as markup
    # The title is recorded as one plain line (it becomes a Subject header and an SMS):
    # its control characters are gone, its markup-like text stays text.
    assert "]0;pwned [31mRed [/bold] [link=x]y" in outputs["timeline"]
    assert sqlite_ws.json("status", iid)["title"] == one_line(HOSTILE_TITLE)
    # Free text recorded as typed (a manual case's request) is made visible when printed.
    sqlite_ws.run("manual", "log", iid, "--customer", "C1", "--request", HOSTILE_TITLE)
    for args in (["timeline", iid], ["manual", "list", iid]):
        output = sqlite_ws.run(*args, env={"COLUMNS": "400"}).output
        assert not any(raw in output for raw in ("\x1b", "\x07", "\x00", "\u202e")), args
        assert "␛]0;pwned␇␛[31mRed [/bold]" in output, args


def test_control_characters_in_a_csv_name_reach_no_header_and_no_sms(
        sqlite_ws: Workspace) -> None:
    hostile = '"Li\x00 Lei\x1b[31m\r\nBcc: victim@example.org\u202e\x07"'
    sqlite_ws.write_customers([
        f"c1,{hostile},li@example.com,+8613800138001,en,retail,guangdong,gd-sz,savings,normal"])
    iid = str(sqlite_ws.json("start", "core-banking-outage", "--title", "Core down")["id"])
    [eml] = sqlite_ws.outbox_files(iid, "eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == '"Li Lei [31m Bcc: victim@example.org" <li@example.com>'
    assert message["Bcc"] is None
    text = message.get_body(("plain",)).get_content()
    [sms] = sqlite_ws.outbox_files(iid, "json")
    body = json.loads(sms.read_text("utf-8"))["body"]
    for part in (eml.read_bytes().decode("ascii"), text, body):
        assert not any(c in part for c in "\x00\x1b\x07\u202e"), part
    assert "Li Lei [31m Bcc: victim@example.org" in body + text


def test_control_characters_typed_by_the_supervisor_reach_no_header_and_no_sms(
        sqlite_ws: Workspace) -> None:
    sqlite_ws.write_customers([
        "c1,Li Lei,li@example.com,+8613800138001,en,retail,guangdong,gd-sz,savings,normal"])
    iid = str(sqlite_ws.json("start", "core-banking-outage", "--title",
                             "Core down\r\nBcc: victim@example.org\x1b[31m")["id"])
    sqlite_ws.json("update", iid, "--message", "Step one\x1b]0;owned\x07\r\nstep two\x00",
                   "--message-zh", "第一步\x1b[2J")
    sqlite_ws.json("eta", iid, "3h", "--reason", "Slower\x08\x08\x08 than planned")
    emails = sqlite_ws.outbox_files(iid, "eml")
    bodies = [json.loads(p.read_text("utf-8"))["body"] for p in sqlite_ws.outbox_files(iid, "json")]
    assert len(emails) == 3 and len(bodies) == 3
    for eml in emails:
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["Bcc"] is None
        assert "Core down Bcc: victim@example.org" in message["Subject"]
        text = message.get_body(("plain",)).get_content()
        assert not any(c in text + message["Subject"] for c in "\x00\x1b\x07\x08\r"), text
    for body in bodies:
        assert not any(c in body for c in "\x00\x1b\x07\x08\r"), body
    assert any("Step one]0;owned\nstep two" in b for b in bodies)


# ---------------------------------------------------------------- paths and missing config


def test_init_into_a_path_under_a_file_is_bad_input(tmp_path: Path) -> None:
    # As root, permissions are ignored: a regular file where a folder should be fails anyway.
    (tmp_path / "afile").write_text("x", "utf-8")
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "afile" / "ops")],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"cannot write {tmp_path / 'afile' / 'ops'}" in result.stderr
    assert "Not a directory" in result.stderr


@pytest.mark.parametrize("where", ["missing/failed.csv", "afile/failed.csv"])
def test_failed_export_to_a_missing_folder_is_bad_input(sqlite_ws: Workspace,
                                                         where: str) -> None:
    iid = _start(sqlite_ws)
    (sqlite_ws.root / "afile").write_text("x", "utf-8")
    target = sqlite_ws.root / where
    stderr = _refused(sqlite_ws, "failed", iid, "--export", str(target))
    assert f"cannot write {target}" in stderr


@pytest.mark.parametrize("args", [["list"], ["status"], ["timeline", "X"], ["report", "X"],
                                  ["verify"], ["actions"], ["manual", "list", "X"]])
def test_reading_a_folder_with_no_config_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    for name in ("INCIDENT_CONFIG", "INCIDENT_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "no incident.yaml and no database here" in result.stderr
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_markdown_report_leaves_no_live_link_from_data(sqlite_ws: Workspace) -> None:
    link = "[x](javascript:alert(1)) ![i](javascript:alert(2))"
    iid = str(sqlite_ws.json("start", "core-banking-outage", "--title", f"Core {link}",
                             "--queue-only")["id"])
    sqlite_ws.run("note", iid, "--section", "summary", f"See {link}")
    sqlite_ws.run("manual", "log", iid, "--customer", "C1", "--request", f"Cash {link}")
    text = sqlite_ws.run("report", iid, "--format", "md").stdout
    # A permissive renderer (a wiki that does not filter URLs) shows every link it parses.
    renderer = MarkdownIt("commonmark").enable("table")
    renderer.validateLink = lambda url: True
    html = renderer.render(text)
    assert "javascript:" not in " ".join(
        str(token.attrGet("href") or token.attrGet("src")) for block in renderer.parse(text)
        for token in block.children or [])
    assert 'href="javascript' not in html and 'src="javascript' not in html
    assert html.count("[x](javascript:alert(1))") >= 3  # shown as text, three times


# ---------------------------------------------------------------- arguments from outside


def test_an_argument_that_is_not_utf8_is_bad_input_not_a_traceback(
        sqlite_ws: Workspace) -> None:
    # What a terminal passes for a stray \xff byte (surrogateescape): it reached the database
    # driver and ended in a UnicodeEncodeError traceback, exit 1.
    iid = _start(sqlite_ws)
    for args in (["update", iid, "--message", "bad \udcff byte"],
                 ["start", "core-banking-outage", "--title", "x\udc9by", "--dry-run"],
                 ["manual", "log", iid, "--customer", "C\udcff", "--request", "r"]):
        result = sqlite_ws.run(*args, code=2)
        assert "is not valid UTF-8" in result.stderr and "Traceback" not in result.output
    assert [e["type"] for e in sqlite_ws.json("timeline", iid)["events"]].count("updated") == 0


@pytest.mark.parametrize("interval", ["1e12", "1e309", "nan", "0.5"])
def test_watch_refuses_an_interval_out_of_range(sqlite_ws: Workspace, interval: str) -> None:
    iid = _start(sqlite_ws)
    result = sqlite_ws.run("watch", iid, "--interval", interval, code=2)
    assert "--interval" in result.stderr and "Traceback" not in result.output


def test_sql_wildcards_in_an_id_are_characters(sqlite_ws: Workspace) -> None:
    iid = _start(sqlite_ws)
    for given in ("%", iid[-6:-2] + "__", "%" + iid[-6:]):
        result = sqlite_ws.run("status", given, code=2)
        assert "no incident matches" in result.stderr
    assert sqlite_ws.json("status", iid[-6:])["id"] == iid
