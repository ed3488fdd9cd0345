"""The response layer: the toolkit's use cases, as a library that knows nothing of click.

Read top-down:

- `journal.py` — how every change is written: lock the incident, fold its events, check the
  transition, render and enqueue the notice, append the event (and the internal notice).
- the use cases, peers that depend on the journal and never on each other:
  `start.py` + `lifecycle.py` (declare, update, ETA, resolve, close), `sending.py` (send what
  is recorded, `deliver`, reroute), `manual.py` (the manual-handling channel and its cases),
  `coordination.py` (steps, parties, acks, alerts, regulator drafts), `postmortem.py` (notes,
  actions, reports), `warnings.py` (CAP alerts), `queries.py` (status, timeline, verify),
  `checks.py` (playbook checks), `bounces.py` (email bounces matched to the outbox),
  `escalation.py` (the next channel for unconfirmed messages), `replies.py` (customers'
  SMS and keypad replies: cases, opt-outs, one acknowledgement);
- `results.py` — what they return: result objects with an outcome the front end turns into an
  exit code.

`Response` puts them together over one Runtime and database; a front end (the CLI) builds one
and calls one use case per command. A new use case goes into the module of its peers (or a
new peer) and writes through `Journal.record`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from incident.response.journal import Journal
from incident.response.results import (
    NoticeResult,
    Result,
    SendResult,
    StartResult,
    StatusResult,
)
from incident.settings import Runtime
from incident.store import Store, deliveries

if TYPE_CHECKING:
    # Each use case is imported when first used (see Response): `incident start` must not
    # pay for the post-mortem reports, the status page, bounces, CAP warnings... before its
    # first message goes out. prometheus_client is imported by the commands that serve metrics.
    from incident.delivery import ProgressFn
    from incident.inbound.replies import InboundReply
    from incident.metrics.prometheus import Exporter
    from incident.response.bounces import Bounces
    from incident.response.coordination import Coordination
    from incident.response.escalation import Escalation, Escalations
    from incident.response.lifecycle import Lifecycle
    from incident.response.manual import ManualChannel
    from incident.response.optouts import Optouts
    from incident.response.page import StatusPage
    from incident.response.postmortem import PostMortem
    from incident.response.queries import Queries
    from incident.response.receipts import Polled, Receipts
    from incident.response.replies import Received, Replies
    from incident.response.rollcall import (
        Answered,
        EmailAnswers,
        Reminders,
        Rollcall,
        StartedRollcall,
    )
    from incident.response.sending import Sending
    from incident.response.warnings import Assessment, Warnings


class Response:
    """Every use case over one Runtime and database (opened on first use)."""

    def __init__(self, rt: Runtime, store: Store | None = None) -> None:
        self.rt = rt
        self.journal = Journal(rt, store)
        self.journal.on_public = self._public

    # The use cases, each built (and its module imported) on first use.

    @cached_property
    def lifecycle(self) -> Lifecycle:
        from incident.response.lifecycle import Lifecycle

        return Lifecycle(self.journal)

    @cached_property
    def sending(self) -> Sending:
        from incident.response.sending import Sending

        return Sending(self.journal)

    @cached_property
    def queries(self) -> Queries:
        from incident.response.queries import Queries

        return Queries(self.journal)

    @cached_property
    def manual(self) -> ManualChannel:
        from incident.response.manual import ManualChannel

        return ManualChannel(self.journal)

    @cached_property
    def coordination(self) -> Coordination:
        from incident.response.coordination import Coordination

        return Coordination(self.journal)

    @cached_property
    def postmortem(self) -> PostMortem:
        from incident.response.postmortem import PostMortem

        return PostMortem(self.journal)

    @cached_property
    def warnings(self) -> Warnings:
        from incident.response.warnings import Warnings

        return Warnings(self.journal)

    @cached_property
    def receipts(self) -> Receipts:
        from incident.response.receipts import Receipts

        return Receipts(self.journal)

    @cached_property
    def bounces(self) -> Bounces:
        from incident.response.bounces import Bounces

        return Bounces(self.journal)

    @cached_property
    def escalation(self) -> Escalation:
        from incident.response.escalation import Escalation

        return Escalation(self.journal)

    @cached_property
    def optouts(self) -> Optouts:
        from incident.response.optouts import Optouts

        return Optouts(self.journal)

    @cached_property
    def rollcall(self) -> Rollcall:
        from incident.response.rollcall import Rollcall

        return Rollcall(self.journal)

    @cached_property
    def page(self) -> StatusPage:
        from incident.response.page import StatusPage

        return StatusPage(self.journal)

    @cached_property
    def replies(self) -> Replies:
        from incident.response.replies import Replies

        return Replies(self.journal)

    def _public(self, result: NoticeResult) -> None:
        """A public notice was recorded: the status page is rebuilt, when there is one (its
        machinery is not even imported otherwise)."""
        if self.rt.settings.status_page.dir:
            self.page.after_notice(result)

    def escalate(self, ref: str | None = None) -> Escalations:
        """`incident escalate`: apply the due escalation steps, then send what they queued."""
        result = self.escalation.escalate(ref)
        reminded = self.rollcall.remind(ref)
        result.reminders = reminded.lines()
        if result.messages or any(r.messages for r in reminded.recorded):
            result.sent = self.sending.deliver(ref, complete=False)
        return result

    def status(self, ref: str) -> StatusResult:
        """`incident status ID` (and `watch`): the incident's status with its roll-call's
        headcount and branch readiness."""
        result = self.queries.status(ref)
        result.rollcall = self.rollcall.summary_of(result.view)
        return result

    def update(self, ref: str, *, reopen: Sequence[str] = (), **given: Any) -> NoticeResult:
        """`incident update` (`Lifecycle.update`); each branch of `reopen` that cannot open
        per the staff roll-call (staff able to work vs branches.csv min_staff) is warned about
        in the result's notes — a warning, not a refusal: the supervisor decides."""
        notes = self.rollcall.reopen_warnings(ref, reopen) if reopen else []
        result = self.lifecycle.update(ref, reopen=reopen, **given)
        result.notes = [*notes, *result.notes]
        return result

    def remind(self, ref: str | None = None) -> Reminders:
        """`incident rollcall remind`: apply the roll-call's due round, then send its calls."""
        result = self.rollcall.remind(ref)
        if any(r.messages for r in result.recorded):
            result.sent = self.sending.deliver(ref, complete=False)
        return result

    def rollcall_start(self, ref: str, **given: Any) -> StartedRollcall:
        """`incident rollcall start`: record the roll-call, then send its messages."""
        result = self.rollcall.start(ref, **given)
        result.sent = self.sending.send(result)
        return result

    def rollcall_answer(self, **given: Any) -> Answered | None:
        """A reply to a roll-call (`Rollcall.answer`), then its need-help alert sent."""
        result = self.rollcall.answer(**given)
        return self._alert_sent(result)

    def rollcall_enter(self, ref: str, **given: Any) -> Answered:
        """`incident rollcall answer`: an answer entered by a supervisor, then its alert sent."""
        result = self.rollcall.enter(ref, **given)
        self._alert_sent(result)
        return result

    def rollcall_replies(self, paths: Sequence[Path]) -> EmailAnswers:
        """`incident rollcall replies`: email replies recorded as answers, then the need-help
        alerts they raised sent."""
        result = self.rollcall.replies(paths)
        if any(a.result is not None and a.result.internal for a in result.answers):
            result.sent = self.sending.deliver(None, complete=False)
        return result

    def receive_reply(self, reply: InboundReply) -> Received | Answered:
        """A reply the receipts server or the poll took: a staff member's answer to an open
        roll-call first (recorded once per provider reference; a need-help alert sent), else
        a customer's reply (`Replies.receive`). A staff member's text that is no answer is
        kept as a reply, so nothing anyone sends is dropped."""
        from incident.response.replies import e164

        answered = self.rollcall_answer(
            sender=e164(reply.number), text=reply.body, provider_id=reply.sid,
            received_at=reply.at, via="voice" if reply.source == "keypad" else "sms")
        if answered is not None and answered.answer is not None:
            return answered
        return self.replies.receive(reply)

    def _alert_sent(self, result: Answered | None) -> Answered | None:
        if result is not None and result.result is not None and result.result.internal:
            result.sent = self.sending.send(result.result)
        return result

    def serve_receipts(self, *, host: str, port: int,
                       ready: Callable[[str, int], None]) -> Result:
        """`incident receipts serve`, applying due escalations on a timer meanwhile
        (receipts.escalate_every) so that what the receipts say is acted on."""
        return self.receipts.serve(host=host, port=port, ready=ready,
                                   tick=self._escalate_all, receive=self.receive_reply)

    def poll_receipts(self, ref: str | None, *, until: float) -> Polled:
        """`incident receipts poll`: the replies to our number, then the unsettled rows."""
        return self.receipts.poll(ref, until=until, receive=self.receive_reply)

    def _escalate_all(self) -> None:
        self.escalate()

    def deliver(self, ref: str | None = None, *,
                progress: ProgressFn | None = None) -> SendResult:
        """`incident deliver` (after `Sending.prepare`): send what is pending, then apply the
        escalations that fell due and send what they queued, in one report; what they did is
        in the result's notes."""
        sent = self.sending.deliver(ref, progress=progress, complete=False)
        first = sent.report
        if first is None or first.fatal or first.interrupted:
            return sent
        escalated = self.escalate(ref)
        notes = [*sent.notes, *escalated.lines()]
        if escalated.sent is None or escalated.sent.report is None:
            sent.notes = notes
            return sent
        after = escalated.sent
        assert after.report is not None
        after.report.sent += first.sent
        after.report.failed += first.failed
        after.report.fallbacks += first.fallbacks
        return SendResult(report=after.report, incident_id=sent.incident_id, notes=notes)

    def work(self, ref: str | None = None, *,
             progress: ProgressFn | None = None) -> SendResult:
        """`incident deliver` as a worker: `deliver` again whenever messages are queued, until
        SIGINT/SIGTERM (see worker.py)."""
        from incident.response.worker import work

        return work(lambda: self.deliver(ref, progress=progress))

    def serve_metrics(self, *, host: str, port: int) -> Exporter:
        """Serve this process's metrics at http://host:port/metrics (Prometheus' text format):
        what its dispatchers and receipts server do, and the outbox's queues read at each
        scrape. Raises an IncidentError (exit 1) when the port is taken."""
        from incident.metrics import prometheus

        store = self.journal.store

        def depths() -> list[tuple[str, str, int]]:
            with store.read() as conn:
                return deliveries.queue_depths(conn)

        exporter = prometheus.serve(host, port, depths=depths)
        self.sending.metrics = self.receipts.metrics = exporter.metrics
        return exporter

    def act_on_warning(self, assessed: Assessment, *,
                       queue_only: bool = False) -> NoticeResult | None:
        """`warnings ingest --start`: start the playbook an assessed CAP alert calls for, or
        update the incident its first message started (None: the same alert again)."""
        action = self.warnings.action(assessed, queue_only=queue_only)
        if action is None:
            return None
        if action.kind == "update":
            given = dict(action.arguments)
            return self.lifecycle.update(given.pop("ref"), **given)
        result = self.lifecycle.start(**action.arguments)
        assert isinstance(result, StartResult)  # never a dry run
        return result
