"""Contact data never leaves a report unmasked, even inside free text."""

from __future__ import annotations

import re

from incident.audience import mask_email, mask_phone

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A phone number written with its country code (+86 138 0013 8000), a run of 8 to 15 digits
# (13800138000), or a Chinese mobile written 3-4-4. Dates and times never match: they are
# shorter runs separated by - and :.
_PHONE = re.compile(r"\+\d[\d \-]{6,18}\d|(?<![\d.])\d{8,15}(?![\d.])"
                    r"|(?<!\d)1\d{2}[ -]\d{4}[ -]\d{4}(?!\d)")


def scrub(text: str | None) -> str:
    """`text` with every email address and phone number in it masked."""
    if not text:
        return ""
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
