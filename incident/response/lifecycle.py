"""The incident's lifecycle after its declaration: progress updates (and re-grades), a
revised ETA, recovery and closure, each recorded through the journal with the notice it
carries and the internal notice to the parties it concerns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from incident.controls import plain
from incident.errors import InvalidTransition, InvalidValue, Location
from incident.models import OPEN_STATES, EventType, Phase, Status
from incident.parties import check_parties, drill_barred, playbook_parties
from incident.payloads import Closed, EtaRevised, Payload, Resolved, Updated
from incident.privacy import mask_reference
from incident.response.journal import Notify
from incident.response.results import NoticeResult
from incident.response.start import Declaration
from incident.state import IncidentView
from incident.timeutil import to_iso

OPEN = frozenset(OPEN_STATES)


class Lifecycle(Declaration):
    """start (response/start.py), update, revise the ETA, resolve, close."""

    def update(self, ref: str, *, message: str, message_zh: str | None = None,
               message_zh_hk: str | None = None,
               eta: str | None = None, status: str | None = None, severity: str | None = None,
               internal: bool = False, to: Sequence[str] = (),
               queue_only: bool = False,
               warning: dict[str, Any] | None = None,
               reopen: Sequence[str] = ()) -> NoticeResult:
        """Record a progress update (`warning`: the CAP Update it comes from; `reopen`: the
        branches it announces reopened, recorded with it).

        Customers get an update notice unless `internal`. Parties: those named in `to`; with
        `internal` and no `to`, all the playbook's parties; a new `severity` (re-grade) is
        announced to all of them.
        """
        message = plain(message)
        if not message:
            raise InvalidValue("must not be empty", field="message")
        chinese = chinese_texts(message_zh, message_zh_hk)
        targets = check_parties(self.rt, to)
        new_status = None
        if status:
            try:
                new_status = Status(status)
            except ValueError:
                raise InvalidValue(f"{status!r} is not one of investigating, identified, "
                                   "monitoring", field="status") from None
            if new_status not in OPEN_STATES:
                command = "resolve" if new_status is Status.RESOLVED else "close"
                raise InvalidTransition(f"{status} is not an update: use `incident {command}`",
                                        field="status")

        def build(view: IncidentView, now: datetime) -> Updated:
            data: dict[str, Any] = {"message": message.strip(), "internal": internal, **chinese}
            if warning:
                data["warning"] = warning
            if reopen:
                data["reopened"] = list(dict.fromkeys(reopen))
            if new_status and new_status != view.status:
                data["status"] = new_status.value
            if eta:
                data["eta"] = to_iso(self.journal.future(eta, now, "eta"))
            if severity and severity != view.severity:
                levels = [level.id for level in view.playbook.severity.levels]
                if severity not in levels:
                    raise InvalidValue(f"{severity!r} is not a grade of {view.playbook.id}",
                                       field="severity", hint=f"grades: {', '.join(levels)}")
                data["severity"] = severity
                data["previous_severity"] = view.severity
            if targets:
                barred = [p for p in targets if p in drill_barred(view)]
                if barred:
                    raise InvalidValue(f"{', '.join(barred)}: {view.id} is a drill, and "
                                       "a drill never reaches the regulator", field="to",
                                       hint="leave the regulator out of drills")
                data["to"] = targets
            return Updated(**data)  # only the keys given are recorded

        def notify(view: IncidentView, update: Payload) -> tuple[list[str], str] | None:
            if isinstance(update, Updated) and update.severity:
                everyone = playbook_parties(self.rt, view)
                return list(dict.fromkeys([*everyone, *targets])), "regraded"
            if targets:
                return targets, "update"
            if internal:
                return playbook_parties(self.rt, view), "update"
            return None

        phase = None if internal else Phase.UPDATE
        return self.journal.record(ref, EventType.UPDATED, phase, build, allowed=OPEN,
                                   verb="update", notify=notify, sends=not queue_only)

    def revise_eta(self, ref: str, *, when: str, reason: str, reason_zh: str | None = None,
                   reason_zh_hk: str | None = None, queue_only: bool = False) -> NoticeResult:
        """Announce a changed estimated recovery time, with the reason (in Chinese too when
        given: it is the notice's message)."""
        reason = plain(reason)
        if not reason:
            raise InvalidValue("must not be empty: customers are told why the ETA moved",
                               field="reason")
        chinese = chinese_texts(reason_zh, reason_zh_hk)

        def build(view: IncidentView, now: datetime) -> EtaRevised:
            new = self.journal.future(when, now, "when")
            return EtaRevised(eta=to_iso(new), previous=to_iso(view.eta) if view.eta else None,
                              reason=reason.strip(), message=reason.strip()).model_copy(
                                  update=chinese)  # only the Chinese texts given

        return self.journal.record(ref, EventType.ETA_REVISED, Phase.ETA_CHANGED, build,
                                   allowed=OPEN, verb="revise the ETA of",
                                   notify=self._everyone("eta_changed"), sends=not queue_only)

    def resolve(self, ref: str, *, message: str, message_zh: str | None = None,
                message_zh_hk: str | None = None, at: str | None = None,
                queue_only: bool = False) -> NoticeResult:
        """Declare service restored and send the recovery notice that closes the loop."""
        message = plain(message)
        if not message:
            raise InvalidValue("must not be empty", field="message")
        chinese = chinese_texts(message_zh, message_zh_hk)

        def build(view: IncidentView, now: datetime) -> Resolved:
            when = self.journal.past(at, now, "at") if at else now
            if when < view.detected_at:
                raise InvalidValue(f"{at!r} is before the incident was detected", field="at")
            resolved = Resolved(message=message.strip(), resolved_at=to_iso(when))
            return resolved.model_copy(update=chinese)  # only the Chinese texts given

        return self.journal.record(ref, EventType.RESOLVED, Phase.RESOLVED, build,
                                   allowed=OPEN, verb="resolve",
                                   notify=self._everyone("resolved"), sends=not queue_only)

    def close(self, ref: str, *, force: bool = False, reason: str | None = None) -> NoticeResult:
        """Close a resolved incident; its record is then final.

        Refused while manual cases are unreconciled, unless forced with a reason (recorded).
        """
        if force and not (reason and reason.strip()):
            raise InvalidValue("is needed to force a close: why close with cases unreconciled",
                               field="reason")

        def build(view: IncidentView, now: datetime) -> Closed:
            open_cases = view.unreconciled
            if open_cases and not force:
                raise InvalidTransition(
                    f"cannot close {view.id}: {len(open_cases)} manual case(s) not reconciled",
                    problems=[(Location(field=c.id), f"customer {mask_reference(c.customer)}: "
                                                     f"{c.request}") for c in open_cases],
                    hint=f"reconcile them (incident manual reconcile {view.id[-6:]} CASE), or "
                         "close with --force --reason \"...\"")
            if force and open_cases:
                return Closed(forced=True, reason=(reason or "").strip(),
                              unreconciled=[c.id for c in open_cases])
            return Closed()

        return self.journal.record(ref, EventType.CLOSED, None, build,
                                   allowed=frozenset({Status.RESOLVED}), verb="close")

    def _everyone(self, kind: str) -> Notify:
        def notify(view: IncidentView, payload: Payload) -> tuple[list[str], str] | None:
            parties = playbook_parties(self.rt, view)
            return (parties, kind) if parties else None
        return notify


def chinese_texts(zh: str | None, zh_hk: str | None) -> dict[str, str]:
    """The Chinese versions of a typed text that were given (`message_zh`, `message_zh_hk`),
    cleaned; the notice shows each language its own or a conversion (languages.chinese_text)."""
    given = {"message_zh": plain(zh or "").strip(), "message_zh_hk": plain(zh_hk or "").strip()}
    return {key: value for key, value in given.items() if value}
