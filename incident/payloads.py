"""What each event type records: one frozen model per `EventType`, written and read through it.

An event's payload is stored as the JSON of the dict a writer gives (the hash chain is over that
JSON), so a model here never adds, drops or converts a key: `payload_data` dumps only the keys
that were given (`exclude_unset`), and the models validate strictly (no coercion: `"yes"` is not
a boolean) and refuse unknown keys on write; a stored key no model knows (a newer build's) is
left out of the typed view on read (`payload_of`) so that the incident stays readable. Optional
keys are absent when a writer leaves them out; where a reader cares whether a key was given at
all (`Updated.eta`), it asks `given(...)`.

Every payload recorded by an earlier release still parses: keys added since are optional.
"""

from __future__ import annotations

from copy import deepcopy
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from incident.errors import Location, RecordInvalid
from incident.models import Event, EventType


def _iso_time(value: str) -> str:
    """Kept as the string given (that is what is hashed); only checked to be an ISO time."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    return value


IsoTime = Annotated[str, AfterValidator(_iso_time)]
TextByLanguage = dict[str, str]  # {"zh-CN": …, "en": …}


class Record(BaseModel):
    """Base of every payload and sub-record: immutable, unknown keys and coercions refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def given(self, name: str) -> bool:
        """The writer gave key `name` (possibly as null), as opposed to leaving it out."""
        return name in self.model_fields_set


# ---------------------------------------------------------------------- shared sub-records


class Notice(Record):
    """A customer notice (or, with `audience: internal`, an internal one) recorded with an
    event; its messages are the outbox rows of the event's seq."""

    phase: str = Field(description="initial | update | eta_changed | resolved; `notice` for "
                                   "an internal notice")
    template_set: str | None = Field(
        default=None, description="absent only in the provisional notice a write renders its "
                                  "checks with")
    channels: list[str] = Field(default_factory=list)
    context: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="the template context by language, as rendered")
    messages: int = Field(description="outbox rows enqueued with it")
    recipients: int = Field(description="customers (parties for an internal notice)")
    audience: Literal["internal", "staff"] | None = Field(
        default=None, description="internal: to parties; staff: a roll-call's messages")
    transports: dict[str, str] | None = Field(
        default=None, description="declared: the transport per channel its rows were recorded for")


class CapWarning(Record):
    """The CAP alert an incident was started or updated from (`warnings ingest --start`)."""

    identifier: str
    sender: str
    sent: IsoTime
    msg_type: str
    references: list[str] = Field(description='"sender,identifier,sent" of earlier alerts')
    event: str
    severity: str
    expires: IsoTime | None
    branches: list[str]


class ManualDetails(Record):
    """The manual-handling channel's details, texts by language."""

    hotline: str | dict[str, str] | None = None  # by customer region: {default: …, R: …}
    hours: TextByLanguage
    counters: TextByLanguage | None = None
    workaround: TextByLanguage | None = None


class AudienceRecord(Record):
    """What a start's notice rows are derived from, so that they can be derived again if
    recording them is interrupted (empty in the sample incident templates are checked with)."""

    file: str | None = None
    rows: int = 0
    skipped: int = 0
    selected: int = 0
    path: str | None = None  # the keys below: since release 947c8d0
    sha256: str | None = None
    bytes: int | None = None
    language: str | None = None
    phone_region: str | None = None
    selection: dict[str, Any] | None = Field(default=None,
                                             description="audience.scan.Selection.record")
    recorder: str | None = None
    utf8_refusal: str | None = None
    counts: Literal["pending"] | None = None  # the counts so far: exact in audience_read
    # A SQL audience (instead of `path`): its name, the environment variable holding the
    # database URL (never the URL), and the query; `sha256` is then the rows' fingerprint.
    name: str | None = None
    url_env: str | None = None
    query: str | None = None


class ScopeBranch(Record):
    """A branch of the incident's scope (from the branch list)."""

    id: str
    name: str
    name_en: str | None = None
    region: str = ""
    distance_km: int | float | None = Field(
        default=None, description="open branches: distance to the nearest closed one")


