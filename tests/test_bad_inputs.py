"""Bad input gives exit 2 and a message naming file, line and field — never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cli_fixtures import Workspace

GOOD_ROW = "c1,张伟,zhang@example.com,+8613800138000,zh-CN,retail,guangdong,gd-sz,savings,normal"


def _playbook(ws: Workspace, name: str, edit: Callable[[str], str]) -> Path:
    """A copy of the core-banking playbook with one edit, in the workspace's playbooks/."""
    source = (ws.root / "playbooks" / "core-banking-outage.yaml").read_text("utf-8")
    changed = edit(source)
    assert changed != source, "the edit did not apply"
    path = ws.root / "playbooks" / f"{name}.yaml"
    path.write_text(changed.replace("id: core-banking-outage", f"id: {name}", 1), "utf-8")
    return path


def _start(*extra: str) -> list[str]:
    return ["start", "core-banking-outage", "--title", "Core down", *extra]


def _lines_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def case_malformed_yaml(ws: Workspace) -> tuple[list[str], list[str]]:
    path = _playbook(ws, "broken", lambda s: s.replace("kind:", "kind: [unclosed\n  x:", 1))
    return ["playbooks", "validate", str(path)], [f"{path.name}:", "not valid YAML"]


def case_unknown_key(ws: Workspace) -> tuple[list[str], list[str]]:
    path = _playbook(ws, "typo", lambda s: s.replace("kind:", "knid: x\nkind:", 1))
    line = _lines_of(path, "knid:")
    return ["playbooks", "validate", str(path)], [f"{path.name}:{line}", "knid", "unknown key"]


def case_bad_duration(ws: Workspace) -> tuple[list[str], list[str]]:
    def edit(s: str) -> str:
        head, sep, tail = s.partition("first_notice_within:")
        _value, nl, rest = tail.partition("\n")
        return head + sep + " soon" + nl + rest
    path = _playbook(ws, "slow", edit)
    line = _lines_of(path, "first_notice_within:")
    return (["playbooks", "validate", str(path)],
            [f"{path.name}:{line}", "principles.fast_response.first_notice_within", "duration"])


def case_duration_without_unit(ws: Workspace) -> tuple[list[str], list[str]]:
    def edit(s: str) -> str:
        head, sep, tail = s.partition("update_every:")
        _value, nl, rest = tail.partition("\n")
        return head + sep + " 60" + nl + rest
    path = _playbook(ws, "unitless", edit)
    return ["playbooks", "validate", str(path)], [f"{path.name}:", "update_every", "no unit"]


def case_missing_template_set(ws: Workspace) -> tuple[list[str], list[str]]:
    path = _playbook(ws, "notemplates", lambda s: s.replace(
        "template_set: system_failure", "template_set: no_such_set", 1))
    return ["playbooks", "validate", str(path)], ["no_such_set/initial/", "not found"]


def case_template_undefined_variable(ws: Workspace) -> tuple[list[str], list[str]]:
    target = ws.root / "templates" / "system_failure" / "update" / "sms.en.txt"
    target.write_text(target.read_text("utf-8") + "\n{{ incident.no_such_field }}\n", "utf-8")
    line = len(target.read_text("utf-8").splitlines())
    playbook = ws.root / "playbooks" / "core-banking-outage.yaml"
    return ["playbooks", "validate", str(playbook)], [
        f"sms.en.txt:{line}", "no_such_field"]


def case_template_syntax_error(ws: Workspace) -> tuple[list[str], list[str]]:
    target = ws.root / "templates" / "system_failure" / "initial" / "email.text.zh-CN.txt"
    target.write_text("{% if %}\n" + target.read_text("utf-8"), "utf-8")
    return _start(), ["email.text.zh-CN.txt:1", "nothing was recorded"]


def case_csv_all_rows_broken(ws: Workspace) -> tuple[list[str], list[str]]:
    path = ws.write_customers(["c1,,bad-email,,zh-CN,,,,,", "c2,Li,,12345,en,,,,,"], "bad.csv")
    return _start("--audience", str(path)), ["bad.csv:2", "bad.csv:3", "phone"]


