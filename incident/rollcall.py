"""The staff roll-call's domain: the staff list (the customer CSV plus team, branch, manager),
the roll-call's state folded from its events, the headcount and branch readiness.

The use cases are in response/rollcall.py; the roster is stored in `rollcall_members`
(store/rollcall.py); each answer is a `rollcall_answered` event.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from incident.audience import Customer, iter_audience
from incident.audience.model import RowProblem
from incident.branches import Branch
from incident.errors import AudienceInvalid, Location
from incident.models import Event, EventType
from incident.payloads import RollcallAnswered, RollcallRound, RollcallStarted, payload_of
from incident.timeutil import format_duration, parse_duration, to_iso

ANSWERS = (1, 2, 3)
ABLE, UNABLE, NEED_HELP = ANSWERS
ANSWER_KEYS = {1: "able", 2: "unable", 3: "need_help"}
ANSWER_LABELS = {
    "zh-CN": {1: "平安，可以上班", 2: "平安，无法上班", 3: "需要帮助"},
    "zh-HK": {1: "平安，可以上班", 2: "平安，未能上班", 3: "需要協助"},
    "en": {1: "safe and able to work", 2: "safe but unable to work", 3: "need help"},
}
DEFAULT_QUESTION = {
    "zh-CN": "请确认您是否平安、能否上班。",
    "zh-HK": "請確認您是否平安、能否上班。",
    "en": "Please confirm that you are safe and whether you can work.",
}
# An answer in a reply: the first digit 1-3, or these words (a reply is free text).
_WORDS = {"safe": 1, "ok": 1, "平安": 1, "help": 3, "救命": 3, "求助": 3, "需要帮助": 3,
          "需要協助": 3}


@dataclass(frozen=True)
class StaffMember:
    """One staff member of a roll-call (contacts only until they are enqueued)."""

    id: str
    name: str
    email: str | None
    phone: str | None
    language: str
    team: str
    branch: str
    manager: str | None
    region: str = ""


@dataclass
class StaffList:
    """A staff CSV read: the usable members and the bad rows (skipped, reported)."""

    members: list[StaffMember]
    problems: list[RowProblem]
    file: str


def read_staff(path: Path, *, default_language: str, default_region: str) -> StaffList:
    """Read a staff CSV (the customer format plus `team`, `branch`, `manager`): rows as the
    customer reader validates them; a manager who is not a staff id of the file is a bad row
    naming line and field. AudienceInvalid when no row is usable."""
    display = str(path)
    extra = _extra_columns(path)
    members: list[StaffMember] = []
    problems: list[RowProblem] = []
    for item in iter_audience(path, default_language=default_language,
                              default_region=default_region):
        if isinstance(item, Customer):
            team, manager, _ = extra.get(item.ref, ("", "", 0))
            members.append(StaffMember(id=item.ref, name=item.name, email=item.email,
                                       phone=item.phone, language=item.language,
                                       team=team, branch=item.branch,
                                       manager=manager or None, region=item.region))
        else:
            problems.append(item)
    ids = {m.id for m in members}
    kept = []
    for member in members:
        if member.manager is not None and member.manager not in ids:
            problems.append(RowProblem(
                line=extra[member.id][2], field="manager",
                message=f"manager {member.manager!r} is not a staff id of this file"))
        else:
            kept.append(member)
    if not kept:
        raise AudienceInvalid(f"staff list {display} has no usable row",
                              problems=[(Location(display, p.line, p.field), p.message)
                                        for p in problems[:20]] or [(Location(display),
                                                                     "no data rows")])
    return StaffList(members=kept, problems=problems, file=display)


def _extra_columns(path: Path) -> dict[str, tuple[str, str, int]]:
    """id -> (team, manager, line) from the staff columns the customer reader ignores."""
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError:
        return {}  # the customer reader reports an unreadable file
    found: dict[str, tuple[str, str, int]] = {}
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames:
        reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
    for row in reader:
        ref = (row.get("id") or "").strip()
        if ref and ref not in found:
            found[ref] = ((row.get("team") or "").strip(), (row.get("manager") or "").strip(),
                          reader.line_num)
    return found


_QUOTE_START = re.compile(r"^(on .* wrote:|-+ ?original message ?-+|from:|发件人|發件人|在.*写道|"
                          r"在.*寫道)", re.IGNORECASE)


def email_reply(data: bytes) -> tuple[str, str, str | None] | None:
    """(sender address, the reply's own text, Message-ID) of an email reply; its text stops
    where the quoted original starts (a quoted question holds every answer's digit). None:
    no sender."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    sender = parseaddr(str(message.get("From", "")))[1]
    if not sender:
        return None
    body = message.get_body(("plain",)) if isinstance(message, EmailMessage) else None
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    own = []
    for line in str(text).splitlines():
        if line.lstrip().startswith(">") or _QUOTE_START.match(line.strip()):
            break
        own.append(line)
    return sender, "\n".join(own), (str(message["Message-ID"]).strip()
                                    if message["Message-ID"] else None)


def parse_answer(text: str) -> int | None:
    """The answer a reply gives: its first digit 1-3 (full-width too) or a known word."""
    for char in text.strip():
        if char.isdigit():
            digit = int(char) if char.isascii() else int(chr(ord(char) - 0xFF10 + 0x30))
            return digit if digit in ANSWERS else None
    lowered = text.strip().lower()
    return next((value for word, value in _WORDS.items() if word in lowered), None)


# ---------------------------------------------------------------------- the state


@dataclass
class Answer:
    """A staff member's latest answer."""

    answer: int
    at: datetime
    via: str
    by: str
    provider_id: str | None = None


@dataclass
class RollcallState:
    """An incident's roll-call, folded from its events."""

    started_at: datetime
    started_seq: int
    every: timedelta
    max_rounds: int
    members: int
    question: dict[str, str]
    rounds: list[tuple[int, datetime, int]] = field(default_factory=list)  # (round, at, seq)
    answers: dict[str, Answer] = field(default_factory=dict)
    first_answers: dict[str, datetime] = field(default_factory=dict)
    provider_ids: set[str] = field(default_factory=set)
    help: list[HelpCase] = field(default_factory=list)

    @property
    def round(self) -> int:
        """The latest round applied (1: the first question)."""
        return self.rounds[-1][0] if self.rounds else 1

    def next_round_due(self) -> datetime | None:
        """When the next round falls due: `every` after the latest (None: all applied)."""
        if self.round >= self.max_rounds:
            return None
        return (self.rounds[-1][1] if self.rounds else self.started_at) + self.every


@dataclass
class HelpCase:
    """A "need help" answer: who was alerted, and when it was handled (the member's answer
    changed afterwards, e.g. entered by the supervisor once help reached them)."""

    member: str
    at: datetime
    alerted: list[str]
    handled_at: datetime | None = None


def fold_rollcall(events: Iterable[Event]) -> RollcallState | None:
    """The incident's roll-call from its events (None: none started)."""
    state: RollcallState | None = None
    for event in events:
        if event.type is EventType.ROLLCALL_STARTED:
            p = payload_of(event)
            assert isinstance(p, RollcallStarted)
            state = RollcallState(started_at=event.at, started_seq=event.seq,
                                  every=parse_duration(p.every), max_rounds=p.max_rounds,
                                  members=p.members, question=dict(p.question))
        elif state is not None and event.type is EventType.ROLLCALL_ROUND:
            r = payload_of(event)
            assert isinstance(r, RollcallRound)
            state.rounds.append((r.round, event.at, event.seq))
        elif state is not None and event.type is EventType.ROLLCALL_ANSWERED:
            a = payload_of(event)
            assert isinstance(a, RollcallAnswered)
            for case in state.help:
                if case.member == a.member and case.handled_at is None and a.answer != NEED_HELP:
                    case.handled_at = event.at
            state.answers[a.member] = Answer(a.answer, event.at, a.via, event.actor,
                                             a.provider_id)
            state.first_answers.setdefault(a.member, event.at)
            if a.provider_id:
                state.provider_ids.add(a.provider_id)
            if a.answer == NEED_HELP:
                state.help.append(HelpCase(a.member, event.at, list(a.alerted)))
    return state


# ---------------------------------------------------------------------- headcount


def headcount(state: RollcallState, roster: Sequence[Any]) -> dict[str, Any]:
    """Answers overall, per branch and per team (roster rows: staff_id, team, branch)."""
    def tally(rows: Sequence[Any]) -> dict[str, int]:
        counts = {key: 0 for key in ANSWER_KEYS.values()} | {"unanswered": 0}
        for row in rows:
            answer = state.answers.get(row.staff_id)
            counts[ANSWER_KEYS[answer.answer] if answer else "unanswered"] += 1
        return counts

    def grouped(key: str) -> dict[str, dict[str, int]]:
        groups: dict[str, list[Any]] = {}
        for row in roster:
            groups.setdefault(getattr(row, key) or "-", []).append(row)
        return {name: tally(rows) for name, rows in sorted(groups.items())}

    return {"members": len(roster), "round": state.round, "max_rounds": state.max_rounds,
            "total": tally(roster), "branches": grouped("branch"), "teams": grouped("team")}


def readiness(by_branch: dict[str, dict[str, int]],
              branches: Sequence[Branch]) -> dict[str, dict[str, Any]]:
    """Per branch of the list with a `min_staff`: staff able to work vs min_staff → `can
    open`, `cannot open` (every staff member answered, too few able) or `unknown` (too few
    able so far, some unanswered), and why."""
    out: dict[str, dict[str, Any]] = {}
    for branch in branches:
        if branch.min_staff is None:
            continue
        counts = by_branch.get(branch.id, {"able": 0, "unanswered": 0})
        able, waiting = counts.get("able", 0), counts.get("unanswered", 0)
        if able >= branch.min_staff:
            verdict = "can open"
        elif able + waiting >= branch.min_staff:
            verdict = "unknown"
        else:
            verdict = "cannot open"
        out[branch.id] = {"able": able, "min_staff": branch.min_staff, "unanswered": waiting,
                          "verdict": verdict,
                          "why": f"{able} of {branch.min_staff} staff needed able to work"
                                 + (f", {waiting} not answered" if waiting else "")}
    return out


def answered_times(state: RollcallState) -> dict[str, float | None]:
    """Minutes from the question to 50%, 90% and 100% of the staff answered (None: not yet)."""
    times = sorted(state.first_answers.values())
    out: dict[str, float | None] = {}
    for share in (50, 90, 100):
        needed = max(1, -(-state.members * share // 100))
        out[f"{share}%"] = (round((times[needed - 1] - state.started_at).total_seconds() / 60, 1)
                            if len(times) >= needed else None)
    return out


def summary(state: RollcallState, roster: Sequence[Any], branches: Sequence[Any],
            view: Any) -> dict[str, Any]:
    """The roll-call as data: headcount, readiness, need-help cases, answer times, drill."""
    counts = headcount(state, roster)
    target = view.playbook.rollcall.target_90
    times = answered_times(state)
    due = state.next_round_due()
    return {**counts, "drill": view.drill, "started_at": to_iso(state.started_at),
            "next_round_at": to_iso(due) if due else None,
            "readiness": readiness(counts["branches"], branches),
            "need_help": [{"member": c.member, "at": to_iso(c.at), "alerted": c.alerted,
                           "handled_at": to_iso(c.handled_at) if c.handled_at else None,
                           "minutes_to_handle": round((c.handled_at - c.at).total_seconds() / 60,
                                                      1) if c.handled_at else None}
                          for c in state.help],
            "answered_within": times,
            "target_90": format_duration(target),
            "target_90_met": (times["90%"] is not None
                              and times["90%"] <= target.total_seconds() / 60)}
