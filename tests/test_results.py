"""The response layer as a library: results carry the outcome the exit code comes from (in one
place, App.conclude), errors name fields in domain words that the command line renames to its
own options, and the use cases run without click."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli_fixtures import Workspace
from incident.delivery import DeliveryReport
from incident.errors import ExitCode, InvalidValue
from incident.response import Response
from incident.response.results import Outcome, SendResult
from incident.settings import load_runtime
from incident.store.deliveries import Waiting


def _report(**given: object) -> DeliveryReport:
    values: dict[str, object] = {"sent": 5, "failed": 0, "pending": 0, "interrupted": False,
                                 "counts": {}, "elapsed": 0.1}
    values.update(given)
    return DeliveryReport(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("report", "outcome", "code", "says"), [
    (None, Outcome.SUCCESS, ExitCode.OK, None),  # queued for workers
    (_report(), Outcome.SUCCESS, ExitCode.OK, None),
    (_report(failed=2), Outcome.PARTIAL, ExitCode.PARTIAL, None),
    (_report(fatal="535 authentication failed for ops@example.com", pending=4),
     Outcome.ERROR, ExitCode.FAILED, "sending stopped: 535 authentication failed"),
    (_report(interrupted=True, pending=3), Outcome.ERROR, ExitCode.FAILED,
     "sending interrupted after 5 messages; 3 stay pending"),
    (_report(failed=1, waiting=[Waiting("sms", "twilio", 2, "HTTP 503", "http-5xx")]),
     Outcome.ERROR, ExitCode.FAILED, "2 messages not sent — sms: 2 pending, last error: HTTP 503"),
])
def test_a_send_result_says_its_outcome_and_exit_code(
        report: DeliveryReport | None, outcome: Outcome, code: int, says: str | None) -> None:
    result = SendResult(report=report, incident_id="INC-20261205-A1B2C3")

    assert result.outcome is outcome
    assert result.exit_code == code
    problem = result.problem
    if says is None:
        assert problem is None
    else:
        assert problem is not None and problem.message.startswith(says)
        assert "ops@example.com" not in problem.message  # contacts masked
        assert "incident deliver A1B2C3" in (problem.hint or "")


def test_an_error_names_its_field_in_domain_words_and_the_cli_by_its_option(
        sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    response = Response(load_runtime(str(ws.config), db=ws.db, operator=ws.operator))

    with pytest.raises(InvalidValue) as refused:
        response.lifecycle.start(playbook="core-banking-outage", title=" \t ", eta="2h")
    assert refused.value.field == "title"
    assert refused.value.message == "title must not be empty"

    shown = ws.run("start", "core-banking-outage", "--title", " ", "--eta", "2h", code=2)
    assert "--title must not be empty" in shown.stderr

    iid = ws.json("start", "core-banking-outage", "--title", "Down", "--eta", "2h",
                  "--queue-only")["id"]
    with pytest.raises(InvalidValue) as refused:
        response.lifecycle.revise_eta(iid, when="99999h", reason="later")
    assert refused.value.message.startswith("when '99999h' is more than")
    shown = ws.run("eta", iid, "99999h", "--reason", "later", code=2)
    assert "WHEN '99999h' is more than" in shown.stderr  # an argument: its metavar


def test_the_use_cases_import_no_click_or_rich() -> None:
    code = ("import sys, incident.response, incident.response.results; "
            "print(sorted(m for m in ('click', 'rich') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60)
    assert found.stdout.strip() == "[]"
