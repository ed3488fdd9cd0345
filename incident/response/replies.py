"""Replies: every customer's inbound reply (an SMS to our numbers, a key pressed in a call)
goes through `Replies.receive`, from the receipts server's webhooks and from `receipts poll`
(`Response.receive_reply` first offers it to an open staff roll-call: an answer of a staff
member is a roll-call answer, recorded there once per provider reference).

A customer's reply is kept once per provider reference, matched by number to the customer's
most recent incident not closed and recorded there as one event (a call-back or text case on
the manual channel, or an opt-out on the suppression list), with at most one automatic
acknowledgement per customer per incident (store/replies.py: a unique key), queued on the SMS
channel in the customer's language. A number no customer row has is kept unmatched, for the
operator to see (`incident replies`). The same text again from a customer (a reply loop, an
auto-responder) is kept and counted but recorded once: it joins the first one's event and case,
so a flood neither grows the incident's record nor opens cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers

from incident.inbound.replies import CALLBACK, STOP, TEXT, InboundReply, classify, clean
from incident.manual import opened
from incident.models import EventType, Phase, Status
from incident.notices import message_id, sender_domain
from incident.payloads import CaseLogged, Notice, ReplyReceived
from incident.playbooks import Replies as ReplyKeywords
from incident.privacy import mask_phone
from incident.rendering import ACK_PHASE
from incident.response.journal import Journal
from incident.response.results import Result
from incident.state import IncidentView, fold
from incident.store import optouts
from incident.store import outbox as ob
from incident.store import replies as rp

ACK_SET = "replies"  # templates/replies/ack/sms.<lang>.txt
OPTOUT_SOURCE = "sms-reply"
CALLBACK_REQUEST = "Call back: the customer replied {text!r}"
TEXT_REQUEST = "Reply: {text}"


@dataclass(kw_only=True)
class Received(Result):
    """What became of one reply."""

    reply_id: int | None  # None: this provider reference was received before (nothing new)
    kind: str = TEXT  # callback | stop | text | rollcall (a handler's)
    incident_id: str | None = None  # None: unmatched (or a duplicate)
    case: str | None = None
    acknowledged: bool = False

    @property
    def duplicate(self) -> bool:
        """The same reply was received before: nothing was recorded this time."""
        return self.reply_id is None


@dataclass(kw_only=True)
class Listed(Result):
    """Replies of one incident or of all, unmatched included (numbers in full: mask them)."""

    rows: list[Any] = field(default_factory=list)


class Replies:
    """Receive customers' replies; list them."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def receive(self, reply: InboundReply) -> Received:
        """Keep `reply` once (by provider reference) and act on it, in one transaction
        committed before this returns (the webhook answers after); a duplicate does nothing."""
        store = self.journal.store
        number = e164(reply.number)
        keywords = ReplyKeywords()
        text = clean(reply.body, keywords.max_text)
        kind = classify(text, keywords)
        with store.write() as conn:
            reply_id = rp.add(conn, provider_ref=reply.sid, source=reply.source, number=number,
                              to_number=reply.to_number, body=text, kind=kind,
                              received_at=reply.at)
            if reply_id is None:
                return Received(reply_id=None)
            for customer in rp.candidates(conn, number):
                repeat = rp.repeat_of(conn, incident_id=customer.incident_id,
                                      recipient_ref=customer.ref, body=text)
                if repeat is not None:  # a reply loop: kept, counted, recorded once
                    rp.attach(conn, reply_id, incident_id=customer.incident_id,
                              recipient_ref=customer.ref, kind=repeat.kind,
                              case_id=repeat.case_id, event_seq=repeat.event_seq)
                    return Received(reply_id=reply_id, kind=repeat.kind,
                                    incident_id=customer.incident_id, case=repeat.case_id)
                store.lock_incident(conn, customer.incident_id)
                view = fold(store.events(customer.incident_id, conn))
                if view.status is not Status.CLOSED:
                    return self._record(conn, view, customer, reply, reply_id, number,
                                        self.journal.rt.clock.now())
        return Received(reply_id=reply_id, kind=kind)  # unmatched: kept, no customer

    def list(self, ref: str | None) -> Listed:
        """The replies of incident `ref`, or all of them (unmatched included)."""
        store = self.journal.store
        incident_id = store.resolve_id(ref) if ref else None
        with store.read() as conn:
            return Listed(rows=rp.listed(conn, incident_id))

    def _record(self, conn: Any, view: IncidentView, customer: rp.Customer,
                reply: InboundReply, reply_id: int, number: str, now: datetime) -> Received:
        keywords = view.playbook.replies
        text = clean(reply.body, keywords.max_text)
        kind = classify(text, keywords)
        case = None
        if kind == STOP:
            optouts.add(conn, number, source=OPTOUT_SOURCE, now=now,
                        reason=f"replied {text!r} to {view.id[-6:]}")
        elif kind == CALLBACK and self._called_back(view, customer.ref):
            pass  # one open call-back case per customer is enough
        else:
            case = self._case(conn, view, customer, kind, text, now)
        ack = None
        if kind != STOP and rp.claim_ack(conn, incident_id=view.id, recipient_ref=customer.ref,
                                         reply_id=reply_id, now=now):
            ack = self._ack(conn, view, customer, number, kind, case, now)
        payload = ReplyReceived(customer=customer.ref, number=mask_phone(number),
                                source="keypad" if reply.source == "keypad" else "sms",
                                kind=kind, text=text, case=case, urgent=customer.urgent,
                                acknowledged=ack is not None, notice=ack)
        event = self.journal.append(conn, view, EventType.REPLY_RECEIVED, payload, now)
        rp.attach(conn, reply_id, incident_id=view.id, recipient_ref=customer.ref, kind=kind,
                  case_id=case, event_seq=event.seq)
        return Received(reply_id=reply_id, kind=kind, incident_id=view.id, case=case,
                        acknowledged=ack is not None)

    @staticmethod
    def _called_back(view: IncidentView, ref: str) -> bool:
        return any(c.customer == ref and c.request.startswith("Call back: ")
                   and c.reconciled_at is None for c in view.cases.values())

    def _case(self, conn: Any, view: IncidentView, customer: rp.Customer, kind: str, text: str,
              now: datetime) -> str:
        """A manual case for the hotline team (the channel opened first if it is not)."""
        if not view.manual_open:
            self.journal.append(conn, view, EventType.MANUAL_OPENED, opened(view), now)
        request = (CALLBACK_REQUEST.format(text=text) if kind == CALLBACK
                   else TEXT_REQUEST.format(text=text))
        case = CaseLogged(case=f"M{len(view.cases) + 1:03d}", customer=customer.ref,
                          request=request, urgent=customer.urgent)
        self.journal.append(conn, view, EventType.CASE_LOGGED, case, now)
        return case.case

    def _ack(self, conn: Any, view: IncidentView, customer: rp.Customer, number: str,
             kind: str, case: str | None, now: datetime) -> Notice:
        """Queue the acknowledgement (one SMS outbox row of the reply event's seq)."""
        rt = self.journal.rt
        seq = view.event_count + 1  # the reply event, appended next
        contexts = self.journal.contexts(view, Phase.UPDATE, "")
        for context in contexts.values():
            context["reply"] = {"kind": kind, "case": case}
        key = ob.idempotency_key(view.id, seq, customer.ref, "sms")
        messages = ob.enqueue(conn, [{
            "incident_id": view.id, "notice_seq": seq, "channel": "sms",
            "recipient_ref": customer.ref, "recipient_name": customer.name,
            "address": number, "language": customer.language,
            "priority": 0 if customer.urgent else 1,
            "message_id": message_id(key, view.id, sender_domain(rt)), "idempotency_key": key,
            "fallback_address": None, "transport": rt.settings.channels.transports["sms"],
            "region": customer.region}], now=now)
        return Notice(phase=ACK_PHASE, template_set=ACK_SET, channels=["sms"],
                      context=contexts, messages=messages, recipients=1)


def e164(raw: str) -> str:
    """The sender's number in E.164 when it parses as one (as outbox rows keep it)."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

