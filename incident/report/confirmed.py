"""Confirmed reach (issue 14): how many customers the providers confirmed reached (delivered
SMS, answered calls; on channels without delivery receipts, accepted and not bounced), next to
accepted; time to 50/95 % confirmed; what was reported undelivered and why; who was never
reached, for follow-up. When receipts exist, the transparency principle is judged on them
(*customers_reached*: no customer left unconfirmed)."""

from __future__ import annotations

from typing import Any

from incident.privacy import mask_reference
from incident.report.checks import Check, since
from incident.state import IncidentView
from incident.store import Connection, optouts
from incident.store import reports as q

# The follow-up list in the report is cut here (the count is whole): `failed --export` and
# the manual channel take over for more.
NEVER_REACHED_LISTED = 1000


def reach_json(result: q.Reach, start: Any) -> dict[str, Any]:
    """One audience's reach as JSON: how many, reached, seconds to 50/95/100 %."""
    return {"audience": result.audience, "reached": result.reached,
            **{f"p{p}_s": since(start, result.at[p]) for p in q.PERCENTILES}}


def judge_confirmed(view: IncidentView, first: Any, conn: Connection
                    ) -> tuple[dict[str, Any], Check]:
    """The confirmed-reach figures of an incident and its *customers_reached* check."""
    receipts = q.has_receipts(conn, view.id)
    seqs = [n.seq for n in view.notices]
    confirmed = q.reach(conn, view.id, first.seq, confirmed=True) if first and receipts else {}
    affected = first.recipients if first else 0
    never, refs = q.never_reached(conn, view.id, seqs, confirmed=receipts,
                                  limit=NEVER_REACHED_LISTED)
    figures = {
        "basis": "confirmed" if receipts else "accepted",
        "confirmed_reach": ({name: reach_json(r, first.at) for name, r in confirmed.items()}
                            if confirmed else None),
        "confirmed_share": (round(confirmed["customers"].reached / affected, 4)
                            if confirmed and affected else None),
        "undelivered": [{"channel": u.channel, "state": u.state, "code": u.code,
                         "count": int(u.count)} for u in q.undelivered(conn, view.id, seqs)],
        "never_reached": {"count": never, "customers": [mask_reference(r) for r in refs]},
        # Messages never sent: the number opted out (suppression list), by channel.
        "opted_out_skipped": optouts.skipped(conn, view.id),
    }
    check = Check("customers_reached", never == 0 if receipts and affected else None, never, 0,
                  unit="count")
    return figures, check