def case_csv_missing_column(ws: Workspace) -> tuple[list[str], list[str]]:
    path = ws.root / "nocol.csv"
    path.write_text("id,email,phone\nc1,a@example.com,\n", "utf-8")
    return _start("--audience", str(path)), ["nocol.csv", "name"]


def case_missing_audience_file(ws: Workspace) -> tuple[list[str], list[str]]:
    return _start("--audience", str(ws.root / "nowhere.csv")), ["nowhere.csv"]


def case_unknown_incident(ws: Workspace) -> tuple[list[str], list[str]]:
    return ["status", "ZZZZZZ"], ["no incident matches 'ZZZZZZ'"]


def case_wrong_transition_close_open(ws: Workspace) -> tuple[list[str], list[str]]:
    incident_id = ws.json("start", "core-banking-outage", "--title", "x", "--queue-only")["id"]
    return ["close", incident_id], [f"cannot close {incident_id}", "investigating"]


def case_wrong_transition_update_resolved(ws: Workspace) -> tuple[list[str], list[str]]:
    incident_id = ws.json("start", "core-banking-outage", "--title", "x", "--queue-only")["id"]
    ws.run("resolve", incident_id, "-m", "ok", "--queue-only")
    return ["update", incident_id, "-m", "more"], [f"cannot update {incident_id}", "resolved"]


def case_eta_in_the_past(ws: Workspace) -> tuple[list[str], list[str]]:
    return _start("--eta", "2001-01-01T10:00"), ["--eta", "not in the future"]


def case_bad_eta_text(ws: Workspace) -> tuple[list[str], list[str]]:
    return _start("--eta", "soonish"), ["not a time", "soonish"]


def case_unknown_severity(ws: Workspace) -> tuple[list[str], list[str]]:
    return _start("--severity", "V"), ["--severity 'V'", "grades"]


def case_unknown_playbook(ws: Workspace) -> tuple[list[str], list[str]]:
    return ["start", "volcano", "--title", "x"], ["no playbook called 'volcano'"]


def case_config_unknown_key(ws: Workspace) -> tuple[list[str], list[str]]:
    ws.set_config("timezone: Asia/Shanghai", "timezone: Asia/Shanghai\ntimezon: UTC")
    line = _lines_of(ws.config, "timezon: UTC")
    return ["list"], [f"incident.yaml:{line}", "timezon", "unknown key"]


def case_config_bad_timezone(ws: Workspace) -> tuple[list[str], list[str]]:
    ws.set_config("timezone: Asia/Shanghai", "timezone: Mars/Olympus")
    return ["list"], ["incident.yaml:", "timezone", "Mars/Olympus"]


def case_detected_in_future(ws: Workspace) -> tuple[list[str], list[str]]:
    return _start("--detected-at", "2999-01-01T00:00"), ["--detected-at", "future"]


def case_status_choice(ws: Workspace) -> tuple[list[str], list[str]]:
    return ["update", "X", "-m", "x", "--status", "fixed"], ["--status", "fixed"]


CASES = {name.removeprefix("case_"): fn for name, fn in dict(globals()).items()
         if name.startswith("case_")}


def test_there_are_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_a_located_message(sqlite_ws: Workspace, name: str) -> None:
    args, expected = CASES[name](sqlite_ws)
    result = sqlite_ws.run(*args, code=2)
    assert "Traceback" not in result.output
    for fragment in expected:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"
    # Nothing half-recorded: a refused start leaves no incident behind.
    if args[0] == "start":
        assert sqlite_ws.json("list", "--all") == []


def test_broken_rows_are_reported_with_line_numbers_and_skipped(sqlite_ws: Workspace) -> None:
    path = sqlite_ws.write_customers([GOOD_ROW, "c2,Li Lei,not-an-email,,en,,,,,",
                                      "c3,Wang,w@example.com,+86123,zh-CN,,,,,"], "mixed.csv")
    result = sqlite_ws.run("start", "core-banking-outage", "--title", "Core down",
                           "--audience", str(path))
    assert "mixed.csv:3" in result.stderr and "email" in result.stderr
    assert "mixed.csv:4" in result.stderr and "phone" in result.stderr
    data = sqlite_ws.json("list")
    assert len(data) == 1
