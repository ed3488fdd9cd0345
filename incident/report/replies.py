"""The replies section of the post-mortem report (under minimal impact): customers' replies
to the incident by kind, the call-back cases they made and how fast those were closed
(reconciled) after the reply, the acknowledgements sent. Unmatched replies (of no customer)
belong to no incident and are not counted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from incident.inbound.replies import CALLBACK, STOP, TEXT
from incident.models import Event
from incident.payloads import ReplyReceived, payload_of
from incident.report.checks import since
from incident.state import IncidentView
from incident.store import Connection
from incident.store import replies as rp
from incident.store.reports import rank


def reply_figures(view: IncidentView, events: list[Event],
                  conn: Connection) -> dict[str, Any] | None:
    """The replies' figures (None: the incident had no reply)."""
    kinds = rp.kinds(conn, view.id)
    if not kinds:
        return None
    made: dict[str, datetime] = {}  # call-back case -> the reply that made it
    for event in events:
        p = payload_of(event)
        if isinstance(p, ReplyReceived) and p.kind == CALLBACK and p.case:
            made.setdefault(p.case, event.at)
    closed = sorted(s for case, at in made.items() if case in view.cases
                    and (s := since(at, view.cases[case].reconciled_at)) is not None)
    recorded, sent = rp.acks(conn, view.id)
    return {
        "received": sum(kinds.values()),
        "by_kind": {kind: kinds.get(kind, 0) for kind in (CALLBACK, STOP, TEXT)},
        "callback_cases": len(made),
        "callback_cases_closed": len(closed),
        "reply_to_callback_closed_s": {
            "median": closed[rank(50, len(closed)) - 1] if closed else None,
            "p90": closed[rank(90, len(closed)) - 1] if closed else None},
        "acknowledgements": {"recorded": recorded, "sent": sent},
    }
