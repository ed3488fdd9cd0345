"""The fast phone path gives `phonenumbers`' own answer: the library's example numbers for every
region, non-geographic code and number type, written the ways people write them, and mutated
(a digit changed, added or dropped) so that invalid, impossible and other-region numbers are
tried too."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from incident.audience import phones
from incident.audience.phones import library_e164, parse_phone


def _examples() -> list[phonenumbers.PhoneNumber]:
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(number)
        invalid = phonenumbers.invalid_example_number(region)
        if invalid is not None:
            found.append(invalid)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            found.append(number)
    return found


EXAMPLES = _examples()


def _written(number: phonenumbers.PhoneNumber, style: int) -> str:
    """The number as E.164 (style 0), the library's international format (1), or digits in
    groups of 4 after the country code (2), each the way a list might hold it."""
    if style == 1:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.national_significant_number(number)
    if style == 2:
        groups = " ".join(national[i:i + 4] for i in range(0, len(national), 4))
        return f"+{number.country_code} {groups}"
    return f"+{number.country_code}{national}"


def _mutated(text: str, where: int, digit: str, how: int) -> str:
    """`text` with one digit changed (how 1), inserted (2) or dropped (3); as is (0)."""
    spots = [i for i, ch in enumerate(text) if ch.isdigit()]
    i = spots[where % len(spots)]
    if how == 1:
        return text[:i] + digit + text[i + 1:]
    if how == 2:
        return text[:i] + digit + text[i:]
    if how == 3 and len(spots) > 1:
        return text[:i] + text[i + 1:]
    return text


def test_every_example_number_as_the_library_says() -> None:
    assert len(EXAMPLES) > 1000  # the library's metadata, not a handful
    fast = 0
    for number in EXAMPLES:
        for style in (0, 1, 2):
            raw = _written(number, style)
            assert parse_phone(raw, "HK") == library_e164(raw, "HK"), raw
            fast += phones._fast_e164(raw) is not None
    assert fast > len(EXAMPLES)  # the fast path did answer for most of them


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number=st.sampled_from(EXAMPLES), style=st.integers(0, 2), where=st.integers(0, 20),
       digit=st.sampled_from("0123456789"), how=st.integers(0, 3),
       region=st.sampled_from(["HK", "CN", "US", "ZZ"]))
@example(number=phonenumbers.parse("+8613912345678"), style=2, where=0, digit="1", how=0,
         region="HK")
def test_mutated_numbers_as_the_library_says(number: phonenumbers.PhoneNumber, style: int,
                                             where: int, digit: str, how: int,
                                             region: str) -> None:
    raw = _mutated(_written(number, style), where, digit, how)
    assert parse_phone(raw, region) == library_e164(raw, region), raw


@pytest.mark.parametrize("raw", [
    "+86 139 0012 3456", "+8613900123456", "+852 9123 4567", "+85291234567", "+853 6612 3456",
    "+65 8123 4567", "+81 90 1234 5678",
])
def test_the_common_shapes_take_the_fast_path(raw: str) -> None:
    assert phones._fast_e164(raw) == library_e164(raw, "HK")[0] is not None


@pytest.mark.parametrize("raw", [
    "+86 110 1234 5678",  # CN's national prefix for parsing (carrier codes) matches: library
    "+3758105540144",  # Belarus' national prefix 8, which the library strips: not valid then
    "+1 212 555 0123", "+44 7400 123456",  # codes shared by several regions: library
    "+39 06 1234 5678",  # a leading zero the library keeps apart: library
    "9123 4567", "(+852) 9123-4567", "+852 9123 4567 ext. 12", "+８５２ ９１２３ ４５６７",
    "+852 1234 5678",  # not a valid HK number: the library says why
])
def test_other_shapes_are_left_to_the_library(raw: str) -> None:
    assert phones._fast_e164(raw) is None
    assert parse_phone(raw, "HK") == library_e164(raw, "HK")
