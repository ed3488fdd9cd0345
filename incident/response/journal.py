"""The journal: how every use case writes to an incident's record, written once.

A change to an incident is one write transaction that locks the incident, folds its events
into its current state, checks that the state allows the change, builds the event's data from
that fresh state, renders and checks the customer notice it carries (so a broken template
records nothing), enqueues the notice's outbox rows and appends the event — and, in the same
transaction, the internal notice to the parties the change concerns. Sending happens
afterwards, from the outbox (response/sending.py).

`start` creates the incident and records its first notice with the same pieces
(response/start.py); every other use case calls `record`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from datetime import datetime, timedelta
from typing import Any

from incident.channels.factory import check_channels
from incident.errors import InvalidTransition, InvalidValue
from incident.languages import chinese_text
from incident.models import Event, EventType, Phase, Status
from incident.notices import check_templates, notice_context, rows_from_notice, sender_domain
from incident.parties import INTERNAL_SET, drill_barred, internal_contexts, party_rows
from incident.payloads import Declared, Notice, PartiesNotified, Payload, payload_data
from incident.playbooks import Playbook
from incident.rendering import INTERNAL_PHASE, Renderer, compiled_templates
from incident.response.recording import complete_notices
from incident.response.results import NoticeResult
from incident.settings import Runtime, secret
from incident.state import IncidentView, apply, fold
from incident.store import Store
from incident.store import outbox as ob
from incident.store.events import CHAIN_KEY_ENV
from incident.timeutil import format_duration, parse_when

# build(view, now) -> the event's payload, from the incident's fresh state (raise BadInput to
# refuse); one model of incident/payloads.py per event type
Build = Callable[[IncidentView, datetime], Payload]
# notify(view, payload) -> the parties an event concerns and the kind of internal notice, or None
Notify = Callable[[IncidentView, Payload], "tuple[list[str], str] | None"]

ANY_STATE = frozenset(Status)
NOT_CLOSED = frozenset(Status) - {Status.CLOSED}


class Journal:
    """The record of every incident in one database, written through one kernel."""

    def __init__(self, rt: Runtime, store: Store | None = None) -> None:
        self.rt = rt
        self._store = store
        self.renderer = Renderer(rt.template_path, compiled_templates())
        # Called after each recorded public notice and close (Response: the status page).
        self.on_public: Callable[[NoticeResult], None] | None = None

    @property
    def store(self) -> Store:
        """The database, opened (and migrated) on first use."""
        if self._store is None:
            # The chain key is a secret: from the environment only, never in the database.
            self._store = Store.open(self.rt.db_url, chain_key=secret(CHAIN_KEY_ENV),
                                     clock=self.rt.clock)
        return self._store

    def store_if_open(self) -> Store | None:
        """The database if a use case opened it, else None."""
        return self._store

    @property
    def anchored(self) -> bool:
        """Whether the event chain is anchored outside the database (a chain key is set)."""
        return self.store.chain_key is not None

    def view(self, ref: str) -> IncidentView:
        """The current state of one incident."""
        return fold(self.store.events(self.store.resolve_id(ref)))

    def check_channels(self) -> None:
        """ConfigInvalid unless every configured channel has what it needs (its secrets)."""
        check_channels(self.rt)

    # ------------------------------------------------------------------ the kernel

    def record(self, ref: str, type: EventType, phase: Phase | None, build: Build, *,
               allowed: frozenset[Status] = NOT_CLOSED, verb: str,
               notify: Notify | None = None, sends: bool = False) -> NoticeResult:
        """Append one event of `type` to incident `ref` in one write transaction.

        `build(view, now)` returns the event's payload from the incident's fresh state (raising
        BadInput to refuse); with a `phase`, the customer notice is rendered, checked and
        enqueued with it. `allowed` are the states the incident may be in. `notify(view,
        payload)` may name parties (and the kind of internal notice) that get an internal notice
        about the event, recorded in the same transaction. With `sends` (what it records is
        sent at once), every channel's configuration is checked first.
        """
        if sends:
            self.check_channels()
        incident_id = self.store.resolve_id(ref)
        notes: list[str] = []
        if phase is not None:  # a later notice copies the first one's rows: complete them
            notes = complete_notices(self.store, self.rt, incident_id, strict=True)
        now = self.rt.clock.now()
        domain = sender_domain(self.rt)
        self.store.record_tampering(incident_id, actor=self.rt.operator, at=now)
        with self.store.write() as conn:
            self.store.lock_incident(conn, incident_id)
            view = fold(self.store.events(incident_id, conn))
            if view.status not in allowed:
                raise InvalidTransition(f"cannot {verb} {incident_id}: it is "
                                        f"{view.status.value}", hint=transition_hint(view.status))
            payload = build(view, now)
            messages = 0
            if phase is not None:
                contexts = self._check_notice(view, type, phase, payload, now)
                first = view.notices[0].seq if view.notices else 1
                messages = ob.enqueue(conn, rows_from_notice(
                    conn, incident_id, first, view.event_count + 1, domain,
                    transports=self.rt.settings.channels.transports), now=now)
                recipients = view.notices[0].recipients if view.notices else 0
                payload = payload.model_copy(update={"notice": notice_record(
                    view.playbook, phase, contexts, messages, recipients=recipients)})
            event = self.append(conn, view, type, payload, now)
            internal = notify(view, payload) if notify else None
            internal_messages = 0
            if internal and internal[0]:
                internal_messages = self.notify_in(conn, view, internal[0], kind=internal[1],
                                                   message=message_of(payload), now=now)
        result = NoticeResult(incident_id=incident_id, seq=event.seq, phase=phase,
                              messages=messages, view=view, internal=internal_messages,
                              notes=notes)
        if phase is not None or type is EventType.CLOSED:
            self.announced(result)
        return result

    def announced(self, result: NoticeResult) -> None:
        """A public notice (or a close) was recorded: tell `on_public` (the status page's
        rebuild), which reports trouble as notes on `result`, never by raising."""
        if self.on_public is not None:
            self.on_public(result)

    def append(self, conn: Any, view: IncidentView, type: EventType, payload: Payload,
               now: datetime) -> Event:
        """Append an event after those folded into `view` (in the open transaction `conn`)
        and apply it to `view`."""
        event = self.store.append(conn, view.id, type, actor=self.rt.operator, data=payload,
                                  at=now)
        apply(view, event)
        return event

    def declare(self, conn: Any, incident_id: str, payload: Declared,
                now: datetime) -> IncidentView:
        """Append the declared event of an incident just created in `conn`; its state."""
        event = self.store.append(conn, incident_id, EventType.DECLARED, actor=self.rt.operator,
                                  data=payload, at=now)
        return fold([event])

    def notify_in(self, conn: Any, view: IncidentView, parties: Sequence[str], *, kind: str,
                  message: str, now: datetime, steps_done: Sequence[str] = ()) -> int:
        """Record an internal notice to `parties` in the open transaction `conn`, after the
        events already applied to `view`; returns the number of messages enqueued.

        A drill never reaches the parties that receive regulator reports, whichever path
        names them (playbook, step, `--to`, alerts): they are dropped here.
        """
        barred = drill_barred(view)
        parties = [p for p in parties if p not in barred]
        if not parties:
            return 0
        contexts = internal_contexts(self.rt, view, kind=kind, message=message, now=now,
                                     actor=self.rt.operator)
        check_templates(self.renderer, INTERNAL_SET, ["email", "sms"], contexts,
                        limits=self.rt.settings.limits)
        seq = view.event_count + 1
        messages = ob.enqueue(conn, party_rows(self.rt, view.id, seq, parties,
                                               sender_domain(self.rt)), now=now)
        hooks = ["webhook"] if any(self.rt.settings.parties[p].webhook for p in parties) else []
        notified = PartiesNotified(
            parties=list(parties), kind=kind, message=message,
            steps_done=[s for s in steps_done if not view.step_marks.get(s)],
            notice=Notice(phase=INTERNAL_PHASE, template_set=INTERNAL_SET,
                          channels=["email", "sms", *hooks], context=contexts,
                          messages=messages, recipients=len(parties), audience="internal"))
        self.append(conn, view, EventType.PARTIES_NOTIFIED, notified, now)
        return messages

    def _check_notice(self, view: IncidentView, type: EventType, phase: Phase,
                      payload: Payload, now: datetime) -> dict[str, dict[str, Any]]:
        """Render the notice `payload` carries for the state after it, for a sample customer in
        every language (TemplateInvalid before anything is recorded); its contexts."""
        provisional = Event(incident_id=view.id, seq=view.event_count + 1, type=type, at=now,
                            actor=self.rt.operator,
                            data={**payload_data(payload),
                                  "notice": {"phase": phase.value, "messages": 0,
                                                     "recipients": 0}},
                            prev_hash="", hash="")
        after = deepcopy(view)
        apply(after, provisional)
        contexts = self.contexts(after, phase, message_of(payload),
                                 getattr(payload, "message_zh", None),
                                 getattr(payload, "message_zh_hk", None))
        book = view.playbook
        check_templates(self.renderer, book.notices.template_set, list(book.notices.channels),
                        contexts, limits=self.rt.settings.limits)
        return contexts

    def contexts(self, view: IncidentView, phase: Phase, message: str,
                 message_zh: str | None = None,
                 message_zh_hk: str | None = None) -> dict[str, dict[str, Any]]:
        """The notice's template context in every configured language: the supervisor's
        message as typed for that language, else converted (s2hk / hk2s), else the English
        after a Chinese lead-in (languages.chinese_text)."""
        return {lang: notice_context(self.rt, view, phase=phase, lang=lang,
                                     message=chinese_text(lang, message, message_zh,
                                                          message_zh_hk))
                for lang in self.rt.settings.languages}

    # ------------------------------------------------------------------ times given

    def future(self, text: str, now: datetime, field: str) -> datetime:
        """An ETA: after now, and at most `limits.max_eta` ahead."""
        value = parse_when(text, zone=self.rt.zone, now=now, future=True)
        if value <= now:
            raise InvalidValue(f"{text!r} is not in the future", field=field)
        bound = self.rt.settings.limits.max_eta
        if value - now > bound:
            raise InvalidValue(f"{text!r} is more than {format_duration(bound)} ahead",
                               field=field,
                               hint="give a nearer estimate and revise it with incident eta "
                                    "(the bound is limits.max_eta in incident.yaml)")
        return value

    def past(self, text: str, now: datetime, field: str) -> datetime:
        """A time that already happened (detection, recovery): not after now (a minute of
        clock skew allowed), at most `limits.max_backdate` ago."""
        value = parse_when(text, zone=self.rt.zone, now=now, future=False)
        if value > now + timedelta(minutes=1):
            raise InvalidValue(f"{text!r} is in the future", field=field)
        bound = self.rt.settings.limits.max_backdate
        if now - value > bound:
            raise InvalidValue(f"{text!r} is more than {format_duration(bound)} ago",
                               field=field,
                               hint="the bound is limits.max_backdate in incident.yaml")
        return value


def notice_record(book: Playbook, phase: Phase, contexts: dict[str, dict[str, Any]],
                  messages: int, *, recipients: int,
                  transports: dict[str, str] | None = None) -> Notice:
    """The `notice` an event carries: what was rendered and how many messages it has (for
    the first notice: the transports its rows are recorded for)."""
    notice = Notice(phase=phase.value, template_set=book.notices.template_set,
                    channels=list(book.notices.channels), context=contexts, messages=messages,
                    recipients=recipients)
    if transports is None:
        return notice
    return notice.model_copy(update={"transports": dict(transports)})


def message_of(payload: Payload) -> str:
    """The message an event carries (what its internal notice repeats), if it has one."""
    message = getattr(payload, "message", "")
    return message if isinstance(message, str) else ""


def transition_hint(status: Status) -> str:
    """What to do instead, for an incident in `status`."""
    if status is Status.RESOLVED:
        return "it is resolved: the next step is `incident close ID`"
    if status is Status.CLOSED:
        return "it is closed: its record is final; start a new incident if the problem is back"
    return "it is still open: resolve it first with `incident resolve ID --message ...`"
