"""What the use cases return: result objects the front end renders, and whose `outcome` gives
the exit code in one place (cli/app.py `App.conclude`).

A use case that cannot do what it was asked raises an IncidentError (nothing recorded). One
that did it returns a Result: `success`, or `partial` when part of it did not happen (a message
failed permanently), or `error` when what it recorded could not be carried out (the messages
stay pending: `problem` says why and what to run). `notes` are what the operator should know
besides (a first notice completed after a crash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from incident.errors import DeliveryError, ExitCode, Location
from incident.models import Phase
from incident.playbooks import Playbook
from incident.state import IncidentView

if TYPE_CHECKING:
    from incident.checklist import Attention, Item
    from incident.delivery import DeliveryReport
    from incident.models import Event
    from incident.response.recording import PendingRows


class Outcome(StrEnum):
    """How a use case went."""

    SUCCESS = "success"
    PARTIAL = "partial"  # done, but some of it failed for good (exit 3)
    ERROR = "error"  # recorded, but not carried out (exit 1; nothing lost)


EXIT_CODES = {Outcome.SUCCESS: ExitCode.OK, Outcome.PARTIAL: ExitCode.PARTIAL,
              Outcome.ERROR: ExitCode.FAILED}


@dataclass(kw_only=True)
class Result:
    """The base of every result: an outcome and what the operator should know."""

    notes: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        """Success unless a subclass knows better."""
        return Outcome.SUCCESS

    @property
    def problem(self) -> DeliveryError | None:
        """Why the outcome is an error, with what to run (None unless it is)."""
        return None

    @property
    def exit_code(self) -> int:
        """The documented exit code of this outcome."""
        return EXIT_CODES[self.outcome]


@dataclass(kw_only=True)
class NoticeResult(Result):
    """A recorded event, the notice it carries (if any) and the incident's state after it."""

    incident_id: str
    seq: int
    phase: Phase | None
    messages: int
    view: IncidentView
    internal: int = 0  # messages of the internal notice recorded with it


@dataclass(kw_only=True)
class StartResult(NoticeResult):
    """What `start` recorded, plus what the audience file held.

    `pending` holds the notice's rows still to record (None once all are): the send records
    them while sending (or all first, when only queued).
    """

    audience_path: str = ""
    recipients: int = 0
    skipped_rows: list[tuple[Location, str]] = field(default_factory=list)
    # rows kept without a bad contact: notified on their other channels (the problems)
    partial_rows: list[tuple[Location, str]] = field(default_factory=list)
    unreachable: int = 0  # selected customers with no contact on the notice's channels
    pending: PendingRows | None = None
    # The audience is still being read (the early path of response/recording.py): `messages`
    # is a guess and the audience's counts and problems those so far, until `pending` is done.
    counting: bool = False


@dataclass(kw_only=True)
class DryRunPlan(Result):
    """What `start --dry-run` would send: counts, segments and time at the configured rates."""

    playbook: Playbook
    audience_path: str
    recipients: int
    messages: dict[str, dict[str, int]]  # channel -> language -> messages
    sms: dict[str, dict[str, Any]]  # language -> {encoding, segments, chars, text}
    estimated_seconds: dict[str, float]  # channel -> until the last message (call) is done
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # language -> {calls,
    # seconds: about how long one call lasts, ringing and both readings included}
    skipped_rows: list[tuple[Location, str]]
    partial_rows: list[tuple[Location, str]] = field(default_factory=list)
    unreachable: int = 0


@dataclass(kw_only=True)
class StatusResult(Result):
    """An incident's state with its delivery counts and latest permanent failures."""

    view: IncidentView
    counts: dict[str, dict[str, int]]
    failures: list[Any]
    now: datetime
    retrying: list[Any] = field(default_factory=list)
    internal_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # to parties
    attention: list[Attention] = field(default_factory=list)  # what falls due
    # Customer rows by channel and delivery state after `sent`, from receipts (issue 14).
    receipts: dict[str, dict[str, int]] = field(default_factory=dict)
    rollcall: dict[str, Any] | None = None  # the staff roll-call's headcount, if one started

    @property
    def update_overdue(self) -> bool:
        """The promised next customer update is late."""
        due = self.view.next_update_due
        return due is not None and due < self.now

    @property
    def eta_passed(self) -> bool:
        """The announced ETA has passed while the incident is still open."""
        return self.view.status.is_open and self.view.eta is not None and self.view.eta < self.now


@dataclass(kw_only=True)
class StepResult(Result):
    """What `incident step` recorded, and the action it ran (if any)."""

    result: NoticeResult
    item: Item
    ran: str | None  # "open_manual_channel" / "notify_parties" when the step's action ran


@dataclass(kw_only=True)
class SendResult(Result):
    """What sending a recorded notice (or the whole outbox) did; `report` is None when the
    messages were only queued for `incident deliver`."""

    report: DeliveryReport | None
    incident_id: str | None = None  # None: every incident's outbox

    @property
    def outcome(self) -> Outcome:
        """Error while messages are left unsent, partial when some failed for good."""
        report = self.report
        if report is None:
            return Outcome.SUCCESS
        if report.fatal or report.interrupted or report.left:
            return Outcome.ERROR
        return Outcome.PARTIAL if report.failed else Outcome.SUCCESS

    @property
    def problem(self) -> DeliveryError | None:
        """Why messages are left unsent (per channel, the last error, contacts masked) and
        what to run once the channel works: a channel that cannot work at all (credentials,
        relay), Ctrl-C, or retries still due when the foreground send stopped waiting."""
        from incident.privacy import scrub

        report = self.report
        if report is None or self.outcome is not Outcome.ERROR:
            return None
        resume = "incident deliver" + (f" {self.incident_id[-6:]}" if self.incident_id else "")
        if report.fatal:
            return DeliveryError(f"sending stopped: {scrub(report.fatal)}",
                                 hint=f"the notice is recorded and {report.pending} messages "
                                      f"stay pending; fix the channel, then run: {resume}")
        if report.interrupted:
            return DeliveryError(f"sending interrupted after {report.sent} messages; "
                                 f"{report.pending} stay pending", hint=f"resume with: {resume}")
        hint = ("they stay pending (nothing is lost); once the relay or provider works "
                f"again, run: {resume}")
        if report.foreign == report.left:
            hint = ("they stay pending for the transport they were recorded for; run "
                    f"`{resume}` with that config, or `{resume} --reroute-to-config-transport`")
        return DeliveryError(f"{report.left} messages not sent — {report.why_pending()}",
                             hint=hint)


@dataclass(kw_only=True)
class Sends(Result):
    """A result whose recorded messages may have been sent: the outcome is the sending's."""

    sent: SendResult | None = None

    @property
    def outcome(self) -> Outcome:
        """How sending went (success when nothing was sent)."""
        return self.sent.outcome if self.sent is not None else Outcome.SUCCESS

    @property
    def problem(self) -> DeliveryError | None:
        """Why sending failed, if it did."""
        return self.sent.problem if self.sent is not None else None


@dataclass(kw_only=True)
class Prepared(Result):
    """The outbox made ready for `incident deliver`: the incident (None: all), the reroutes
    recorded and what completing interrupted notices found (`notes`)."""

    incident_id: str | None
    rerouted: list[Event] = field(default_factory=list)


@dataclass(kw_only=True)
class AlertRound(Result):
    """One round of `incident watch`: the incidents watched, what was alerted on each, and
    the alerts recorded (their internal messages are then sent)."""

    watching: list[str]
    raised: dict[str, list[Attention]] = field(default_factory=dict)
    recorded: list[NoticeResult] = field(default_factory=list)
