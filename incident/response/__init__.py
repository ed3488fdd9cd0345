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

from collections.abc import Callable

from incident.delivery import ProgressFn
from incident.response.bounces import Bounces
from incident.response.coordination import Coordination
from incident.response.escalation import Escalation, Escalations
from incident.response.journal import Journal
from incident.response.lifecycle import Lifecycle
from incident.response.manual import ManualChannel
from incident.response.optouts import Optouts
from incident.response.postmortem import PostMortem
from incident.response.queries import Queries
from incident.response.receipts import Polled, Receipts
from incident.response.replies import Replies
from incident.response.results import NoticeResult, Result, SendResult, StartResult
from incident.response.sending import Sending
from incident.response.warnings import Assessment, Warnings
from incident.settings import Runtime
from incident.store import Store


class Response:
    """Every use case over one Runtime and database (opened on first use)."""

    def __init__(self, rt: Runtime, store: Store | None = None) -> None:
        self.rt = rt
        self.journal = Journal(rt, store)
        self.lifecycle = Lifecycle(self.journal)
        self.sending = Sending(self.journal)
        self.queries = Queries(self.journal)
        self.manual = ManualChannel(self.journal)
        self.coordination = Coordination(self.journal)
        self.postmortem = PostMortem(self.journal)
        self.warnings = Warnings(self.journal)
        self.receipts = Receipts(self.journal)
        self.bounces = Bounces(self.journal)
        self.escalation = Escalation(self.journal)
        self.optouts = Optouts(self.journal)
        self.replies = Replies(self.journal)  # the roll-call joins at replies.handlers

    def escalate(self, ref: str | None = None) -> Escalations:
        """`incident escalate`: apply the due escalation steps, then send what they queued."""
        result = self.escalation.escalate(ref)
        if result.messages:
            result.sent = self.sending.deliver(ref, complete=False)
        return result

    def serve_receipts(self, *, host: str, port: int,
                       ready: Callable[[str, int], None]) -> Result:
        """`incident receipts serve`, applying due escalations on a timer meanwhile
        (receipts.escalate_every) so that what the receipts say is acted on."""
        return self.receipts.serve(host=host, port=port, ready=ready,
                                   tick=self._escalate_all, receive=self.replies.receive)

    def poll_receipts(self, ref: str | None, *, until: float) -> Polled:
        """`incident receipts poll`: the replies to our number, then the unsettled rows."""
        return self.receipts.poll(ref, until=until, receive=self.replies.receive)

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
