"""The verdict rules: a principle is judged by a few checks, each against the playbook's own
targets; a check is passed, failed, or not applicable (null: nothing to judge yet or nothing
the playbook asks for). One check per principle is its key check.

- **met**: every applicable check passed.
- **missed**: the key check failed, or none of the applicable checks passed.
- **partly**: anything in between (the key check passed or was not applicable, another failed).

Also the JSON forms every figure takes: ISO 8601 UTC times, whole seconds, bilingual texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from incident.models import Text
from incident.timeutil import to_iso


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC text, or None."""
    return to_iso(value) if value is not None else None


def seconds(value: timedelta | None) -> int | None:
    """Whole seconds (rounded down towards minus infinity), or None."""
    return math.floor(value.total_seconds()) if value is not None else None


def since(start: datetime, end: datetime | None) -> int | None:
    """Seconds from `start` to `end`, or None when `end` is unknown."""
    return seconds(end - start) if end is not None else None


def text(value: Text) -> dict[str, str]:
    """A bilingual text as JSON."""
    return {"zh-CN": value.zh_CN, "en": value.en}


@dataclass(frozen=True)
class Check:
    """One check of a principle against a playbook target."""

    id: str
    passed: bool | None  # None: not applicable
    value: int | None = None
    target: int | None = None
    unit: str = "seconds"  # seconds | count
    key: bool = False

    def json(self) -> dict[str, Any]:
        """As JSON."""
        return {"id": self.id, "key": self.key, "passed": self.passed, "value": self.value,
                "target": self.target, "unit": self.unit}


def verdict(checks: list[Check]) -> str:
    """met / partly / missed, by the rules in the module docstring."""
    judged = [c for c in checks if c.passed is not None]
    if all(c.passed for c in judged):
        return "met"
    if any(c.key and c.passed is False for c in judged) or not any(c.passed for c in judged):
        return "missed"
    return "partly"


def principle(checks: list[Check], figures: dict[str, Any]) -> dict[str, Any]:
    """A principle's verdict, checks and figures as JSON."""
    return {"verdict": verdict(checks), "checks": [c.json() for c in checks],
            "figures": figures}
