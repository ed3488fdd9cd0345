"""Email validation of one contact, fast for common addresses (phones: audience/phones.py)."""

from __future__ import annotations

from collections.abc import Callable

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT
from email_validator.syntax import validate_email_domain_name


class _EmailCheck:
    """`validate_email(raw, check_deliverability=False).normalized`, fast for common addresses.

    An address whose local part is a plain ASCII dot-atom with one @ is what email_validator
    accepts without change on that side (RFC 2142 role names aside, which it lower-cases), so
    only its domain needs checking, and a domain is checked once per file with the library's
    own function; the total length is checked as the library does. Anything else — quotes,
    display names, non-ASCII local parts, bracketed IPs, role names, an invalid domain, a
    length over the limit — goes through `validate_email` itself, so the accepted set, the
    normalised form and every error message are the library's.
    """

    MAX_DOMAINS = 10_000  # a list with more distinct domains than this checks the rest each time
    _ROLES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)

    def __init__(self) -> None:
        self.domains: dict[str, tuple[str, int] | None] = {}
        # Why an address needing SMTPUTF8 (non-ASCII local part) cannot be sent, asked once.
        self.refuse_utf8: Callable[[], str | None] | None = None
        self._utf8_refusal: list[str | None] = []

    def normalized(self, raw: str) -> str:
        """The normalised address; EmailNotValidError as the library raises it."""
        local, at, domain_part = raw.partition("@")
        if (at and "@" not in domain_part and DOT_ATOM_TEXT.match(local)
                and not email_validator.STRICT and local.lower() not in self._ROLES):
            try:
                domain = self.domains[domain_part]
            except KeyError:
                domain = self._domain(domain_part)
            # The local part is ASCII: the address's three forms (as given, normalised, with
            # the ASCII domain) fit in 254 octets when the local part fits the domain's room.
            if domain is not None and len(local) <= domain[1]:
                return f"{local}@{domain[0]}"
        valid = validate_email(raw, check_deliverability=False)
        if valid.smtputf8 and self.refuse_utf8 is not None:
            if not self._utf8_refusal:
                self._utf8_refusal.append(self.refuse_utf8())
            if self._utf8_refusal[0]:
                raise EmailNotValidError(
                    "the part before the @ is not ASCII, which needs SMTPUTF8, and "
                    f"{self._utf8_refusal[0]}; reach this customer on another channel")
        return valid.normalized

    def _domain(self, domain_part: str) -> tuple[str, int] | None:
        """(domain as the library normalises it, room left for the local part), or None (not
        on the fast path: a bracketed literal, or invalid — validate_email then says why)."""
        result: tuple[str, int] | None = None
        if domain_part and not (domain_part.startswith("[") and domain_part.endswith("]")):
            try:
                info = validate_email_domain_name(
                    domain_part, test_environment=email_validator.TEST_ENVIRONMENT,
                    globally_deliverable=email_validator.GLOBALLY_DELIVERABLE)
                longest = max(_utf8_len(domain_part), _utf8_len(info["domain"]),
                              _utf8_len(info["ascii_domain"]))
                result = (info["domain"], _EMAIL_MAX - 1 - longest)
            except EmailNotValidError:
                result = None
        if len(self.domains) < self.MAX_DOMAINS:
            self.domains[domain_part] = result
        return result


_EMAIL_MAX = 254  # octets (email_validator's EMAIL_MAX_LENGTH)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
