"""OASIS CAP 1.2 warnings: safe parsing with line numbers, and whether a warning starts a plan.

The rules (facts.md): a warning applies when status is Actual, msgType is Alert or Update,
now is within effective..expires, urgency is Immediate or Expected, severity Extreme or Severe,
certainty Observed or Likely, and at least one branch lies in one of its areas. A Cancel
stands down whatever the alerts it references started.

The modules, each one job (`parse` and `decide` import `model`, not each other):

- `model`: CAP's value lists, the alert as read (`CapAlert`, `CapInfo`, `CapArea`), the
  incidents that recorded an alert (`Recorded`, by `Key`) and the verdict (`Decision`);
- `parse`: `load_alert` / `parse_alert`: XML (no DOCTYPE, declared encodings) → `CapAlert`,
  every problem located by file, line and field;
- `decide`: `decide` (start, update, stand down, duplicate or ignore), `warning_record` and
  `update_messages`.
"""

from __future__ import annotations

from incident.cap.decide import decide, update_messages, warning_record
from incident.cap.model import (
    APPLYING_CERTAINTY,
    APPLYING_SEVERITY,
    APPLYING_URGENCY,
    CAP_NAMESPACE,
    CAP_NAMESPACES,
    CATEGORIES,
    CERTAINTIES,
    MSG_TYPES,
    SCOPES,
    SEVERITIES,
    STATUSES,
    URGENCIES,
    Action,
    CapAlert,
    CapArea,
    CapInfo,
    Decision,
    Key,
    Recorded,
    branch_geocodes,
    reference_key,
)
from incident.cap.parse import load_alert, parse_alert

__all__ = [
    "APPLYING_CERTAINTY",
    "APPLYING_SEVERITY",
    "APPLYING_URGENCY",
    "CAP_NAMESPACE",
    "CAP_NAMESPACES",
    "CATEGORIES",
    "CERTAINTIES",
    "MSG_TYPES",
    "SCOPES",
    "SEVERITIES",
    "STATUSES",
    "URGENCIES",
    "Action",
    "CapAlert",
    "CapArea",
    "CapInfo",
    "Decision",
    "Key",
    "Recorded",
    "branch_geocodes",
    "decide",
    "load_alert",
    "parse_alert",
    "reference_key",
    "update_messages",
    "warning_record",
]
