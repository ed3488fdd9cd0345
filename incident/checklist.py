"""The incident's checklist and what needs the supervisor's attention, derived from its state.

The checklist is the playbook's steps plus its regulator duties that apply at the incident's
grade. A step is due a fixed time after detection. A duty's clock starts at detection if the
incident was declared at a grade the duty covers, otherwise when it was re-graded into one;
a recurring duty (`every`) falls due again after each period until the incident is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from incident.models import Status, Text
from incident.playbooks import RegulatorDuty, Step
from incident.state import IncidentView, StepMark

ItemState = Literal["open", "done", "skipped"]


@dataclass(frozen=True)
class Item:
    """One checklist item with its deadline and what has been recorded against it."""

    id: str
    kind: Literal["step", "duty"]
    title: Text
    owner: str
    due: datetime | None  # the next deadline (None: a recurring duty with nothing more due)
    state: ItemState
    marks: tuple[StepMark, ...]
    action: str | None = None
    every: timedelta | None = None  # recurring duty period
    body: str | None = None  # duty: who receives the report
    source: str | None = None  # duty: the rule it comes from
    party: str | None = None  # duty: the party the report goes to
    deadlines: tuple[datetime, ...] = ()  # every deadline so far (one for a one-off item)

    @property
    def done_at(self) -> datetime | None:
        """When it was (first) done."""
        return next((m.at for m in self.marks if m.state == "done"), None)

    def overdue(self, now: datetime) -> bool:
        """Still open and past its deadline."""
        return self.state == "open" and self.due is not None and self.due < now

    def late(self) -> list[timedelta]:
        """For each deadline met after it passed, by how much (empty: all on time)."""
        done = [m.at for m in self.marks if m.state == "done"]
        return [at - due for due, at in zip(self.deadlines, done, strict=False) if at > due]


def checklist(view: IncidentView, now: datetime | None = None) -> list[Item]:
    """Steps then duties, each with its deadline, for the incident's current grade.

    Items of another grade stay listed once something was recorded against them.
    """
    book = view.playbook
    applicable_steps = {s.id for s in book.steps_for(view.severity)}
    applicable_duties = {d.id for d in book.duties_for(view.severity)}
    items: list[Item] = []
    for step in book.steps:
        if step.id in applicable_steps or step.id in view.step_marks:
            items.append(_step(view, step))
    for duty in book.principles.coordination.regulator:
        if duty.id in applicable_duties or duty.id in view.step_marks:
            item = _duty(view, duty, now)
            if item is not None:
                items.append(item)
    return items


def find(view: IncidentView, item_id: str) -> Item | None:
    """The checklist item called `item_id` (any grade), or None."""
    book = view.playbook
    step = next((s for s in book.steps if s.id == item_id), None)
    if step is not None:
        return _step(view, step)
    duty = next((d for d in book.principles.coordination.regulator if d.id == item_id), None)
    return _duty(view, duty, None) if duty is not None else None


def _state(marks: tuple[StepMark, ...]) -> ItemState:
    if any(m.state == "done" for m in marks):
        return "done"
    return "skipped" if marks else "open"


def _step(view: IncidentView, step: Step) -> Item:
    marks = tuple(view.step_marks.get(step.id, ()))
    due = view.detected_at + step.due
    return Item(id=step.id, kind="step", title=step.title, owner=step.owner, due=due,
                state=_state(marks), marks=marks, action=step.action, deadlines=(due,))


def _duty(view: IncidentView, duty: RegulatorDuty, now: datetime | None) -> Item | None:
    marks = tuple(view.step_marks.get(duty.id, ()))
    anchor = view.grade_since(duty.grades)
    if anchor is None:
        anchor = view.detected_at  # marked although never at its grade: keep it visible
    base = Item(id=duty.id, kind="duty", title=duty.title, owner=duty.owner, due=None,
                state=_state(marks), marks=marks, body=duty.body, source=duty.source,
                party=duty.party)
    if duty.within is not None:
        due = anchor + duty.within
        return replace(base, due=due, deadlines=(due,))
    assert duty.every is not None
    if any(m.state == "skipped" for m in marks):
        return replace(base, state="skipped", every=duty.every)
    done = sum(1 for m in marks if m.state == "done")
    # Deadlines fall every period after the anchor while the incident is open.
    end = view.resolved_at
    deadlines: list[datetime] = []
    at = anchor + duty.every
    while (end is None or at <= end) and len(deadlines) <= done:
        deadlines.append(at)
        at += duty.every
    if len(deadlines) > done:
        return replace(base, due=deadlines[done], state="open", every=duty.every,
                       deadlines=tuple(deadlines))
    return replace(base, state="done" if done else "open", every=duty.every,
                   deadlines=tuple(deadlines))


# ---------------------------------------------------------------------- attention

Level = Literal["overdue", "due_soon"]


@dataclass(frozen=True)
class Attention:
    """Something that fell due, or will soon; `key` is stable so an alert is raised once."""

    key: str
    level: Level
    what: str
    at: datetime


def attention(view: IncidentView, now: datetime, due_soon: timedelta) -> list[Attention]:
    """What the supervisor must act on: the next customer update, a passed ETA, checklist
    items and regulator deadlines due or overdue. Nothing once the incident is closed."""
    if view.status is Status.CLOSED:
        return []
    out: list[Attention] = []

    def check(key: str, due: datetime, overdue_text: str, soon_text: str) -> None:
        if due < now:
            out.append(Attention(f"{key}:overdue", "overdue", overdue_text, due))
        elif due - now <= due_soon:
            out.append(Attention(f"{key}:soon", "due_soon", soon_text, due))

    def when(due: datetime) -> str:
        return _relative(due - now)

    due = view.next_update_due
    if due is not None:
        base = f"update:{due.isoformat()}"
        check(base, due, f"customer update overdue by {when(due)}",
              f"customer update due in {when(due)}")
    if view.status.is_open and view.eta is not None and view.eta < now:
        out.append(Attention(f"eta:{view.eta.isoformat()}", "overdue",
                             f"ETA passed {when(view.eta)} ago without a revision — "
                             "run `incident eta`", view.eta))
    for item in checklist(view, now):
        if item.state != "open" or item.due is None:
            continue
        label = "regulator deadline" if item.kind == "duty" else "step"
        check(f"{item.kind}:{item.id}:{item.due.isoformat()}", item.due,
              f"{label} {item.id} overdue by {when(item.due)} (owner {item.owner})",
              f"{label} {item.id} due in {when(item.due)} (owner {item.owner})")
    return sorted(out, key=lambda a: (a.level != "overdue", a.at))


def _relative(delta: timedelta) -> str:
    seconds = abs(int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours >= 24:
        return f"{hours // 24}d{hours % 24}h"
    if not hours and not minutes:
        return "<1m"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"
