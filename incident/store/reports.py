"""SQL aggregates over the outbox that the post-mortem figures (incident.report.metrics) are
made of.

Every function runs a handful of aggregate queries (COUNT / MIN / MAX / GROUP BY, and a window
function for the time-to-reach percentiles) whatever the number of deliveries: nothing here
loops over delivery rows in Python. The queries run unchanged on SQLite (≥ 3.25, for window
functions) and PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Subquery, and_, case, func, or_, select

from incident.models import CONFIRMED_STATES, DeliveryState, ReceiptState
from incident.store import schema
from incident.store.events import as_utc

SENT = DeliveryState.SENT.value
FAILED = DeliveryState.FAILED.value
PERCENTILES = (50, 95, 100)
CONFIRMED = [s.value for s in CONFIRMED_STATES]
# Channels whose provider reports delivery (Twilio's receipts): elsewhere acceptance is the
# best evidence there is (an email is only ever reported when it bounces).
RECEIPT_CHANNELS = ("sms", "voice")
# Rows never sent because the number opted out are no messages: the report counts them apart.
NOT_SKIPPED = schema.outbox.c.state != DeliveryState.SKIPPED.value


@dataclass(frozen=True)
class Reach:
    """How one audience (a channel's messages, or customers) was reached by one notice."""

    audience: int
    reached: int
    # percentile -> when that share of the audience had been reached (None: never)
    at: dict[int, datetime | None]
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True)
class NoticeDeliveries:
    """Delivery counts of one notice, and when its first and last message were accepted."""

    seq: int
    messages: int
    sent: int
    failed: int
    pending: int  # pending or sending
    first_sent: datetime | None
    last_sent: datetime | None


@dataclass(frozen=True)
class ChannelLanguage:
    """Delivery outcome of every customer message on one channel in one language."""

    channel: str
    language: str
    messages: int
    sent: int
    failed: int


@dataclass(frozen=True)
class FailureCause:
    """Permanent failures sharing a channel and an error code, with one example text."""

    channel: str
    code: str
    count: int
    example: str


