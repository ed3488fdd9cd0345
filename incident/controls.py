"""Control characters in data: the ones that act on a terminal, a header or a phone screen."""

from __future__ import annotations

import re

# C0 controls but newline and tab (NUL ends a C string; ESC starts the sequences that recolour,
# retitle or rewrite a terminal; CR overwrites a line), DEL, C1 controls, and the
# bidirectional overrides that make text read differently than it is.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_OR_SPACE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\\s]+")


def one_line(text: str) -> str:
    """`text` as one line of plain words: every run of control characters and whitespace
    becomes one space, none at either end (for names that go into headers and SMS bodies)."""
    if text.isprintable() and "  " not in text:  # the common case, at C speed
        return text.strip()
    return _UNSAFE_OR_SPACE.sub(" ", text).strip()


def plain(text: str) -> str:
    """Free text typed by a supervisor (a message, a reason) as it may reach a notice: line
    breaks kept (CR LF and CR as LF), every other control character removed, no space at
    either end."""
    if text.isprintable():  # the common case
        return text.strip()
    return UNSAFE.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
