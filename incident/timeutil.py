"""Durations (`90m`, `1h30m`) and times (`14:30`, ISO) in the configured zone; UTC inside."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from incident.errors import InvalidValue

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m(?:in)?)?(?:(?P<s>\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """Parse `90m`, `2h`, `1h30m`, `1d`, `45s` into a positive timedelta."""
    cleaned = str(text).strip().lower().replace(" ", "")
    match = _DURATION.match(cleaned)
    if not cleaned or not match or not any(match.groupdict().values()):
        raise InvalidValue(f"not a duration: {text!r} (use e.g. 90m, 2h, 1h30m, 1d)")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    try:
        value = timedelta(days=parts.get("d", 0), hours=parts.get("h", 0),
                          minutes=parts.get("m", 0), seconds=parts.get("s", 0))
    except OverflowError:
        raise InvalidValue(f"duration too long: {text!r}") from None
    if value <= timedelta(0):
        raise InvalidValue(f"duration must be positive: {text!r}")
    return value


def format_duration(value: timedelta) -> str:
    """Render a timedelta compactly: `1h30m`, `45m`, `2d3h`; negative values get a minus sign."""
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    out = ""
    if days:
        out += f"{days}d"
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if not out:
        out = f"{seconds}s"
    return sign + out


def get_zone(name: str) -> ZoneInfo:
    """Return the zone called `name` or raise InvalidValue."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidValue(f"unknown time zone: {name!r}") from exc


def parse_iso(text: str, zone: ZoneInfo | None = None) -> datetime:
    """Parse an ISO timestamp; naive values are taken in `zone` (UTC if none). Returns UTC."""
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidValue(f"not a time: {text!r} (use 14:30, 2026-11-23T14:30 or 90m)") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone or UTC)
    return value.astimezone(UTC)


# The zone and the label of times in zh-HK notices (Hong Kong readers read Hong Kong time).
HONG_KONG = ZoneInfo("Asia/Hong_Kong")
TIME_LABELS = {"zh-HK": "香港時間"}

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_when(text: str, *, zone: ZoneInfo, now: datetime, future: bool = True) -> datetime:
    """Parse WHEN: relative (`90m`, `1h30m`), a clock time (`14:30`) or ISO, in `zone`. UTC out.

    A clock time means the next such time when `future` (ETA), else the last one (detection).
    """
    try:
        return _parse_when(text, zone=zone, now=now, future=future)
    except OverflowError:
        raise InvalidValue(f"{str(text).strip()!r} is beyond the calendar") from None


def _parse_when(text: str, *, zone: ZoneInfo, now: datetime, future: bool) -> datetime:
    text = str(text).strip()
    if not text:
        raise InvalidValue("empty time")
    if text.lower() == "now":
        return now
    if _DURATION.match(text.lower().replace(" ", "")) and not text.isdigit():
        delta = parse_duration(text)
        return now + delta if future else now - delta
    clock = _CLOCK.match(text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise InvalidValue(f"not a clock time: {text!r}")
        local_now = now.astimezone(zone)
        candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if future and candidate <= local_now:
            candidate += timedelta(days=1)
        if not future and candidate > local_now:
            candidate -= timedelta(days=1)
        return candidate.astimezone(UTC)
    return parse_iso(text, zone)


def to_iso(value: datetime) -> str:
    """Canonical UTC ISO text with seconds precision, e.g. 2026-11-23T06:30:00Z."""
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_text(value: datetime, zone: ZoneInfo, *, with_date: bool = True,
               label: str | None = None) -> str:
    """Human time in the configured zone: `2026-11-23 14:30 CST` or `14:30`; `label` in
    place of the zone's abbreviation (`2026-11-23 14:30 香港時間`)."""
    try:
        local = value.astimezone(zone)
    except OverflowError:  # a stored year-9999 time shown east of UTC: show it in UTC
        local = value.astimezone(UTC)
    fmt = "%Y-%m-%d %H:%M" if with_date else "%H:%M"
    return f"{local.strftime(fmt)} {label or local.tzname() or ''}".strip()
