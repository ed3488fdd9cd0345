"""Every mask and scrub: contact data and secrets never leave the toolkit unmasked.

- `mask_phone`, `mask_email`, `mask_url`, `mask_contact`, `mask_name`, `mask_reference`:
  one value as shown to people (terminal, --json, reports, warnings).
- `scrub`: free text typed by staff (a manual case's request, a progress message, a note)
  with every email address and phone number in it masked.
- `scrub_secrets`: a provider's error text with credentials removed (Authorization headers,
  Basic/Bearer tokens, passwords, `user:pass@` in URLs, Twilio SIDs, and every secret the
  toolkit read from the environment); `scrub_error` also masks contacts in it — applied
  before an error is stored (store/outbox.py) and again when it is read to be shown
  (store/deliveries.py).
- `spreadsheet_cell`: a CSV cell that a spreadsheet will not run as a formula (OWASP).
"""

from __future__ import annotations

import re

import phonenumbers

# ---------------------------------------------------------------------- one value


def mask_phone(value: str | None) -> str:
    """`+85291230004` → `+852 91****04`: the country code and at most half of the national
    digits are shown; never returns a non-empty input unchanged."""
    if not value:
        return ""
    text = value.strip()
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and number.country_code:
        national = phonenumbers.national_significant_number(number)
        masked = f"+{number.country_code} {_mask_digits(national)}"
    else:
        digits = "".join(ch for ch in text if ch.isdigit())
        masked = _mask_digits(digits) if digits else "***"
    return _differs(value, masked)


def mask_email(value: str | None) -> str:
    """`zhang.wei@example.com` → `z***@example.com`; never returns a non-empty input unchanged."""
    if not value:
        return ""
    local, at, domain = value.strip().rpartition("@")
    if not at:
        return _differs(value, "***")
    # A one-character local part would be revealed whole by keeping its first character.
    head = local[0] if len(local) > 1 else ""
    return _differs(value, f"{head}***@{domain}")


def mask_contact(value: str | None) -> str:
    """Mask an email, a phone number or a webhook URL, whichever `value` looks like."""
    if not value:
        return ""
    if _URL.match(value):
        return mask_url(value)
    if "@" in value:
        return mask_email(value)
    return mask_phone(value)


def mask_url(value: str | None) -> str:
    """`https://hooks.slack.com/services/T0/B0/XX` → `https://hooks.slack.com/…`: a chat
    webhook's path and query are often its access token, so only scheme and host show."""
    if not value:
        return ""
    return _differs(value, _URL.sub(r"\1/…", value.strip()) if _URL.match(value) else "***")


def mask_name(value: str | None) -> str:
    """`张伟` → `张*`, `Wei Zhang` → `W** Z****`; one-character words are hidden entirely."""
    if not value:
        return ""

    def word(match: re.Match[str]) -> str:
        text = match.group(0)
        return "*" if len(text) == 1 else text[0] + "*" * (len(text) - 1)

    return _differs(value, re.sub(r"\S+", word, value.strip()))


_URL = re.compile(r"^\s*(https?://[^/?#\s@]+).*$", re.I | re.S)
_LOOKS_LIKE_CONTACT = re.compile(r"@|^\+?[\d\s()-]{7,}$")


def mask_reference(ref: str) -> str:
    """A customer reference as shown to people: ids as they are; a phone number, email or
    personal name typed instead of an id is masked."""
    text = ref.strip()
    if _LOOKS_LIKE_CONTACT.search(text):
        return mask_contact(text)
    if not text.isascii() or " " in text:
        return mask_name(text)
    return text


def _mask_digits(digits: str) -> str:
    """Show at most half of the digits (rounded down), fewer at the start than at the end:
    8 digits `91****04`, 9 `91*****04`, 10 `91*****004`, 11 `13******000`."""
    n = len(digits)
    visible = n // 2
    tail = (visible + 1) // 2
    head = visible - tail
    return digits[:head] + "*" * (n - head - tail) + digits[n - tail:]


def _differs(original: str, masked: str) -> str:
    # Callers rely on masking never echoing the input, even for odd inputs such as "***".
    return masked if masked != original else "*" * (len(original) + 1)


# ---------------------------------------------------------------------- free text

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A phone number written with its country code (+86 138 0013 8000), a run of 8 to 15 digits
# (13800138000), a Chinese mobile written 3-4-4, or an 8-digit local number written 4-4 as Hong
# Kong and Singapore write them (9100 0004, 6123-4567). Dates and times never match: they are
# shorter runs separated by - and :; nor does the date inside an incident id (INC-20261124-…).
_PHONE = re.compile(r"\+\d[\d \-]{6,18}\d|(?<![A-Za-z\d.])(?<!INC-)\d{8,15}(?![A-Za-z\d.])"
                    r"|(?<!\d)1\d{2}[ -]\d{4}[ -]\d{4}(?!\d)"
                    r"|(?<!\d)(?<!\d[.:-])[2-9]\d{3}[ -]\d{4}(?!\d|[.:-]\d)")


def scrub(text: str | None) -> str:
    """`text` with every email address and phone number in it masked."""
    if not text:
        return ""
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


# ---------------------------------------------------------------------- secrets

_SECRETS: set[str] = set()
_HIDDEN = "***"
# (pattern, replacement): what a gateway or an SDK may echo back in an error.
_SECRET_PATTERNS = [
    # An Authorization / Proxy-Authorization header, to the end of its value.
    (re.compile(r"((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,;}]+", re.I),
     rf"\g<1>{_HIDDEN}"),
    (re.compile(r"\b(basic|bearer|digest|token)(\s+)[A-Za-z0-9._~+/=-]{4,}", re.I),
     rf"\1\2{_HIDDEN}"),
    # user:password@ in a URL.
    (re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]*@", re.I), rf"\1{_HIDDEN}@"),
    # password=…, "auth_token": "…", api_key: …
    (re.compile(r"((?:password|passwd|pwd|secret|auth[_-]?token|api[_-]?key|access[_-]?token)"
                r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+", re.I), rf"\g<1>{_HIDDEN}"),
    # Twilio account and API key SIDs.
    (re.compile(r"\b(AC|SK)[0-9a-fA-F]{32}\b"), rf"\1{_HIDDEN}"),
]


def remember_secret(value: str | None) -> None:
    """Note a secret read from the environment: `scrub_secrets` removes it wherever it
    appears (a provider may echo it in an error)."""
    if value and len(value) >= 4:  # a shorter "secret" would blank out ordinary words
        _SECRETS.add(value)


def scrub_secrets(text: str | None) -> str:
    """`text` (a provider's error, say) with credentials replaced by `***`."""
    if not text:
        return ""
    for value in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(value, _HIDDEN)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_error(text: str | None) -> str | None:
    """A provider's error as stored and shown: no secret, no full contact (None stays None)."""
    return None if text is None else scrub(scrub_secrets(text))


# ---------------------------------------------------------------------- exports

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: one starting with = + - @ TAB or CR (a
    formula to Excel and LibreOffice) gets a leading single quote (OWASP CSV injection);
    the writer must quote every field."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