class Scope(Record):
    """The branches the incident closes and the open ones nearby."""

    file: str | None
    closed: list[ScopeBranch]
    open: list[ScopeBranch]


# ---------------------------------------------------------------------- mixins


class Payload(Record):
    """Base of the payload of one event type."""


class WithNotice(Payload):
    """A payload that may carry the notice it records."""

    notice: Notice | None = None


class WithSteps(Payload):
    """A payload that may complete checklist steps (the action they name was just done)."""

    steps_done: list[str] = Field(default_factory=list)


class WithWarning(Payload):
    """A payload that may record a CAP alert."""

    warning: CapWarning | None = None


# ---------------------------------------------------------------------- one model per event


class Declared(WithNotice, WithSteps, WithWarning):
    """declared: the incident is started (its first event)."""

    title: str
    title_zh: str | None = None
    title_zh_hk: str | None = None
    playbook: dict[str, Any] = Field(description="the whole playbook as recorded")
    severity: str
    drill: bool = False
    detected_at: IsoTime
    eta: IsoTime | None = None
    affected: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    branches_selected: list[str] = Field(default_factory=list)
    audience: AudienceRecord | None = None
    scope: Scope | None = None
    manual: ManualDetails | None = Field(
        default=None, description="absent when the manual channel is not opened at start")


class AudienceRead(Payload):
    """audience_read: exact counts of a list read after notice #1 was recorded (pending)."""

    rows: int  # read; skipped: bad; partial: kept without a bad contact; selected: recipients
    skipped: int
    partial: int = 0
    selected: int
    messages: int  # notice #1's on its channels; by_channel: per channel, then language
    by_channel: dict[str, dict[str, int]] = Field(default_factory=dict)
    unreachable: int = 0  # selected customers with no contact on its channels
    sha256: str  # of the bytes read: the one recorded up front
    utf8_refusal: str | None = None


class Updated(WithNotice, WithWarning):
    """updated: progress, status and/or severity (a re-grade); customers get the notice
    unless `internal`."""

    message: str
    message_zh: str | None = None
    message_zh_hk: str | None = None
    internal: bool = False
    status: Literal["investigating", "identified", "monitoring"] | None = None
    severity: str | None = None
    previous_severity: str | None = None
    eta: IsoTime | None = Field(default=None, description="given only when the ETA changes with it")
    to: list[str] | None = Field(default=None, description="parties told in an internal notice")
    reopened: list[str] | None = Field(default=None, description="branches announced reopened")


class EtaRevised(WithNotice):
    """eta_revised: a new estimated recovery time, with the reason customers are told."""

    eta: IsoTime
    previous: IsoTime | None = None
    reason: str
    message: str = ""
    message_zh: str | None = None
    message_zh_hk: str | None = None


class Resolved(WithNotice):
    """resolved: service restored (the recovery notice)."""

    message: str
    message_zh: str | None = None
    message_zh_hk: str | None = None
    resolved_at: IsoTime


class Closed(Payload):
    """closed: the record is final; `forced` with cases unreconciled, and why."""

    forced: bool = False
    reason: str | None = None
    unreconciled: list[str] = Field(default_factory=list, description="case ids")


class ManualOpened(ManualDetails, WithSteps):
    """manual_opened: the manual channel opened, or its details changed while open."""


class ManualClosed(Payload):
    """manual_closed: the manual channel closed (its cases stay to be reconciled)."""

    note: str | None = None


class CaseLogged(Payload):
    """case_logged: a customer request handled by hand."""

    case: str
    customer: str
    request: str
    amount: str | None = Field(default=None, description="a decimal string")
    urgent: bool = False


class CaseReconciled(Payload):
    """case_reconciled: a manual case entered back into the recovered system."""

    case: str
    note: str | None = None


class StepDone(WithSteps):
    """step_done: a checklist step done by hand."""

    step: str
    note: str | None = None


class StepSkipped(Payload):
    """step_skipped: a checklist step skipped, and why."""

    step: str
    reason: str


