"""Natural-disaster warnings: a CAP 1.2 alert read, decided on against the branch list, the
playbooks and the alerts already recorded, with the affected customers counted per branch —
and, when the supervisor says so, what to start or update (Response.act_on_warning runs it
through the lifecycle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incident.audience import Customer, configured_audience, given_audience, iter_audience
from incident.branches import load_branches
from incident.cap import (
    CapAlert,
    Decision,
    Key,
    Recorded,
    decide,
    load_alert,
    update_messages,
    warning_record,
)
from incident.errors import BadInput, PlaybookInvalid
from incident.playbooks import Playbook, load_playbook, playbook_files
from incident.response.journal import Journal
from incident.response.results import Result
from incident.state import fold
from incident.timeutil import to_iso


@dataclass(kw_only=True)
class Assessment(Result):
    """A CAP alert decided on: the decision, the customers per affected branch, and the
    files it was decided with (`notes`: playbooks that could not be read)."""

    file: str
    alert: CapAlert
    decision: Decision
    counts: dict[str, int]
    branch_list: str
    audience: str | None

    @property
    def acts(self) -> bool:
        """Whether `--start` would record something: an update of the incident the alert's
        first message started, or a start with a playbook for its event."""
        action = self.decision.action
        return action == "update" or (action == "start" and self.decision.playbook is not None)


@dataclass(frozen=True)
class WarningAction:
    """What an assessed alert records: an `update` of an incident or a `start`, with the
    lifecycle's keyword arguments."""

    kind: str  # "start" | "update"
    arguments: dict[str, Any] = field(default_factory=dict)


class Warnings:
    """Decide on CAP alerts."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt

    def assess(self, file: Path, *, branch_list: str | None = None,
               audience: str | None = None) -> Assessment:
        """Read the alert in `file` and decide on it (see cap.decide)."""
        listed = branch_list or self.rt.settings.branches
        if not listed:
            raise BadInput("deciding on a warning needs the branch list",
                           hint="give --branches FILE or set branches: in incident.yaml")
        branch_path = Path(branch_list) if branch_list else self.rt.path(listed)
        branches = load_branches(branch_path)
        alert = load_alert(file)
        books, notes = self._playbooks()
        decision = decide(alert, now=self.rt.clock.now(), branches=branches, playbooks=books,
                          recorded=self.recorded())
        return Assessment(file=str(file), alert=alert, decision=decision,
                          counts=self._customer_counts(decision, audience),
                          branch_list=str(branch_path), audience=audience, notes=notes)

    def action(self, assessed: Assessment, *, queue_only: bool = False) -> WarningAction | None:
        """What `--start` records for an assessed alert: None for the same alert again (a
        feed read twice); BadInput when it cancels an incident or cannot start one."""
        decision, file = assessed.decision, assessed.file
        short = decision.incident[-6:] if decision.incident else ""
        if decision.action == "duplicate":
            return None
        if decision.action == "stand_down":
            raise BadInput(f"not starting: the alert in {file} cancels {decision.incident}",
                           hint=f"stand it down: incident resolve {short} --message \"...\"")
        if not assessed.acts:
            raise BadInput(f"not starting: the alert in {file} "
                           + ("needs a playbook for its event" if decision.applies
                              else "does not apply"),
                           hint="; ".join(decision.reasons[:3]))
        info = decision.info
        assert info is not None
        if decision.action == "update":
            message, message_zh = update_messages(decision)
            return WarningAction("update", {
                "ref": decision.incident, "message": message, "message_zh": message_zh,
                "severity": decision.grade, "queue_only": queue_only,
                "warning": warning_record(decision)})
        assert decision.playbook is not None
        # Detection is when the warning took effect (not when it was read here), if past.
        effective = info.effective or assessed.alert.sent
        now = self.rt.clock.now()
        return WarningAction("start", {
            "playbook": decision.playbook.id, "title": (info.headline or info.event)[:200],
            "severity": decision.grade,
            "detected_at": to_iso(effective) if effective <= now else None,
            "branches": tuple(b.id for b in decision.branches),
            "branch_list": assessed.branch_list, "audience": assessed.audience,
            "queue_only": queue_only, "warning": warning_record(decision)})

    def recorded(self) -> dict[Key, Recorded]:
        """The CAP alerts recorded on incidents (and those they reference), by (sender,
        identifier): what a new alert updates, cancels or repeats."""
        store = self.journal.store
        found: dict[Key, Recorded] = {}
        for row in store.incidents():  # newest first: it wins
            view = fold(store.events(row.id))
            for key in view.warning_keys:
                found.setdefault(key, Recorded(
                    incident_id=view.id, is_open=view.status.is_open,
                    status=view.status.value, playbook=view.playbook, severity=view.severity))
        return found

    def _playbooks(self) -> tuple[list[Playbook], list[str]]:
        """Every playbook that loads, and a note for each that does not."""
        books, notes = [], []
        for path in playbook_files(self.rt.playbook_path).values():
            try:
                books.append(load_playbook(path))
            except PlaybookInvalid as exc:
                notes.append(f"skipping playbook {path}: {exc.message}")
        return books, notes

    def _customer_counts(self, decision: Decision, audience: str | None) -> dict[str, int]:
        """Customers per affected branch, in one streaming pass over the customer list
        (rows with problems are not counted; `start` reports them)."""
        if not decision.branches:
            return {}
        settings = self.rt.settings
        path = (given_audience(self.rt, audience) if audience
                else configured_audience(self.rt, settings.default_audience))
        ids = {b.id.casefold(): b.id for b in decision.branches}
        counts = dict.fromkeys(ids.values(), 0)
        for item in iter_audience(path, default_language=settings.default_language,
                                  default_region=settings.phone_region):
            if isinstance(item, Customer) and (key := ids.get(item.branch.casefold())):
                counts[key] += 1
        return counts
