"""Customer replies (an inbound SMS, a key pressed in a call): what they ask for, by the
playbook's `replies:` keywords, and their text made safe to keep and show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from incident.controls import one_line
from incident.inbound.optout import is_stop, normalise
from incident.playbooks import Replies

CALLBACK = "callback"
STOP = "stop"
TEXT = "text"
KINDS = (CALLBACK, STOP, TEXT)


@dataclass(frozen=True, slots=True)
class InboundReply:
    """A reply as the provider delivered it (webhook or poll), before it is matched."""

    sid: str  # MessageSid, or the CallSid of a key press
    number: str  # the sender, as the provider gave it
    to_number: str | None
    body: str  # the text, or the digit pressed
    at: datetime
    source: str = "sms"  # sms | keypad


def classify(body: str, keywords: Replies) -> str:
    """callback, stop or text: a keyword is the whole message, in any of the languages."""
    if is_stop(body, keywords.stop):
        return STOP
    text = normalise(body)
    words = {normalise(w) for each in keywords.callback.values() for w in each}
    return CALLBACK if text and text in words else TEXT


def clean(body: str, limit: int) -> str:
    """The reply's text as it is kept: one line, control characters removed, at most `limit`
    characters (an ellipsis marks a cut)."""
    text = one_line(body)
    return text if len(text) <= limit else text[:limit - 1] + "…"
