"""The staff roll-call (`incident rollcall start | remind | answer | status`): the staff of a
list get a question with numbered answers (1 safe and able to work, 2 safe but unable to work,
3 need help) by SMS and email; those who have not answered after `every` are called, up to
`max_rounds` rounds (applied by `rollcall remind`, by `watch` each round and by the receipts
server's timer, like escalation: a round is due from the recorded times, a rerun adds
nothing); a "3" alerts the member's manager and the duty desk (incident.yaml
`alerts.parties`) at once. Answers come from replies (`answer`, the hook the inbound SMS,
keypad and email routes call) or are entered by a supervisor (`enter`).

Every step is one event (`rollcall_started`, `rollcall_round`, `rollcall_answered`); the
messages are outbox rows of `party:staff:<id>` (internal: never counted as customers); the
roster (team, branch, manager; no contacts) is in `rollcall_members`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from incident.bounces.sources import read_sources
from incident.branches import load_branches
from incident.errors import BadInput, BranchesInvalid, InvalidTransition, InvalidValue
from incident.languages import chinese_text
from incident.models import Event, EventType, Phase
from incident.notices import check_templates, message_id, notice_context, sender_domain
from incident.parties import party_rows
from incident.payloads import Notice, RollcallAnswered, RollcallRound, RollcallStarted, Via
from incident.rendering import INTERNAL_PHASE
from incident.response.journal import NOT_CLOSED, Journal
from incident.response.results import NoticeResult, Result, Sends
from incident.rollcall import (
    ANSWER_LABELS,
    DEFAULT_QUESTION,
    NEED_HELP,
    RollcallState,
    StaffMember,
    email_reply,
    fold_rollcall,
    parse_answer,
    read_staff,
    summary,
)
from incident.state import IncidentView, fold
from incident.store import outbox as ob
from incident.store import rollcall as rc
from incident.timeutil import format_duration, parse_duration, to_iso

TEMPLATE_SET = "rollcall"


@dataclass(kw_only=True)
class StartedRollcall(NoticeResult, Sends):
    """What `rollcall start` recorded."""

    members: int = 0
    skipped: list[str] = field(default_factory=list)  # bad rows, masked: "file:line field: why"


@dataclass(kw_only=True)
class Reminders(Sends):
    """Rounds `rollcall remind` applied: (incident, round, staff called)."""

    rounds: list[tuple[str, int, int]] = field(default_factory=list)
    recorded: list[NoticeResult] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per round applied, for people."""
        return [f"{i}: roll-call round {n}: {called} staff not answering called"
                for i, n, called in self.rounds]


@dataclass(kw_only=True)
class Answered(Sends):
    """An answer matched to a roll-call's member; `recorded` False when it was a repeat (the
    same provider id) or not an answer (`answer` None)."""

    incident_id: str
    member: str
    answer: int | None
    recorded: bool
    alerted: list[str] = field(default_factory=list)
    result: NoticeResult | None = None


@dataclass(kw_only=True)
class EmailAnswers(Sends):
    """Email replies read: those matched to a roll-call's member, and where the others are
    (from nobody on an open roll-call, or unreadable)."""

    answers: list[Answered] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class RollcallStatus(Result):
    """The headcount: answers overall, per branch and team; readiness; need-help cases."""

    incident_id: str
    drill: bool
    data: dict[str, Any]


