"""Phone validation of one contact: `phonenumbers`' answer, fast for the common written shape.

Validating a number with the library (parse, possible, valid, E.164) costs about 25 µs on a
quiet machine, and a list of 100,000 customers with a mobile each spent 2.5 s of `incident
start` on it before the notice could be recorded. Almost every number in a bank's list is
written internationally — `+86 139 0012 3456`, `+85291234567` — and for that shape the
library's work reduces to a few lookups in its own metadata; that is what `_fast_e164` does,
answering only when it is sure to give the library's result and leaving every other case
(national formats, punctuation, letters, numbers the metadata reads otherwise) to the library
itself. tests/test_phones.py checks both give the same on the library's own example numbers,
mutated, for every region.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import phonenumberutil as _util
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

from incident.privacy import mask_phone

# `+`, a digit 1-9, then digits in groups split by one space or one hyphen: the shape the fast
# path knows (the library would read it the same: no extension, no IDD, no national prefix).
_INTERNATIONAL = re.compile(r"\+[1-9][0-9]*(?:[ -][0-9]+)*")
_MAX_NSN = 17  # the library's _MAX_LENGTH_FOR_NSN
_MIN_NSN = 2  # the library's _MIN_LENGTH_FOR_NSN
_UNKNOWN = phonenumbers.PhoneNumberType.UNKNOWN


class _Desc:
    """The library's `_is_number_matching_desc` for one number description, its pattern
    compiled once: a possible length (when it lists any), then the whole pattern."""

    def __init__(self, desc: PhoneNumberDesc | None) -> None:
        pattern = desc.national_number_pattern if desc is not None else None
        self.pattern = re.compile(pattern) if pattern else None
        self.lengths = frozenset(desc.possible_length if desc is not None else ())

    def matches(self, national: str) -> bool:
        if self.pattern is None or (self.lengths and len(national) not in self.lengths):
            return False
        return self.pattern.fullmatch(national) is not None


@dataclass(frozen=True)
class _Plan:
    """What the library's metadata says about one country calling code, looked up once."""

    metadata: PhoneMetadata
    national_prefix: re.Pattern[str] | None  # national_prefix_for_parsing
    general: _Desc
    mobile: _Desc
    fixed_line: _Desc


# country calling code (as digits) -> its plan; None: a code the fast path leaves to the
# library (shared by several regions, as +1 and +7 are, or without metadata).
_PLANS: dict[str, _Plan | None] = {}


def _plan(code: str) -> _Plan | None:
    try:
        return _PLANS[code]
    except KeyError:
        pass
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code), ())
    metadata = (PhoneMetadata.metadata_for_region_or_calling_code(int(code), regions[0])
                if len(regions) == 1 else None)
    plan = None
    if metadata is not None and metadata.general_desc is not None:
        prefix = metadata.national_prefix_for_parsing
        plan = _Plan(metadata, re.compile(prefix) if prefix else None,
                     _Desc(metadata.general_desc), _Desc(metadata.mobile),
                     _Desc(metadata.fixed_line))
    _PLANS[code] = plan
    return plan


def _fast_e164(raw: str) -> str | None:
    """The number in E.164 when it is written internationally and the library's metadata
    calls it valid; None when the library must answer (which includes every invalid number,
    so the reasons given stay the library's)."""
    if _INTERNATIONAL.fullmatch(raw) is None:
        return None
    digits = raw[1:].replace(" ", "").replace("-", "")
    # The library's _extract_country_code: the first 1-3 digit prefix that is a calling code.
    for size in (1, 2, 3):
        code = digits[:size]
        if int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    plan = _plan(code)
    national = digits[size:]
    if (plan is None or not _MIN_NSN <= len(national) <= _MAX_NSN
            # A national prefix the library would try to strip (Belarus' 8: +375 8105540144)
            or (plan.national_prefix is not None and plan.national_prefix.match(national))):
        return None
    # The general description's lengths and pattern: a number the library calls possible and
    # valid (a pattern is narrower than its lengths); otherwise the library says why. Valid
    # means of some type: mobile and fixed line are the usual ones, else the library's check.
    if not plan.general.matches(national):
        return None
    if not (plan.mobile.matches(national) or plan.fixed_line.matches(national)
            or _util._number_type_helper(national, plan.metadata) != _UNKNOWN):
        return None
    return f"+{code}{national}"


def parse_phone(raw: str, region: str) -> tuple[str | None, str | None]:
    """(E.164 number, None) or (None, why the number is unusable)."""
    fast = _fast_e164(raw)
    if fast is not None:
        return fast, None
    return library_e164(raw, region)


def library_e164(raw: str, region: str) -> tuple[str | None, str | None]:
    """`parse_phone` by `phonenumbers` alone: parse, possible, valid, E.164."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"invalid phone {_shown(raw)!r}: {exc}"
    if not phonenumbers.is_possible_number(number):
        return None, f"invalid phone {_shown(raw)!r}: not a possible number"
    if not phonenumbers.is_valid_number(number):
        return None, f"invalid phone {_shown(raw)!r}: not a valid number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def _shown(raw: str) -> str:
    # Masked only when a message needs it (masking parses the number once more): the warning
    # is printed, and even a wrong number is personal data.
    return mask_phone(raw)
