"""Commands that read the record itself: timeline (every event, in words) and verify (the
hash chain)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from incident.cli.app import App, pass_app
from incident.cli.output import Output
from incident.errors import ChainBroken, Location
from incident.timeutil import parse_iso

if TYPE_CHECKING:  # the rest is imported where used: `incident --help` needs none of it
    from incident.models import Event


def _describe(event: Event, when: Callable[[datetime | None], str]) -> str:
    from incident.payloads import (
        AudienceRead,
        Declared,
        EtaRevised,
        Resolved,
        Updated,
        WithNotice,
        payload_of,
    )
    from incident.privacy import scrub

    p = payload_of(event)

    def at(value: str | None) -> str:
        return when(parse_iso(value)) if value else "—"

    parts: list[str] = []
    if isinstance(p, Declared):
        parts.append(f"declared from {p.playbook['id']}: {p.title} (severity {p.severity})")
        if p.eta:
            parts.append(f"ETA {at(p.eta)}")
    if isinstance(p, Updated) and p.status:
        parts.append(f"status → {p.status}")
    if isinstance(p, EtaRevised):
        parts.append(f"ETA {at(p.previous)} → {at(p.eta)}")
    elif isinstance(p, Updated) and p.eta:
        parts.append(f"ETA → {at(p.eta)}")
    message = getattr(p, "message", None)  # most kinds that notify carry one
    if message:
        parts.append(f"“{message}”")
    if isinstance(p, Updated) and p.internal:
        parts.append("(internal)")
    if isinstance(p, Resolved):
        parts.append(f"recovered at {at(p.resolved_at)}")
    if isinstance(p, Updated) and p.severity:
        parts.append(f"severity {p.previous_severity or '?'} → {p.severity}")
    parts += _describe_coordination(event)
    notice = p.notice if isinstance(p, WithNotice) else None
    if notice:
        label = "internal" if notice.audience == "internal" else notice.phase
        pending = isinstance(p, Declared) and p.audience and p.audience.counts == "pending"
        parts.append(f"[{label} notice: {notice.messages} messages"
                     + (" so far, while the audience was read]" if pending else "]"))
    if isinstance(p, AudienceRead):
        parts.append(f"audience read: {p.rows} rows, {p.skipped} skipped, {p.selected} "
                     f"customers, notice #1: {p.messages} messages")
    # Texts typed by staff may name a customer's phone or email.
    return scrub(" · ".join(parts)) or event.type.value


def _describe_coordination(event: Event) -> list[str]:
    """The details of the manual-channel, checklist, party and review events."""
    from incident.payloads import (
        ActionAdded,
        ActionDone,
        Alerted,
        CaseLogged,
        CaseReconciled,
        ChainTampered,
        Closed,
        DeliveryRerouted,
        Escalated,
        ManualClosed,
        ManualOpened,
        Note,
        OptoutOverridden,
        PartiesNotified,
        PartyAcked,
        StepDone,
        StepSkipped,
        payload_of,
    )
    from incident.privacy import mask_reference
    from incident.regions import describe

    p = payload_of(event)
    if isinstance(p, ManualOpened):
        return ["manual channel opened" + (f", hotline {describe(p.hotline)}" if p.hotline
                                           else "")]
    if isinstance(p, ManualClosed):
        return ["manual channel closed"]
    if isinstance(p, CaseLogged):
        return [f"case {p.case} for {mask_reference(p.customer)}: {p.request}"
                + (f" ({p.amount})" if p.amount else "") + (" URGENT" if p.urgent else "")]
    if isinstance(p, CaseReconciled):
        return [f"case {p.case} reconciled" + (f": {p.note}" if p.note else "")]
    if isinstance(p, StepDone):
        return [f"step {p.step} done" + (f": {p.note}" if p.note else "")]
    if isinstance(p, StepSkipped):
        return [f"step {p.step} skipped: {p.reason}"]
    if isinstance(p, PartiesNotified):
        return [f"{p.kind} to {', '.join(p.parties)}"]
    if isinstance(p, PartyAcked):
        return [f"{p.party} acknowledged"]
    if isinstance(p, Alerted):
        return [f"alerted: {'; '.join(p.alerts)}"]
    if isinstance(p, DeliveryRerouted):
        return describe_reroute(event)
    if isinstance(p, Escalated):
        return [f"escalation step {p.step} (after {p.after}) to {p.to}: {p.customers} customers"
                + (f", cases {', '.join(p.cases)}" if p.cases else f", {p.messages} messages")]
    if isinstance(p, OptoutOverridden):
        return [f"opt-outs overridden ({p.suppressed} numbers listed): {p.reason}"]
    if isinstance(p, Closed) and p.forced:
        return [f"FORCED with cases {', '.join(p.unreconciled)} unreconciled: {p.reason or ''}"]
    if isinstance(p, Note):
        return [f"note ({p.section}): {p.text[:80]}"]
    if isinstance(p, ActionAdded):
        return [f"action {p.action} for {p.owner}: {p.text[:60]}"]
    if isinstance(p, ActionDone):
        return [f"action {p.action} done"]
    if isinstance(p, ChainTampered):
        return [f"EVENT CHAIN FOUND BROKEN: {'; '.join(p.problems)}"]
    return []


def describe_reroute(event: Event) -> list[str]:
    """What a DELIVERY_REROUTED event moved, one line per channel and former transport."""
    from incident.payloads import DeliveryRerouted, payload_of

    rerouted = payload_of(event)
    assert isinstance(rerouted, DeliveryRerouted)
    return [f"{n} pending {channel} messages rerouted from {transport} to {rerouted.to[channel]}"
            for channel, moved in rerouted.moved.items() for transport, n in moved.items()]


def _public(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data as shown: no playbook or notice body, a manual case's customer
    reference masked when it was typed as a phone number or email, and every phone number
    or email typed into a text (a request, a message, a note) masked."""
    from incident.privacy import mask_reference, scrub

    def shown(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, list):
            return [shown(v) for v in value]
        if isinstance(value, dict):
            return {k: shown(v) for k, v in value.items()}
        return value

    public = {k: v for k, v in data.items() if k not in {"playbook", "notice"}}
    if isinstance(public.get("customer"), str):
        public["customer"] = mask_reference(public["customer"])
    return {k: shown(v) for k, v in public.items()}


