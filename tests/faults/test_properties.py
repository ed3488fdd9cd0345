"""Property-based tests (hypothesis): the playbook loader and the duration/time parsers answer
any input with a value or their own error (PlaybookInvalid, InvalidValue) -- never a traceback --
and round-trip where the format allows it."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from incident.errors import InvalidValue, PlaybookInvalid
from incident.playbooks import Playbook, parse_playbook
from incident.timeutil import (
    format_duration,
    parse_duration,
    parse_iso,
    parse_when,
    to_iso,
)

PLAYBOOKS = sorted((Path(__file__).resolve().parents[2] / "playbooks").glob("*.yaml"))
SHIPPED = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in PLAYBOOKS}
FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])



def load(text: str) -> Playbook | None:
    """parse_playbook: a Playbook, or None for PlaybookInvalid; anything else fails the test."""
    try:
        return parse_playbook(text, source="prop.yaml")
    except PlaybookInvalid as exc:
        assert exc.message and all(isinstance(m, str) for _, m in exc.problems)
        return None


# --- the playbook loader ----------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=30),
                    st.from_regex(r"\A\d{1,6}(d|h|m|min|s)\Z"),
                    st.sampled_from(["30m", "2h", "1h30m", "I", "II", "email", "sms", "urgent",
                                     "system_failure", "natural_disaster", "zh-CN", "en"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


@FAST
@given(st.text(max_size=400))
@example("")
@example("id: [unclosed")
@example("- a list\n- not a mapping\n")
@example("id: x\nkind: system_failure\n" + "  " * 50 + "deep: 1\n")
@example("? [a, b]\n: complex key\n")
@example("a: &x [1]\nb: *x\n")  # an alias
@example("a: " + "[" * 300 + "]" * 300)  # deep, but within the interpreter's recursion limit
@example("id: !!python/object:os.system echo\n")  # unsafe tag: refused by the safe loader
def test_any_text_is_a_playbook_or_playbook_invalid(text: str) -> None:
    load(text)


@FAST
@given(values)
def test_any_yaml_structure_is_a_playbook_or_playbook_invalid(value: Any) -> None:
    load(yaml.safe_dump(value, allow_unicode=True))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out += _paths(child, (*prefix, index))
    return out


@FAST
@given(st.sampled_from(sorted(SHIPPED)), st.data())
def test_a_shipped_playbook_with_random_damage_loads_or_is_refused(name: str,
                                                                   data: st.DataObject) -> None:
    # Start from a valid playbook and break one to three places: replace a value, delete a
    # key or an item, add an unknown key. Deeper than random YAML gets on its own.
    book = copy.deepcopy(SHIPPED[name])
    for _ in range(data.draw(st.integers(1, 3), label="damages")):
        path = data.draw(st.sampled_from(_paths(book)[1:]), label="path")
        parent = book
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]), label="action")
        if action == "replace":
            parent[path[-1]] = data.draw(values, label="value")
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=10), label="key")] = data.draw(values)
        else:
            parent.append(data.draw(values, label="item"))
    result = load(yaml.safe_dump(book, allow_unicode=True))
    if result is not None:
        assert result.id  # whatever survived validation is a usable playbook


def test_every_shipped_playbook_loads() -> None:
    # The damage test above needs valid starting points (and would pass on invalid ones).
    assert PLAYBOOKS
    for path in PLAYBOOKS:
        assert load(path.read_text(encoding="utf-8")) is not None, path


# --- durations ----------------------------------------------------------------------------------


@FAST
@given(st.text(max_size=40))
@example("")
@example("0m")
@example("1h1h")
@example("-5m")
@example("1.5h")
@example("٣m")  # an Arabic-Indic digit: \d matches it, int() reads it
def test_any_text_is_a_positive_duration_or_invalid_value(text: str) -> None:
    try:
        value = parse_duration(text)
    except InvalidValue as exc:
        assert exc.message
        return
    assert value > timedelta(0)


parts = st.tuples(st.integers(0, 400), st.integers(0, 30), st.integers(0, 300),
                  st.integers(0, 5000))


@FAST
@given(parts, st.booleans(), st.booleans())
def test_a_composed_duration_parses_to_its_sum(p: tuple[int, int, int, int], upper: bool,
                                               spaced: bool) -> None:
    d, h, m, s = p
    assume(any(p))
    text = "".join(f"{n}{unit}" for n, unit in zip(p, "dhms", strict=True) if n)
    if upper:
        text = text.upper()
    if spaced:
        text = " " + " ".join(re.findall(r"\d+\D", text)) + " "
    assert parse_duration(text) == timedelta(days=d, hours=h, minutes=m, seconds=s)


@FAST
@given(st.one_of(st.integers(1, 10**7).map(lambda n: timedelta(minutes=n)),
                 st.integers(1, 59).map(lambda n: timedelta(seconds=n))))
def test_format_duration_round_trips(value: timedelta) -> None:
    # Whole minutes (or under a minute, whole seconds): the values playbooks and ETAs use.
    assert parse_duration(format_duration(value)) == value


# --- WHEN (ETA, detection time) -------------------------------------------------------------------

# Zones without daylight saving, where a clock time always exists exactly once a day.
STEADY_ZONES = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Tokyo", "UTC", "Asia/Kolkata"]
ANY_ZONES = [*STEADY_ZONES, "Europe/London", "America/New_York", "Australia/Lord_Howe"]
nows = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(UTC))


@FAST
@given(st.text(max_size=40), st.sampled_from(ANY_ZONES), nows,
       st.booleans())
@example("24:00", "Asia/Shanghai", datetime(2026, 11, 24, tzinfo=UTC), True)
@example("2026-02-30T10:00", "UTC", datetime(2026, 1, 1, tzinfo=UTC), True)
@example("2026-03-08T02:30", "America/New_York", datetime(2026, 1, 1, tzinfo=UTC), True)
@example("now", "UTC", datetime(2026, 1, 1, tzinfo=UTC), False)
@example("12345", "UTC", datetime(2026, 1, 1, tzinfo=UTC), True)
def test_any_when_is_a_utc_time_or_invalid_value(text: str, zone: str, now: datetime,
                                                 future: bool) -> None:
    try:
        value = parse_when(text, zone=ZoneInfo(zone), now=now, future=future)
    except InvalidValue as exc:
        assert exc.message
        return
    assert value.utcoffset() == timedelta(0)


@FAST
@given(st.integers(1, 100_000), st.sampled_from(ANY_ZONES), nows, st.booleans())
def test_a_relative_when_is_now_plus_or_minus_the_duration(minutes: int, zone: str,
                                                           now: datetime, future: bool) -> None:
    got = parse_when(f"{minutes}m", zone=ZoneInfo(zone), now=now, future=future)
    assert got == now + (1 if future else -1) * timedelta(minutes=minutes)


@FAST
@given(st.integers(0, 23), st.integers(0, 59), st.sampled_from(STEADY_ZONES), nows,
       st.booleans())
def test_a_clock_time_is_the_next_or_last_such_time(hour: int, minute: int, zone: str,
                                                    now: datetime, future: bool) -> None:
    got = parse_when(f"{hour:02d}:{minute:02d}", zone=ZoneInfo(zone), now=now, future=future)
    local = got.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute, local.second) == (hour, minute, 0)
    if future:
        assert now < got <= now + timedelta(days=1)
    else:
        assert now - timedelta(days=1) < got <= now


@FAST
@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
       st.sampled_from(STEADY_ZONES))
def test_an_iso_time_is_read_in_the_configured_zone(local: datetime, zone: str) -> None:
    local = local.replace(second=0, microsecond=0)
    expected = local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    text = local.isoformat(timespec="minutes")
    assert parse_when(text, zone=ZoneInfo(zone), now=datetime(2026, 1, 1, tzinfo=UTC)) \
        == expected


@FAST
@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.just(UTC)))
def test_to_iso_round_trips_to_the_second(value: datetime) -> None:
    # From year 1000: strftime("%Y") does not pad years below 1000 to four digits.
    assert parse_iso(to_iso(value)) == value.replace(microsecond=0)


# --- edge cases that once escaped as OverflowError / RecursionError --------------------------

@pytest.mark.parametrize("text", ["9999999999d", "99999999999999999999h"])
def test_a_huge_duration_is_invalid_value(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_duration(text)


@pytest.mark.parametrize("text, zone", [("9999999999d", "UTC"),
                                        ("0001-01-01T00:00", "Asia/Shanghai"),
                                        ("9999-12-31T23:59", "America/New_York")])
def test_a_when_beyond_the_calendar_is_invalid_value(text: str, zone: str) -> None:
    with pytest.raises(InvalidValue):
        parse_when(text, zone=ZoneInfo(zone), now=datetime(2026, 1, 1, tzinfo=UTC))


def test_a_playbook_with_a_huge_duration_is_playbook_invalid() -> None:
    book = copy.deepcopy(SHIPPED["core-banking-outage"])
    book["principles"]["fast_response"]["first_notice_within"] = "99999999999d"
    with pytest.raises(PlaybookInvalid):
        parse_playbook(yaml.safe_dump(book, allow_unicode=True), source="huge.yaml")


@pytest.mark.parametrize("text", ["a: &x [*x]\n", "a: " + "[" * 2000 + "]" * 2000],
                         ids=["recursive-alias", "nested-2000"])
def test_a_self_referencing_or_very_deep_playbook_is_playbook_invalid(text: str) -> None:
    with pytest.raises(PlaybookInvalid):
        parse_playbook(text, source="deep.yaml")
