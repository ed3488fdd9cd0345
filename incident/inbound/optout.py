"""STOP keywords: whether an inbound SMS asks to opt out (response/replies.py, with the
playbook's `replies.stop`, which defaults to STOP_KEYWORDS)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

# Twilio's own English opt-out words, and the Chinese ones a sender must handle itself.
STOP_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "退订", "TD", "取消",
                 "停止")

# Punctuation and spaces around the word a customer sends ("STOP.", "退订！", " td ").
_STRIP = " \t\r\n.,;:!?。，；：！？、\"'“”‘’()（）[]【】"


def normalise(text: str) -> str:
    """`text` as keywords compare: NFKC (full-width letters to ASCII), case-folded, without
    surrounding spaces and punctuation."""
    return unicodedata.normalize("NFKC", text).strip(_STRIP).casefold()


def is_stop(body: str, keywords: Iterable[str] = STOP_KEYWORDS) -> bool:
    """Whether the whole message `body` is one of `keywords` (default STOP_KEYWORDS):
    "STOP" and "退订!" are, "please don't stop" and "TD bank" are not — a word inside a
    sentence is not an opt-out, as carriers treat it."""
    text = normalise(body)
    return bool(text) and text in {normalise(word) for word in keywords}
