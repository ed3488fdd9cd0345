"""Delivery receipts in the store: kept once each, and a row's state settled by the provider's
times whatever order they arrive in (store/receipts.py), on both backends."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from incident.models import DeliveryState, EventType, ReceiptState
from incident.payloads import Declared
from incident.store import Store
from incident.store import outbox as ob
from incident.store import receipts as rc

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def sent_sms(db_url: str, sids: list[str]) -> tuple[Store, str]:
    """A store with one incident whose SMS rows (calls, for SIDs starting CA) were accepted as
    `sids`."""
    store = Store.open(db_url)
    with store.write() as conn:
        incident_id = store.create_incident(conn, playbook_id="p", title="t", drill=False, at=NOW)
        store.append(conn, incident_id, EventType.DECLARED, actor="a", at=NOW,
                     data=Declared(title="t", playbook={}, severity="P3",
                                   detected_at=NOW.isoformat()))
        ob.enqueue(conn, [{"incident_id": incident_id, "notice_seq": 1,
                           "channel": "voice" if sid.startswith("CA") else "sms",
                           "recipient_ref": f"c{k}", "recipient_name": "",
                           "address": f"+8613800000{k:03d}", "language": "en", "priority": 1,
                           "message_id": f"<{k}@y.z>", "transport": "twilio",
                           "idempotency_key": ob.idempotency_key(incident_id, 1, f"c{k}", sid)}
                          for k, sid in enumerate(sids)], now=NOW)
        rows = ob.claim(conn, worker="w", now=NOW, limit=len(sids))
        ob.mark_sent(conn, [(row.id, sid) for row, sid in zip(
            sorted(rows, key=lambda r: r.id), sids, strict=True)], now=NOW)
    return store, incident_id


def receipt(sid: str, state: ReceiptState, status: str, seconds: int,
            source: str = "callback") -> rc.Receipt:
    return rc.Receipt(state=state, status=status, provider_at=NOW + timedelta(seconds=seconds),
                      source=source, provider_ref=sid)


def settled(store: Store, sid: str) -> tuple[str | None, str | None]:
    with store.read() as conn:
        row = conn.execute(rc.schema.outbox.select().where(
            rc.schema.outbox.c.provider_ref == sid)).one()
    assert row.state == DeliveryState.SENT.value  # receipts never touch the sending state
    return row.receipt, row.receipt_code


def test_any_arrival_order_settles_the_same_and_duplicates_are_harmless(db_url: str) -> None:
    walk = [receipt("SM1", ReceiptState.ACCEPTED, "queued", 0),
            receipt("SM1", ReceiptState.ACCEPTED, "sent", 1),
            rc.Receipt(state=ReceiptState.UNDELIVERED, status="undelivered", code="30003",
                       provider_at=NOW + timedelta(seconds=5), source="callback",
                       provider_ref="SM1"),
            receipt("SM1", ReceiptState.DELIVERED, "delivered", 9)]
    orders = list(itertools.permutations(walk))[::5]
    store, _ = sent_sms(db_url, [f"SM{k}" for k in range(1, len(orders) + 1)])
    for k, order in enumerate(orders, start=1):
        with store.write() as conn:
            for one in order:
                moved = rc.Receipt(**{**_fields(one), "provider_ref": f"SM{k}"})
                rc.record(conn, [moved, moved], now=NOW)  # each twice: stored once
        assert settled(store, f"SM{k}") == ("delivered", None), order
    with store.read() as conn:
        stored = conn.execute(rc.schema.receipts.select()).all()
    assert len(stored) == 4 * len(orders)


def test_a_late_receipt_timed_before_the_settled_one_changes_nothing(db_url: str) -> None:
    store, incident_id = sent_sms(db_url, ["SM1", "SM2"])
    with store.write() as conn:
        rc.record(conn, [receipt("SM1", ReceiptState.DELIVERED, "delivered", 10)], now=NOW)
        late = rc.Receipt(state=ReceiptState.UNDELIVERED, status="undelivered", code="30005",
                          provider_at=NOW + timedelta(seconds=3), source="poll",
                          provider_ref="SM1")
        done = rc.record(conn, [late, receipt("SM9", ReceiptState.DELIVERED, "delivered", 1)],
                         now=NOW)
        rc.record(conn, [rc.Receipt(state=ReceiptState.UNDELIVERED, status="undelivered",
                                    code="30003", provider_at=NOW + timedelta(seconds=4),
                                    source="callback", provider_ref="SM2"),
                         receipt("SM2", ReceiptState.ACCEPTED, "sent", 8)], now=NOW)
    assert (done.stored, done.unmatched, done.changed) == (1, 1, [])
    assert settled(store, "SM1") == ("delivered", None)
    assert settled(store, "SM2") == ("undelivered", "30003")  # progress never unsettles
    with store.read() as conn:
        assert rc.counts(conn, incident_id) == {"sms": {"delivered": 1, "undelivered": 1}}
        assert [r.source for r in rc.of_incident(conn, incident_id)] == [
            "poll", "callback", "callback", "callback"]
        assert rc.unsettled(conn, incident_id) == []


def test_a_bounce_names_its_row_by_message_id_or_row_id(db_url: str) -> None:
    store, _ = sent_sms(db_url, ["SM1", "SM2"])
    hard = rc.Receipt(state=ReceiptState.BOUNCED_HARD, status="5.1.1", code="5.1.1",
                      provider_at=NOW + timedelta(minutes=2), source="bounce",
                      message_id="<0@y.z>")
    with store.write() as conn:
        second = conn.execute(rc.schema.outbox.select().where(
            rc.schema.outbox.c.provider_ref == "SM2")).one().id
        soft = rc.Receipt(state=ReceiptState.BOUNCED_SOFT, status="4.2.2", code="4.2.2",
                          provider_at=NOW, source="bounce", outbox_id=second)
        done = rc.record(conn, [hard, hard, soft,
                                rc.Receipt(**{**_fields(hard), "message_id": "<x@y.z>"})],
                         now=NOW)
    with store.read() as conn:
        kept = len(conn.execute(rc.schema.receipts.select()).all())
    assert (kept, done.stored, done.duplicates, done.unmatched) == (2, 2, 1, 1)
    assert settled(store, "SM1") == ("bounced_hard", "5.1.1")
    assert settled(store, "SM2") == ("bounced_soft", "4.2.2")


def _fields(one: rc.Receipt) -> dict[str, object]:
    return {name: getattr(one, name) for name in rc.Receipt.__slots__}