class PartiesNotified(WithNotice, WithSteps):
    """parties_notified: an internal notice to departments and outside bodies
    (notice.audience == "internal")."""

    parties: list[str]
    kind: str = "notice"
    message: str = ""


class PartyAcked(Payload):
    """party_acked: a party confirmed it received the notices."""

    party: str
    note: str | None = None


class Alerted(Payload):
    """alerted: `incident watch` told the supervisor that `keys` fell due."""

    keys: list[str]
    alerts: list[str]
    message: str = ""


class DeliveryRerouted(Payload):
    """delivery_rerouted: pending messages moved onto this configuration's transports."""

    moved: dict[str, dict[str, int]] = Field(
        description="messages moved, by channel and the transport they were recorded for")
    to: dict[str, str] = Field(description="the transport, by channel")


class Escalated(Payload):
    """escalated: one escalation step applied to customers whose messages were not confirmed
    in time (masked counts only: the rows themselves are in the outbox, the cases in their
    own events)."""

    step: int = Field(ge=1, description="the playbook's escalation step, from 1")
    after: str = Field(description="the step's delay, e.g. 15m")
    to: str = Field(description="email, sms, voice or manual_callback")
    source: str | None = Field(default=None, description="the channel escalated from")
    customers: int = Field(ge=0, description="customers escalated")
    messages: int = Field(ge=0, description="outbox rows queued on `to`")
    cases: list[str] = Field(default_factory=list, description="call-back cases logged")
    no_address: int = Field(default=0, ge=0,
                            description="customers with no contact on `to`, not escalated")


class OptoutOverridden(Payload):
    """optout_overridden: the incident's later notices go to suppressed numbers too."""

    reason: str = Field(min_length=1, description="why (e.g. a regulatory notice)")
    suppressed: int = Field(ge=0, description="numbers on the suppression list at the time")


class RollcallStarted(Payload):
    """rollcall_started: the staff roll-call's question sent to the staff list (SMS, email);
    its roster is in the rollcall_members table, its messages are the outbox rows of this
    seq (recipients `party:staff:<id>`: internal, never customers)."""

    question: TextByLanguage = Field(description="the question as sent, by language")
    every: str = Field(description="the delay between rounds, e.g. 15m")
    max_rounds: int = Field(ge=1, le=20)
    members: int = Field(ge=1)
    teams: list[str] = Field(default_factory=list)
    branches: list[str] = Field(default_factory=list)
    file: str | None = None
    skipped: int = Field(default=0, ge=0, description="bad rows left out")
    notice: Notice


class RollcallRound(Payload):
    """rollcall_round: a reminder round, by voice, to the staff who had not answered."""

    round: int = Field(ge=2)
    members: int = Field(ge=0, description="staff called")
    notice: Notice


Via = Literal["sms", "email", "voice", "supervisor"]  # how a roll-call answer came


class RollcallAnswered(Payload):
    """rollcall_answered: one staff member's answer (1 safe and able to work, 2 safe but
    unable to work, 3 need help); a 3 alerts their manager and the duty desk (`notice`)."""

    member: str
    answer: int = Field(ge=1, le=3)
    via: Via
    provider_id: str | None = Field(default=None, description="the reply's id at the provider")
    received_at: IsoTime | None = Field(default=None, description="the provider's time of it")
    alerted: list[str] = Field(default_factory=list,
                               description="who the need-help alert went to (staff id, party)")
    notice: Notice | None = None
class ReplyReceived(Payload):
    """reply_received: a customer answered a notice (an SMS, or a key pressed in a call)."""

    customer: str = Field(description="the customer's reference")
    number: str = Field(description="the sender's number, masked")
    source: Literal["sms", "keypad"]
    kind: str = Field(description="callback | stop | text")
    text: str = Field(description="the reply, one line, control characters removed, bounded")
    case: str | None = Field(default=None, description="the manual case it made, if any")
    urgent: bool = False
    acknowledged: bool = Field(default=False,
                               description="the automatic acknowledgement was queued with it")
    notice: Notice | None = Field(default=None, description="the acknowledgement, if queued")


class Note(Payload):
    """note: a post-mortem note in one section."""

    section: str
    text: str


