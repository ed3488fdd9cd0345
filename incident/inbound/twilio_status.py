"""Twilio's words for a message's or call's progress, mapped to receipt states.

The same mapping serves status callbacks (form fields MessageStatus / CallStatus, ErrorCode,
AnsweredBy) and polling (the Message / Call resource's status, error_code, answered_by).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from incident.models import ReceiptState
from incident.store.receipts import Receipt

S = ReceiptState
MESSAGE_STATUS: dict[str, ReceiptState] = {
    "accepted": S.ACCEPTED, "scheduled": S.ACCEPTED, "queued": S.ACCEPTED,
    "sending": S.ACCEPTED, "sent": S.ACCEPTED,
    "delivered": S.DELIVERED, "read": S.DELIVERED,
    "undelivered": S.UNDELIVERED, "failed": S.UNDELIVERED, "canceled": S.UNDELIVERED,
}
CALL_STATUS: dict[str, ReceiptState] = {
    "queued": S.ACCEPTED, "initiated": S.ACCEPTED, "ringing": S.ACCEPTED,
    "in-progress": S.ACCEPTED,
    "completed": S.ANSWERED, "busy": S.BUSY, "no-answer": S.NO_ANSWER,
    "failed": S.UNDELIVERED, "canceled": S.UNDELIVERED,
}
# Twilio's delivery error codes, as `status` and `failed` name them.
ERROR_CODES: dict[str, str] = {
    "30001": "queue overflow", "30002": "account suspended", "30003": "unreachable handset",
    "30004": "message blocked", "30005": "unknown destination", "30006": "landline or "
    "unreachable carrier", "30007": "filtered by the carrier", "30008": "unknown error",
    "21610": "unsubscribed (STOP)",
}
OPTED_OUT_CODES = frozenset({"21610"})


class Malformed(ValueError):
    """A callback or resource that names no message or call, or no status Twilio uses."""


def state_of(kind: str, status: str, code: str | None, answered_by: str | None) -> ReceiptState:
    """The receipt state of a message (`kind` "sms") or call ("voice") in `status`."""
    table = MESSAGE_STATUS if kind == "sms" else CALL_STATUS
    state = table.get(status.strip().lower())
    if state is None:
        raise Malformed(f"unknown {'MessageStatus' if kind == 'sms' else 'CallStatus'} "
                        f"{status!r}")
    if code in OPTED_OUT_CODES and state is S.UNDELIVERED:
        return S.OPTED_OUT
    if state is S.ANSWERED and (answered_by or "").startswith(("machine", "fax")):
        return S.MACHINE
    return state


def from_callback(form: Mapping[str, str], *, now: datetime) -> Receipt:
    """The receipt a status callback reports (source callback); Malformed if it is none.

    Twilio's message callbacks carry no time of their own: the time they arrive is the
    provider time then (call callbacks carry `Timestamp`, a carrier's `RawDlrDoneDate` is used
    when present).
    """
    if form.get("CallSid") and form.get("CallStatus"):
        kind, sid, status = "voice", form["CallSid"], form["CallStatus"]
    elif (form.get("MessageSid") or form.get("SmsSid")) and (
            form.get("MessageStatus") or form.get("SmsStatus")):
        kind = "sms"
        sid = form.get("MessageSid") or form["SmsSid"]
        status = form.get("MessageStatus") or form["SmsStatus"]
    else:
        raise Malformed("neither MessageSid + MessageStatus nor CallSid + CallStatus")
    if len(sid) > 64 or not sid.isalnum():
        raise Malformed("the SID is not a Twilio SID")
    code = (form.get("ErrorCode") or "").strip() or None
    if code is not None and not code.isdigit():
        raise Malformed(f"ErrorCode {code!r} is not a number")
    at = _time(form.get("Timestamp"), form.get("RawDlrDoneDate")) or now
    return Receipt(state=state_of(kind, status, code, form.get("AnsweredBy")),
                   status=status.strip().lower(), provider_at=at, source="callback",
                   code=code, provider_ref=sid)


def from_resource(kind: str, sid: str, resource: Mapping[str, object], *,
                  now: datetime) -> Receipt:
    """The receipt a fetched Message / Call resource reports (source poll)."""
    status = str(resource.get("status") or "")
    code_value = resource.get("error_code")
    code = str(code_value) if code_value not in (None, "", 0) else None
    at = resource.get("end_time") or resource.get("date_updated")
    return Receipt(state=state_of(kind, status, code, _str(resource.get("answered_by"))),
                   status=status.lower(), provider_at=_as_time(at) or now, source="poll",
                   code=code, provider_ref=sid)


def _time(stamp: str | None, dlr: str | None) -> datetime | None:
    if stamp:
        try:
            return _as_time(parsedate_to_datetime(stamp))
        except (TypeError, ValueError) as exc:
            raise Malformed(f"Timestamp {stamp!r} is not an RFC 2822 date") from exc
    if dlr and len(dlr) == 10 and dlr.isdigit():  # YYMMDDhhmm, UTC
        try:
            return datetime.strptime(dlr, "%y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            return None
    return None


def _as_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            return _as_time(parsedate_to_datetime(value))
        except (TypeError, ValueError):
            return None
    return None


def _str(value: object) -> str | None:
    return None if value is None else str(value)