def _time(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def rank(share: int, audience: int) -> int:
    """The 1-based position of the recipient who completes `share` percent of `audience`."""
    return max(1, math.ceil(audience * share / 100))


def _reached(confirmed: bool) -> tuple[ColumnElement[bool], ColumnElement[Any]]:
    """When a row counts as reaching its customer, and at what time.

    Accepted: the provider took the message (sent_at). Confirmed: a delivered / answered
    receipt (its provider time); on channels whose providers send no delivery receipts
    (email, webhooks, files) the best there is: accepted and not reported failed (a bounce)."""
    o = schema.outbox
    if not confirmed:
        return o.c.state == SENT, o.c.sent_at
    confirmed_receipt = o.c.receipt.in_(CONFIRMED)
    unreported = o.c.channel.not_in(RECEIPT_CHANNELS) & (
        o.c.receipt.is_(None) | (o.c.receipt == ReceiptState.ACCEPTED.value))
    return ((o.c.state == SENT) & (confirmed_receipt | unreported),
            case((confirmed_receipt, o.c.receipt_at), else_=o.c.sent_at))


def reach(conn: Connection, incident_id: str, seq: int, *,
          confirmed: bool = False) -> dict[str, Reach]:
    """Time-to-reach of notice `seq`: per channel (its messages) and `customers` (a customer
    is reached when the first of their messages is accepted by the provider, or with
    `confirmed`, confirmed delivered: see `_reached`)."""
    o = schema.outbox
    mine = and_(o.c.incident_id == incident_id, o.c.notice_seq == seq)
    done, at = _reached(confirmed)
    flag = case((done, 1), else_=0)
    when = case((done, at))
    totals = conn.execute(
        select(o.c.channel, func.count(), func.sum(flag), func.min(when),
               func.max(when)).where(mine).group_by(o.c.channel)).all()
    customers = conn.execute(
        select(func.count(func.distinct(o.c.recipient_ref))).where(mine)).scalar_one()
    per_customer = (select(o.c.recipient_ref, func.min(at).label("first"))
                    .where(mine, done).group_by(o.c.recipient_ref).subquery())
    reached_customers = conn.execute(
        select(func.count(), func.min(per_customer.c.first),
               func.max(per_customer.c.first))).one()
    out: dict[str, Reach] = {}
    ranks: dict[str, dict[int, int]] = {}
    for channel, audience, reached, first, last in totals:
        ranks[channel] = {p: rank(p, audience) for p in PERCENTILES}
        out[channel] = Reach(audience, int(reached or 0), {}, _time(first), _time(last))
    ranks["customers"] = {p: rank(p, customers) for p in PERCENTILES}
    out["customers"] = Reach(int(customers), int(reached_customers[0]), {},
                             _time(reached_customers[1]), _time(reached_customers[2]))
    found = _ranked(conn, and_(mine, done), at, per_customer, ranks)
    for name, result in out.items():
        result.at.update({p: (found.get((name, ranks[name][p]))
                              if result.reached >= ranks[name][p] else None)
                          for p in PERCENTILES})
    return out


def _ranked(conn: Connection, reached: ColumnElement[bool], at: ColumnElement[Any],
            per_customer: Subquery, ranks: dict[str, dict[int, int]]
            ) -> dict[tuple[str, int], datetime]:
    """The time (`at`) of the n-th reaching row per channel (and per customer), by one window
    query each: ROW_NUMBER() over the `reached` rows ordered by `at`."""
    o = schema.outbox
    found: dict[tuple[str, int], datetime] = {}
    channels = {k: v for k, v in ranks.items() if k != "customers"}
    if channels:
        numbered = (select(o.c.channel, at.label("at"),
                           func.row_number().over(partition_by=o.c.channel,
                                                  order_by=(at, o.c.id)).label("n"))
                    .where(reached).subquery())
        wanted = or_(*[and_(numbered.c.channel == channel,
                            numbered.c.n.in_(sorted(set(by_share.values()))))
                       for channel, by_share in channels.items()])
        for channel, n, when in conn.execute(select(numbered.c.channel, numbered.c.n,
                                                    numbered.c.at).where(wanted)):
            found[(channel, int(n))] = as_utc(when)
    pc = per_customer
    numbered_c = select(pc.c.first, func.row_number().over(
        order_by=(pc.c.first, pc.c.recipient_ref)).label("n")).subquery()
    for when, n in conn.execute(select(numbered_c.c.first, numbered_c.c.n).where(
            numbered_c.c.n.in_(sorted(set(ranks["customers"].values()))))):
        found[("customers", int(n))] = as_utc(when)
    return found


def has_receipts(conn: Connection, incident_id: str) -> bool:
    """Whether a provider reported a final state for any customer row of the incident."""
    o = schema.outbox
    return conn.execute(select(o.c.id).where(
        o.c.incident_id == incident_id, o.c.receipt.is_not(None),
        o.c.receipt != ReceiptState.ACCEPTED.value,
        ~o.c.recipient_ref.like("party:%")).limit(1)).first() is not None


def undelivered(conn: Connection, incident_id: str, seqs: Sequence[int]) -> list[Any]:
    """Accepted customer rows of notices `seqs` a provider reported not confirmed, by
    (channel, receipt state, code), most frequent first."""
    o = schema.outbox
    if not seqs:
        return []
    code = func.coalesce(o.c.receipt_code, "")
    return list(conn.execute(
        select(o.c.channel, o.c.receipt.label("state"), code.label("code"),
               func.count().label("count"))
        .where(o.c.incident_id == incident_id, o.c.notice_seq.in_(list(seqs)),
               o.c.state == SENT, o.c.receipt.is_not(None),
               o.c.receipt.not_in([*CONFIRMED, ReceiptState.ACCEPTED.value]))
        .group_by(o.c.channel, o.c.receipt, code)
        .order_by(func.count().desc(), o.c.channel, o.c.receipt, code)).all())


def never_reached(conn: Connection, incident_id: str, seqs: Sequence[int], *, confirmed: bool,
                  limit: int) -> tuple[int, list[str]]:
    """Customers of notices `seqs` none of whose rows reached them (see `_reached`): how many,
    and the first `limit` of their references in order."""
    o = schema.outbox
    if not seqs:
        return 0, []
    done, _at = _reached(confirmed)
    per_customer = (select(o.c.recipient_ref)
                    .where(o.c.incident_id == incident_id, o.c.notice_seq.in_(list(seqs)),
                           ~o.c.recipient_ref.like("party:%"))
                    .group_by(o.c.recipient_ref)
                    .having(func.max(case((done, 1), else_=0)) == 0).subquery())
    count = conn.execute(select(func.count()).select_from(per_customer)).scalar_one()
    refs = conn.execute(select(per_customer.c.recipient_ref)
                        .order_by(per_customer.c.recipient_ref).limit(limit)).scalars()
    return int(count), [str(r) for r in refs]


def notices(conn: Connection, incident_id: str, seqs: Sequence[int]
            ) -> dict[int, NoticeDeliveries]:
    """Per notice: messages, sent, failed, still pending, first and last accepted (rows
    skipped for an opt-out left out)."""
    o = schema.outbox
    if not seqs:
        return {}
    sent_flag = case((o.c.state == SENT, 1), else_=0)
    failed_flag = case((o.c.state == FAILED, 1), else_=0)
    rows = conn.execute(
        select(o.c.notice_seq, func.count(), func.sum(sent_flag), func.sum(failed_flag),
               func.min(o.c.sent_at), func.max(o.c.sent_at))
        .where(o.c.incident_id == incident_id, o.c.notice_seq.in_(list(seqs)), NOT_SKIPPED)
        .group_by(o.c.notice_seq)).all()
    out = {}
    for seq, messages, sent, failed, first, last in rows:
        sent, failed = int(sent or 0), int(failed or 0)
        out[int(seq)] = NoticeDeliveries(int(seq), int(messages), sent, failed,
                                         int(messages) - sent - failed, _time(first),
                                         _time(last))
    return out


def by_channel_language(conn: Connection, incident_id: str, seqs: Sequence[int]
                        ) -> list[ChannelLanguage]:
    """Delivery outcome per channel and language over the notices `seqs` (rows skipped for an
    opt-out left out)."""
    o = schema.outbox
    if not seqs:
        return []
    sent_flag = case((o.c.state == SENT, 1), else_=0)
    failed_flag = case((o.c.state == FAILED, 1), else_=0)
    rows = conn.execute(
        select(o.c.channel, o.c.language, func.count(), func.sum(sent_flag),
               func.sum(failed_flag))
        .where(o.c.incident_id == incident_id, o.c.notice_seq.in_(list(seqs)), NOT_SKIPPED)
        .group_by(o.c.channel, o.c.language).order_by(o.c.channel, o.c.language)).all()
    return [ChannelLanguage(channel, language, int(n), int(sent or 0), int(failed or 0))
            for channel, language, n, sent, failed in rows]


def failure_causes(conn: Connection, incident_id: str, seqs: Sequence[int]
                   ) -> list[FailureCause]:
    """Permanent failures over the notices `seqs`, grouped by channel and error code, most
    frequent first. The example text is as stored: callers scrub it before showing it."""
    o = schema.outbox
    if not seqs:
        return []
    code = func.coalesce(o.c.error_code, "")
    rows = conn.execute(
        select(o.c.channel, code.label("code"), func.count().label("n"),
               func.min(o.c.last_error))
        .where(o.c.incident_id == incident_id, o.c.notice_seq.in_(list(seqs)),
               o.c.state == FAILED)
        .group_by(o.c.channel, code).order_by(func.count().desc(), o.c.channel, code)).all()
    return [FailureCause(channel, str(c), int(n), example or "")
            for channel, c, n, example in rows]


def party_deliveries(conn: Connection, incident_id: str, seqs: Sequence[int]
                     ) -> dict[str, datetime | None]:
    """For each party (recipient_ref `party:<id>`) of the internal notices `seqs`, when its
    first message was accepted (None: none accepted yet)."""
    o = schema.outbox
    if not seqs:
        return {}
    rows = conn.execute(
        select(o.c.recipient_ref, func.min(case((o.c.state == SENT, o.c.sent_at))))
        .where(o.c.incident_id == incident_id, o.c.notice_seq.in_(list(seqs)))
        .group_by(o.c.recipient_ref)).all()
    return {ref.split(":", 1)[-1]: _time(at) for ref, at in rows}


def urgent_reach(conn: Connection, incident_id: str, seq: int) -> tuple[int, int, datetime | None]:
    """Urgent customers (priority 0) of notice `seq`: how many, how many reached, and when
    the last of the reached ones was first reached."""
    o = schema.outbox
    mine = and_(o.c.incident_id == incident_id, o.c.notice_seq == seq, o.c.priority == 0)
    total = conn.execute(select(func.count(func.distinct(o.c.recipient_ref))).where(mine)
                         ).scalar_one()
    per_customer = (select(o.c.recipient_ref, func.min(o.c.sent_at).label("first"))
                    .where(mine, o.c.state == SENT).group_by(o.c.recipient_ref).subquery())
    reached, last = conn.execute(select(func.count(), func.max(per_customer.c.first))).one()
    return int(total), int(reached), _time(last)