class ActionAdded(Payload):
    """action_added: a post-mortem action item."""

    action: str
    owner: str
    due: IsoTime
    text: str


class ActionDone(Payload):
    """action_done: a post-mortem action item done."""

    action: str
    note: str | None = None


class ChainTampered(Payload):
    """chain_tampered: a write found the event chain broken (and went on)."""

    problems: list[str]


MODELS: dict[EventType, type[Payload]] = {
    EventType.DECLARED: Declared, EventType.AUDIENCE_READ: AudienceRead,
    EventType.UPDATED: Updated,
    EventType.ETA_REVISED: EtaRevised, EventType.RESOLVED: Resolved,
    EventType.CLOSED: Closed, EventType.MANUAL_OPENED: ManualOpened,
    EventType.MANUAL_CLOSED: ManualClosed, EventType.CASE_LOGGED: CaseLogged,
    EventType.CASE_RECONCILED: CaseReconciled, EventType.STEP_DONE: StepDone,
    EventType.STEP_SKIPPED: StepSkipped, EventType.PARTIES_NOTIFIED: PartiesNotified,
    EventType.PARTY_ACKED: PartyAcked, EventType.ALERTED: Alerted,
    EventType.DELIVERY_REROUTED: DeliveryRerouted, EventType.ESCALATED: Escalated,
    EventType.NOTE: Note, EventType.OPTOUT_OVERRIDDEN: OptoutOverridden,
    EventType.ROLLCALL_STARTED: RollcallStarted, EventType.ROLLCALL_ROUND: RollcallRound,
    EventType.ROLLCALL_ANSWERED: RollcallAnswered,
    EventType.REPLY_RECEIVED: ReplyReceived,
    EventType.ACTION_ADDED: ActionAdded, EventType.ACTION_DONE: ActionDone,
    EventType.CHAIN_TAMPERED: ChainTampered,
}


def parse_payload(type: EventType, data: dict[str, Any] | Payload) -> Payload:
    """The payload of an event of `type` from what a writer gives (a model or a dict);
    RecordInvalid naming each wrong key."""
    model = MODELS[type]
    if isinstance(data, Payload):
        if not isinstance(data, model):
            raise RecordInvalid(f"a {type.value} event cannot record a "
                                f"{type_name(data)} payload")
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(Location(field=".".join(str(part) for part in err["loc"]) or None),
                     err["msg"]) for err in exc.errors()]
        raise RecordInvalid(f"the {type.value} event's data does not match its record "
                            f"({len(problems)} problem(s)): nothing was recorded",
                            problems=problems) from None


def type_name(payload: Payload) -> str:
    """The model's name (`Declared`), for messages."""
    return type(payload).__name__


def payload_data(payload: Payload) -> dict[str, Any]:
    """What is stored for `payload`: exactly the keys its writer gave."""
    return payload.model_dump(mode="json", exclude_unset=True)


def payload_of(event: Event) -> Payload:
    """The typed payload of `event`, parsed once per event (events are immutable)."""
    cached = event._payload
    if cached is not None and cached[0] is event.data:
        return cached[1]
    payload = _read(event.type, event.data)
    event._payload = (event.data, payload)
    return payload


def _read(type: EventType, data: dict[str, Any]) -> Payload:
    """A stored payload, read as leniently as is safe: a key no model knows (written by a
    newer build) is left out of the typed view rather than making the incident unreadable in
    an emergency; a known key of the wrong type still raises RecordInvalid. Writing stays
    strict (`parse_payload`), and what is stored (and hashed) is never changed."""
    try:
        return MODELS[type].model_validate(data)
    except ValidationError as exc:
        unknown = [err["loc"] for err in exc.errors() if err["type"] == "extra_forbidden"]
        if not unknown:
            return parse_payload(type, data)  # raises RecordInvalid naming each key
        known = deepcopy(data)
        for loc in unknown:
            *parents, key = loc
            holder: Any = known
            for part in parents:
                holder = holder[part]
            holder.pop(key, None)
        return parse_payload(type, known)