@click.command()
@click.argument("incident_id", metavar="ID")
@pass_app
def timeline(app: App, incident_id: str) -> None:
    """Every recorded action of an incident, in order, with who did it."""
    view, events = app.response.queries.timeline(incident_id)
    receipts = app.response.queries.receipts(view.id)
    out = app.out
    if out.as_json:
        out.json({"id": view.id, "events": [
            {"seq": e.seq, "type": e.type.value, "at": e.at.isoformat(), "actor": e.actor,
             "data": _public(e.data),
             "notice": ({k: v for k, v in e.data["notice"].items() if k != "context"}
                        if e.data.get("notice") else None), "hash": e.hash} for e in events],
            "receipts": [{"channel": r.channel, "state": r.state, "source": r.source,
                          "count": r.count, "first": r.first.isoformat(),
                          "last": r.last.isoformat()} for r in receipts]})
        return
    out.table(f"{view.id} — {view.title}", ["#", "time", "by", "event", "details"],
              [[e.seq, out.when(e.at), e.actor, e.type.value, _describe(e, out.when)]
               for e in events])
    if receipts:
        out.table("Delivery receipts (provider times)", ["first", "last", "channel", "state",
                                                         "source", "count"],
                  [[out.when(r.first), out.when(r.last), r.channel, r.state, r.source, r.count]
                   for r in receipts])


@click.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@pass_app
def verify(app: App, incident_id: str | None) -> None:
    """Recompute the hash chain of an incident's events (or of every incident) and, with
    INCIDENT_CHAIN_KEY set, check the signatures that anchor it outside the database.

    Exits 1 naming the first broken event when a row was modified, deleted or reordered, a
    signature does not match, or a write recorded that it found the chain broken.
    """
    results = app.response.queries.verify(incident_id)
    anchored = app.response.journal.anchored
    broken, unsigned = _split_unsigned(results)
    _show_verified(app.out, results, broken, unsigned, anchored=anchored)
    _warn_unproven(app.out, unsigned, anchored=anchored)
    if broken:
        lines = [f"{ident} {p}" for ident, problems in broken.items() for p in problems]
        raise ChainBroken(f"event chain broken in {len(broken)} incident(s)",
                          problems=[(Location(), line) for line in lines],
                          hint="the database was changed outside the toolkit; keep a copy "
                               "of it for investigation")


Problems = dict[str, list[str]]


def _split_unsigned(results: Problems) -> tuple[Problems, Problems]:
    """The incidents whose chain is broken, and those whose only problem is that they are not
    signed (recorded before the key was set)."""
    from incident.store.events import UNSIGNED

    # Events recorded before the key was set are not signed: what verify then proves is what
    # it proves without a key — said, but not a broken chain.
    broken = {k: [p for p in v if UNSIGNED not in p] for k, v in results.items()}
    broken = {k: v for k, v in broken.items() if v}
    unsigned = {k: v for k, v in results.items() if v and k not in broken}
    return broken, unsigned


def _show_verified(out: Output, results: Problems, broken: Problems, unsigned: Problems, *,
                   anchored: bool) -> None:
    """What verify found, per incident (or as JSON)."""
    if out.as_json:
        out.json({"verified": len(results) - len(broken), "broken": broken,
                  "unsigned": unsigned, "anchored": anchored})
        return
    intact = ("[green]chain intact, signatures valid[/green]" if anchored
              else "[green]chain intact[/green] (not anchored)")
    for ident in results:
        out.line(f"{ident}: " + (
            f"[bold red]{len(broken[ident])} problem(s)[/bold red]" if ident in broken
            else "[yellow]chain intact, not signed[/yellow]" if ident in unsigned
            else intact))


def _warn_unproven(out: Output, unsigned: Problems, *, anchored: bool) -> None:
    """Say what verify could not prove: without the key, or for incidents not signed."""
    from incident.store.events import CHAIN_KEY_ENV

    if not anchored:
        out.warn(f"not anchored: {CHAIN_KEY_ENV} is not set, so this proves only that each log "
                 "agrees with the head stored in the same database; deleting the latest events "
                 "and rewriting that head, or recomputing the whole chain, would not be seen")
    if unsigned:
        out.warn(f"{len(unsigned)} incident(s) not signed with {CHAIN_KEY_ENV}: recorded before "
                 "the key was set (or their signatures were removed); for them this proves only "
                 "what it proves without a key — " + "; ".join(
                     f"{ident} {p}" for ident, problems in unsigned.items() for p in problems))


COMMANDS = [timeline, verify]