class Rollcall:
    """The staff roll-call of an incident."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt

    # ------------------------------------------------------------------ start

    def start(self, ref: str, *, audience: str, question: dict[str, str | None],
              every: str = "15m", max_rounds: int = 3) -> StartedRollcall:
        """Send the question to the staff of `audience` (SMS and email) and record it."""
        self.journal.check_channels()
        try:
            delay = parse_duration(every)
        except ValueError as exc:
            raise InvalidValue(str(exc), field="every") from None
        if delay <= timedelta(0):
            raise InvalidValue(f"{every!r}: give a delay such as 15m", field="every")
        if not 1 <= max_rounds <= 20:
            raise InvalidValue(f"{max_rounds} rounds: give 1 to 20", field="max_rounds")
        settings = self.rt.settings
        staff = read_staff(Path(audience), default_language=settings.default_language,
                           default_region=settings.phone_region)
        store = self.journal.store
        incident_id = store.resolve_id(ref)
        now = self.rt.clock.now()
        texts = self._question(question)
        with store.write() as conn:
            events, state = self._locked(conn, incident_id)
            view = fold(events)
            if not view.status.is_open:
                raise InvalidTransition(f"cannot start a roll-call on {incident_id}: it is "
                                        f"{view.status.value}")
            if state is not None:
                raise InvalidTransition(f"{incident_id} has a roll-call already",
                                        hint=f"incident rollcall status {incident_id[-6:]}")
            contexts = self.contexts(view, "question", texts)
            seq = view.event_count + 1
            messages = ob.enqueue(conn, self._rows(view.id, seq, staff.members,
                                                   ("email", "sms")), now=now)
            rc.add_members(conn, view.id, ({"staff_id": m.id, "name": m.name, "team": m.team,
                                            "branch": m.branch, "manager": m.manager,
                                            "language": m.language} for m in staff.members))
            payload = RollcallStarted(
                question=texts, every=format_duration(delay), max_rounds=max_rounds,
                members=len(staff.members),
                teams=sorted({m.team for m in staff.members if m.team}),
                branches=sorted({m.branch for m in staff.members if m.branch}),
                file=staff.file, skipped=sum(1 for p in staff.problems),
                notice=self._notice(contexts, ["email", "sms"], messages, len(staff.members)))
            event = self.journal.append(conn, view, EventType.ROLLCALL_STARTED, payload, now)
        return StartedRollcall(incident_id=incident_id, seq=event.seq, phase=None,
                                messages=messages, view=view, members=len(staff.members),
                                skipped=[f"{staff.file}:{p.line} {p.field}: {p.message}"
                                         for p in staff.problems])

    def _question(self, given: dict[str, str | None]) -> dict[str, str]:
        """The question in every configured language: as typed, else converted, else the
        default."""
        en = given.get("en")
        out: dict[str, str] = {}
        for lang in self.rt.settings.languages:
            if any(given.values()):
                out[lang] = chinese_text(lang, en or given.get("zh-CN") or given.get("zh-HK")
                                         or "", given.get("zh-CN"), given.get("zh-HK"))
            else:
                out[lang] = DEFAULT_QUESTION[lang]
        return out

    def contexts(self, view: IncidentView, kind: str, question: dict[str, str],
                 member: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """The roll-call message's context in every language (kind: question, reminder,
        help: the alert about `member`)."""
        out: dict[str, dict[str, Any]] = {}
        for lang in self.rt.settings.languages:
            context = notice_context(self.rt, view, phase=Phase.UPDATE, lang=lang,
                                     message=question.get(lang, ""))
            context.pop("regional", None)
            context["notice"] = {**context["notice"], "phase": INTERNAL_PHASE, "kind": kind}
            context["rollcall"] = {
                "question": question.get(lang, ""),
                "answers": [{"n": n, "label": label}
                            for n, label in ANSWER_LABELS[lang].items()],
                "member": member or {}}
            out[lang] = context
        check_templates(self.journal.renderer, TEMPLATE_SET,
                        ["voice"] if kind == "reminder" else ["email", "sms"], out,
                        limits=self.rt.settings.limits)
        return out

    def _notice(self, contexts: dict[str, dict[str, Any]], channels: list[str], messages: int,
                recipients: int) -> Notice:
        return Notice(phase=INTERNAL_PHASE, template_set=TEMPLATE_SET, channels=channels,
                      context=contexts, messages=messages, recipients=recipients,
                      audience="staff")

    def _rows(self, incident_id: str, seq: int, members: Sequence[StaffMember],
              channels: Sequence[str]) -> list[dict[str, Any]]:
        domain = sender_domain(self.rt)
        transports = self.rt.settings.channels.transports
        out = []
        for m in members:
            ref = rc.STAFF_PREFIX + m.id
            for channel in channels:
                address = m.email if channel == "email" else m.phone
                if not address:
                    continue
                key = ob.idempotency_key(incident_id, seq, ref, channel)
                out.append({"incident_id": incident_id, "notice_seq": seq, "channel": channel,
                            "recipient_ref": ref, "recipient_name": m.name, "address": address,
                            "language": m.language, "priority": 0,
                            "message_id": message_id(key, incident_id, domain),
                            "idempotency_key": key, "fallback_address": None,
                            "transport": transports[channel], "region": m.region or None})
        return out

    # ------------------------------------------------------------------ rounds

    def remind(self, ref: str | None = None) -> Reminders:
        """Apply the due round (a call to each member not answering) of incident `ref`'s
        roll-call, or of every open incident's; a round is due `every` after the previous."""
        store = self.journal.store
        ids = [store.resolve_id(ref)] if ref else [i.id for i in store.incidents()]
        result = Reminders()
        for incident_id in ids:
            done = self._remind(incident_id)
            if done is not None:
                result.rounds.append((incident_id, done[0], done[1].messages))
                result.recorded.append(done[1])
        return result

    def _remind(self, incident_id: str) -> tuple[int, NoticeResult] | None:
        store = self.journal.store
        now = self.rt.clock.now()
        if not _due(store.events(incident_id), now):  # most rounds of watch: no lock taken
            return None
        with store.write() as conn:
            events, state = self._locked(conn, incident_id)
            if state is None or not _due(events, now):
                return None
            view = fold(events)
            number = state.round + 1
            waiting = [m.staff_id for m in rc.members(conn, incident_id)
                       if m.staff_id not in state.answers]
            seq = view.event_count + 1
            rows = self._calls(conn, incident_id, state, waiting, seq)
            contexts = self.contexts(view, "reminder", state.question)
            messages = ob.enqueue(conn, rows, now=now)
            payload = RollcallRound(round=number, members=messages,
                                    notice=self._notice(contexts, ["voice"], messages,
                                                        messages))
            event = self.journal.append(conn, view, EventType.ROLLCALL_ROUND, payload, now)
        return number, NoticeResult(incident_id=incident_id, seq=event.seq, phase=None,
                                    messages=messages, view=view)

    def _locked(self, conn: Any, incident_id: str) -> tuple[list[Event], RollcallState | None]:
        """The incident locked for this write: its events and roll-call."""
        self.journal.store.lock_incident(conn, incident_id)
        events = self.journal.store.events(incident_id, conn)
        return events, fold_rollcall(events)

    def _copy(self, row: Any, seq: int, channel: str) -> dict[str, Any]:
        """A row to the same staff member and address as outbox `row`, for notice `seq`."""
        key = ob.idempotency_key(row.incident_id, seq, row.recipient_ref, channel)
        return {"incident_id": row.incident_id, "notice_seq": seq, "channel": channel,
                "recipient_ref": row.recipient_ref, "recipient_name": row.recipient_name,
                "address": row.address, "language": row.language, "priority": 0,
                "message_id": message_id(key, row.incident_id, sender_domain(self.rt)),
                "idempotency_key": key, "fallback_address": None,
                "transport": self.rt.settings.channels.transports[channel],
                "region": row.region}

    def _calls(self, conn: Any, incident_id: str, state: RollcallState, waiting: list[str],
               seq: int) -> list[dict[str, Any]]:
        """A voice row per waiting member with a phone (from their first SMS row)."""
        found = rc.contacts(conn, incident_id, state.started_seq, waiting)
        return [self._copy(found[s]["sms"], seq, "voice") for s in waiting
                if "sms" in found.get(s, {})]

    # ------------------------------------------------------------------ answers

    def answer(self, *, sender: str, text: str, provider_id: str | None = None,
               received_at: datetime | None = None, via: Via = "sms") -> Answered | None:
        """A reply (SMS, keypad digit, email) from `sender` (a phone in E.164 or an email):
        the open roll-call and member it matched (None: the sender is on none), its answer
        recorded once per provider id. The hook the inbound routes call."""
        store = self.journal.store
        addresses = list(dict.fromkeys([sender.strip(), sender.strip().lower()]))
        with store.read() as conn:
            found = rc.senders(conn, addresses)
        for incident_id, member in found:
            view = fold(store.events(incident_id))
            if view.status.is_open:
                answer = parse_answer(text)
                if answer is None:
                    return Answered(incident_id=incident_id, member=member, answer=None,
                                    recorded=False)
                return self._record(incident_id, member, answer, via=via,
                                    provider_id=provider_id, received_at=received_at)
        return None

    def replies(self, paths: Sequence[Path]) -> EmailAnswers:
        """Email replies to roll-calls from message files, .eml folders, mbox or Maildir
        (read as `bounces ingest` reads them), each answered through `answer` once per
        Message-ID."""
        result = EmailAnswers()
        for source in read_sources(paths):
            reply = email_reply(source.data) if source.data is not None else None
            got = None if reply is None else self.answer(
                sender=reply[0], text=reply[1], provider_id=reply[2] or source.where,
                via="email")
            if got is None:
                result.unmatched.append(source.where)
            else:
                result.answers.append(got)
        return result

    def enter(self, ref: str, *, member: str, answer: int) -> Answered:
        """An answer taken by phone, entered by a supervisor (recorded as theirs)."""
        return self._record(self.journal.store.resolve_id(ref), member, answer,
                            via="supervisor", provider_id=None, received_at=None)

    def _record(self, incident_id: str, member: str, answer: int, *, via: Via,
                provider_id: str | None, received_at: datetime | None) -> Answered:
        if answer not in ANSWER_LABELS["en"]:
            raise InvalidValue(f"answer {answer}: give 1, 2 or 3", field="answer")
        store = self.journal.store
        now = self.rt.clock.now()
        with store.write() as conn:
            events, state = self._locked(conn, incident_id)
            if state is None:
                raise InvalidTransition(f"{incident_id} has no roll-call",
                                        hint="incident rollcall start ID --audience staff.csv")
            roster = {m.staff_id: m for m in rc.members(conn, incident_id)}
            if member not in roster:
                raise InvalidValue(f"{member!r} is not on the roll-call of {incident_id}",
                                   field="member")
            if provider_id and provider_id in state.provider_ids:
                return Answered(incident_id=incident_id, member=member, answer=answer,
                                recorded=False)
            view = fold(events)
            if view.status not in NOT_CLOSED:
                raise InvalidTransition(f"{incident_id} is closed: its record is final")
            alerted: list[str] = []
            notice = None
            messages = internal = 0
            if answer == NEED_HELP:
                notice, alerted, messages = self._alert(conn, view, state, roster[member], now)
                internal = messages
            payload = RollcallAnswered(member=member, answer=answer, via=via,
                                       alerted=alerted, notice=notice,
                                       **({"provider_id": provider_id} if provider_id else {}),
                                       **({"received_at": to_iso(received_at)}
                                          if received_at else {}))
            event = self.journal.append(conn, view, EventType.ROLLCALL_ANSWERED, payload, now)
        recorded = NoticeResult(incident_id=incident_id, seq=event.seq, phase=None,
                                messages=0, internal=internal, view=view)
        return Answered(incident_id=incident_id, member=member, answer=answer, recorded=True,
                        alerted=alerted, result=recorded)

    def _alert(self, conn: Any, view: IncidentView, state: RollcallState, who: Any,
               now: datetime) -> tuple[Notice, list[str], int]:
        """The need-help alert to the member's manager (their roll-call contacts) and the duty
        desk (alerts.parties), enqueued with the answer's event."""
        seq = view.event_count + 1
        member = {"id": who.staff_id, "name": who.name, "team": who.team, "branch": who.branch}
        contexts = self.contexts(view, "help", state.question, member)
        rows: list[dict[str, Any]] = []
        alerted: list[str] = []
        if who.manager:
            found = rc.contacts(conn, view.id, state.started_seq, [who.manager])
            rows += [self._copy(row, seq, channel)
                     for channel, row in found.get(who.manager, {}).items()]
            alerted.append(who.manager)
        duty = [p for p in self.rt.settings.alerts.parties if p in self.rt.settings.parties]
        for row in party_rows(self.rt, view.id, seq, duty, sender_domain(self.rt)):
            if row["channel"] in ("email", "sms"):
                rows.append({**row, "region": None})
        alerted += duty
        messages = ob.enqueue(conn, rows, now=now)
        return (self._notice(contexts, ["email", "sms"], messages, len(alerted)), alerted,
                messages)

    # ------------------------------------------------------------------ status

    def status(self, ref: str) -> RollcallStatus:
        """The headcount live: per answer, unanswered, per branch and team; branch readiness
        (branches.csv min_staff); need-help cases; time to 50/90/100% answered."""
        store = self.journal.store
        incident_id = store.resolve_id(ref)
        events = store.events(incident_id)
        view = fold(events)
        state = fold_rollcall(events)
        if state is None:
            raise BadInput(f"{incident_id} has no roll-call",
                           hint="incident rollcall start ID --audience staff.csv")
        with store.read() as conn:
            roster = rc.members(conn, incident_id)
        data = summary(state, roster, self._branches(), view)
        return RollcallStatus(incident_id=incident_id, drill=view.drill, data=data)

    def summary_of(self, view: IncidentView) -> dict[str, Any] | None:
        """The roll-call's summary for `status`/`watch`/the report (None: no roll-call)."""
        store = self.journal.store
        state = fold_rollcall(store.events(view.id))
        if state is None:
            return None
        with store.read() as conn:
            roster = rc.members(conn, view.id)
        return summary(state, roster, self._branches(), view)

    def reopen_warnings(self, ref: str, branches: Sequence[str]) -> list[str]:
        """Why each of `branches` cannot open (or is not known to) per the roll-call; an
        unknown branch id is refused (InvalidValue naming `reopen`)."""
        known = self._branches()
        ids = {b.id for b in known}
        unknown = [b for b in branches if known and b not in ids]
        if unknown:
            raise InvalidValue(f"unknown branch {', '.join(map(repr, unknown))}",
                               field="reopen", hint="branches of " + str(self.rt.settings.branches))
        view = self.journal.view(ref)
        data = self.summary_of(view)
        if data is None:
            return []
        out = []
        for branch in branches:
            verdict = data["readiness"].get(branch)
            if verdict is None:
                out.append(f"{branch}: readiness unknown (no min_staff in the branch list)")
            elif verdict["verdict"] != "can open":
                out.append(f"{branch} {verdict['verdict']} per the staff roll-call: "
                           f"{verdict['why']}")
        return out

    def _branches(self) -> list[Any]:
        listed = self.rt.settings.branches
        if not listed:
            return []
        try:
            return load_branches(self.rt.path(listed))
        except BranchesInvalid:
            return []  # start and warnings report a bad branch list; the headcount goes on


def _due(events: list[Event], now: datetime) -> bool:
    """A round of the incident's roll-call is due at `now` (and the incident not closed)."""
    state = fold_rollcall(events)
    due = state.next_round_due() if state is not None else None
    return (due is not None and now >= due
            and not any(e.type is EventType.CLOSED for e in events))
