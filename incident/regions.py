"""Details that depend on the customer's region: a contact given once or per region
(`organisation.hotline: {default: …, hong-kong: …}`), and the time zone and its label that
times in a notice are shown in (`regions:` in incident.yaml).

A region is the customer list's `region` value, compared without case or surrounding space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from incident.errors import InvalidValue

DEFAULT = "default"

# How a notice names the time of the zones a Chinese bank's customers live in; another zone
# is named by its IANA name (never by an abbreviation such as CST, which is also US Central).
ZONE_LABELS: dict[str, dict[str, str]] = {
    "Asia/Shanghai": {"zh-CN": "北京时间", "zh-HK": "北京時間", "en": "China Standard Time"},
    "Asia/Hong_Kong": {"zh-CN": "香港时间", "zh-HK": "香港時間", "en": "Hong Kong Time"},
    "Asia/Macau": {"zh-CN": "澳门时间", "zh-HK": "澳門時間", "en": "Macao Time"},
    "Asia/Taipei": {"zh-CN": "台北时间", "zh-HK": "台北時間", "en": "Taipei Time"},
    "Asia/Singapore": {"zh-CN": "新加坡时间", "zh-HK": "新加坡時間", "en": "Singapore Time"},
    "UTC": {"zh-CN": "协调世界时", "zh-HK": "協調世界時", "en": "UTC"},
}


# The languages a region's time label may be given in.
LABEL_LANGUAGES = ("zh-CN", "zh-HK", "en")


def region_key(region: str | None) -> str:
    """The form a region is compared in."""
    return (region or "").strip().casefold()


def by_region(value: Any, what: str) -> Any:
    """Validate a value given once (a string) or per region (a map with a `default`);
    map keys are normalised with region_key. ValueError naming what is wrong."""
    if not isinstance(value, Mapping):
        return value
    keys = [region_key(str(k)) for k in value]
    if DEFAULT not in keys:
        raise ValueError(f"a {what} given per region needs a `default` entry "
                         f"(regions given: {', '.join(map(str, value)) or 'none'})")
    if len(set(keys)) != len(keys):
        raise ValueError(f"a region appears twice in the {what} map")
    return {key: item for key, item in zip(keys, value.values(), strict=True)}


def for_region(value: str | Mapping[str, str], region: str | None) -> str:
    """The value for a customer of `region`: its own, else the default."""
    if isinstance(value, str):
        return value
    return value.get(region_key(region), value[DEFAULT])


def zone_label(zone: ZoneInfo, lang: str, labels: Mapping[str, str] | None = None) -> str:
    """How a notice in `lang` names `zone`: the configured label, the known one, or its name."""
    if labels and lang in labels:
        return labels[lang]
    known = ZONE_LABELS.get(zone.key, {})
    return known.get(lang) or known.get("en") or zone.key


def labelled_time(value: datetime, zone: ZoneInfo, label: str, lang: str) -> str:
    """A time in a customer notice: `北京时间2026-11-24 11:40` in Chinese,
    `2026-11-24 11:40 Hong Kong Time` in English."""
    try:
        local = value.astimezone(zone)
    except OverflowError:  # a stored year-9999 time shown east of UTC: show it in UTC
        local, label = value.astimezone(UTC), "UTC"
    text = local.strftime("%Y-%m-%d %H:%M")
    return f"{label}{text}" if lang.lower().startswith("zh") else f"{text} {label}"


def given_per_region(values: Sequence[str], field: str) -> str | dict[str, str] | None:
    """A value given on the command line once (`NUMBER`) or per region (`NUMBER` for the
    default plus `REGION=NUMBER` for each region with its own); None when none is given."""
    plain = [v.strip() for v in values if "=" not in v]
    pairs = [v.split("=", 1) for v in values if "=" in v]
    if len(plain) > 1:
        raise InvalidValue(f"{len(plain)} values without a region; give one default",
                           field=field, hint=f"--{field} NUMBER --{field} REGION=NUMBER")
    if not pairs:
        return plain[0] if plain and plain[0] else None
    if not plain or not plain[0]:
        raise InvalidValue("a value per region needs a default (a value without REGION=)",
                           field=field, hint=f"--{field} NUMBER --{field} REGION=NUMBER")
    regional = {region_key(r): v.strip() for r, v in pairs}
    empty = [r for r, v in regional.items() if not r or not v]
    if empty or len(regional) != len(pairs):
        raise InvalidValue("each REGION=NUMBER needs a region (once) and a value", field=field)
    return {DEFAULT: plain[0], **regional}


def describe(value: str | Mapping[str, str]) -> str:
    """A value given per region, on one line for the operator: the default first."""
    if isinstance(value, str):
        return value
    others = [f"{k}: {v}" for k, v in value.items() if k != DEFAULT]
    return value[DEFAULT] + (f" ({'; '.join(others)})" if others else "")
