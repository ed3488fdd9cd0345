"""Pydantic domain types shared by every layer: localized text, durations, states, events."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PrivateAttr

from incident.errors import InvalidValue
from incident.languages import LANGUAGES as LANGUAGES  # re-exported
from incident.languages import to_hk
from incident.timeutil import format_duration, parse_duration


def _to_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError("expected a duration such as 30m, 2h or 1h30m")
    if isinstance(value, int | float):
        # A bare number in YAML is ambiguous (seconds? minutes?): refuse it.
        raise ValueError(f"{value!r} has no unit: write e.g. {value}m or {value}h")
    try:
        return parse_duration(str(value))
    except InvalidValue as exc:
        raise ValueError(exc.message) from None


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
]


class Strict(BaseModel):
    """Base for config-like models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Text(Strict):
    """A text in every notice language; without a `zh-HK` text, the zh-CN one in Hong Kong
    Traditional characters (OpenCC s2hk)."""

    zh_CN: str = Field(alias="zh-CN", min_length=1)
    zh_HK: str | None = Field(default=None, alias="zh-HK", min_length=1)
    en: str = Field(min_length=1)

    def get(self, lang: str) -> str:
        """The text in `lang` (zh-CN, zh-HK or en)."""
        if lang == "zh-HK":
            return self.zh_HK or to_hk(self.zh_CN)
        return self.zh_CN if lang == "zh-CN" else self.en

    def texts(self) -> dict[str, str]:
        """The text in every language, keyed by language."""
        return {lang: self.get(lang) for lang in LANGUAGES}


class Status(StrEnum):
    """Incident states, in lifecycle order."""

    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    CLOSED = "closed"

    @property
    def is_open(self) -> bool:
        """True while the incident is still being worked (before resolution)."""
        return self in OPEN_STATES


OPEN_STATES = frozenset({Status.INVESTIGATING, Status.IDENTIFIED, Status.MONITORING})


class Kind(StrEnum):
    """The two incident types of the emergency policy."""

    SYSTEM_FAILURE = "system_failure"
    NATURAL_DISASTER = "natural_disaster"


class Phase(StrEnum):
    """Which customer notice a template is for."""

    INITIAL = "initial"
    UPDATE = "update"
    ETA_CHANGED = "eta_changed"
    RESOLVED = "resolved"


class DeliveryState(StrEnum):
    """State of one outbox row (recipient × channel × notice)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # never sent: the number opted out (store/optouts.py)


class ReceiptState(StrEnum):
    """What a provider reported about a row after accepting it (a receipt's state).

    `accepted` is progress (queued, sending, sent to the carrier, ringing, in progress): it
    settles nothing. The others are final: the row is settled with them.
    """

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED_HARD = "bounced_hard"
    BOUNCED_SOFT = "bounced_soft"
    OPTED_OUT = "opted_out"
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    MACHINE = "machine"


# The rank of each receipt state: a row's state only moves up (see store/receipts.py). Among
# final states (rank > 0) the provider's later time wins; on the same time, the higher rank.
RECEIPT_RANK: dict[ReceiptState, int] = {
    ReceiptState.ACCEPTED: 0,
    ReceiptState.BOUNCED_SOFT: 1, ReceiptState.NO_ANSWER: 1, ReceiptState.BUSY: 1,
    ReceiptState.UNDELIVERED: 2, ReceiptState.BOUNCED_HARD: 2, ReceiptState.OPTED_OUT: 3,
    ReceiptState.MACHINE: 4, ReceiptState.DELIVERED: 5, ReceiptState.ANSWERED: 5,
}
CONFIRMED_STATES = frozenset({ReceiptState.DELIVERED, ReceiptState.ANSWERED})
# Final states that say the customer was not reached: `failed` lists them with the failures.
NOT_REACHED = frozenset({ReceiptState.UNDELIVERED, ReceiptState.BOUNCED_HARD,
                         ReceiptState.OPTED_OUT, ReceiptState.NO_ANSWER, ReceiptState.BUSY})


class EventType(StrEnum):
    """Everything the supervisor does is one of these."""

    DECLARED = "declared"
    # the exact counts of a start's audience recorded before it was read to the end
    AUDIENCE_READ = "audience_read"
    UPDATED = "updated"  # progress, status and/or severity (re-grade)
    ETA_REVISED = "eta_revised"
    RESOLVED = "resolved"
    CLOSED = "closed"
    # minimal impact: the manual-handling channel and its cases
    MANUAL_OPENED = "manual_opened"  # opened, or its details changed
    MANUAL_CLOSED = "manual_closed"
    CASE_LOGGED = "case_logged"
    CASE_RECONCILED = "case_reconciled"
    # the checklist: playbook steps and regulator duties
    STEP_DONE = "step_done"
    STEP_SKIPPED = "step_skipped"
    # coordination
    PARTIES_NOTIFIED = "parties_notified"  # an internal notice to departments / outside bodies
    PARTY_ACKED = "party_acked"
    ALERTED = "alerted"  # `incident watch` told the supervisor something fell due
    # delivery: pending messages moved to another transport (deliver --reroute-to-config-...)
    DELIVERY_REROUTED = "delivery_rerouted"
    # delivery: unconfirmed customers escalated to the next channel / call-back cases
    ESCALATED = "escalated"
    # later notices go to numbers on the suppression list too (an obligation; with a reason)
    OPTOUT_OVERRIDDEN = "optout_overridden"
    # the staff roll-call (response/rollcall.py): started, a reminder round, an answer
    ROLLCALL_STARTED = "rollcall_started"
    ROLLCALL_ROUND = "rollcall_round"
    ROLLCALL_ANSWERED = "rollcall_answered"
    # a customer's reply (SMS or key press): a call-back or text case, an opt-out
    REPLY_RECEIVED = "reply_received"
    # the post-mortem (edited by people after the incident)
    NOTE = "note"
    ACTION_ADDED = "action_added"
    ACTION_DONE = "action_done"
    # the record: a write found the event chain broken (and went on, after warning)
    CHAIN_TAMPERED = "chain_tampered"


class Event(BaseModel):
    """One entry of an incident's append-only, hash-chained log."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    seq: int
    type: EventType
    at: datetime
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str
    # (data, its typed payload): incident.payloads.payload_of parses `data` once per event.
    _payload: tuple[dict[str, Any], Any] | None = PrivateAttr(default=None)
