"""The CAP alert as read, and the vocabulary of the decision: CAP's value lists, the
`CapAlert` / `CapInfo` / `CapArea` dataclasses, the incidents that recorded an alert
(`Recorded`) and the verdict (`Decision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from incident.branches import Branch
from incident.geo import in_circle, in_polygon
from incident.playbooks import DEFAULT_SCHEMES, Playbook

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
# CAP 1.1 has the same elements and values (1.2 only added a few): agencies still publish it.
CAP_NAMESPACES = (CAP_NAMESPACE, "urn:oasis:names:tc:emergency:cap:1.1")

STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPES = ("Public", "Restricted", "Private")
CATEGORIES = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
              "Transport", "Infra", "CBRNE", "Other")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

APPLYING_URGENCY = ("Immediate", "Expected")
APPLYING_SEVERITY = ("Extreme", "Severe")
APPLYING_CERTAINTY = ("Observed", "Likely")

Action = Literal["start", "update", "stand_down", "duplicate", "ignore"]
Key = tuple[str, str]  # (sender, identifier): what CAP references name an alert by


def reference_key(reference: str, sender: str) -> Key:
    """(sender, identifier) of a CAP reference "sender,identifier,sent"; a bare identifier
    (outside that form) is taken as `sender`'s."""
    parts = reference.split(",")
    return (parts[0], parts[1]) if len(parts) == 3 else (sender, reference)


def branch_geocodes(branch: Branch, schemes: Sequence[str]) -> set[tuple[str, str]]:
    """The branch's (valueName, value) pairs, casefolded. A `geocodes` entry written
    `valueName=value` (e.g. `JMA=440000`) is in that scheme; a bare value, and the branch's
    region, are in each of `schemes` (the playbook's `warnings.geocodes`): a JMA prefecture
    code 440000 is not Guangdong's GB/T 2260 code 440000."""
    pairs = set()
    for code in (*branch.geocodes, branch.region):
        name, _, value = code.rpartition("=")
        if name:
            pairs.add((name.strip().casefold(), value.strip().casefold()))
        else:
            pairs.update((scheme.casefold(), value.casefold()) for scheme in schemes)
    return pairs


@dataclass(frozen=True)
class CapArea:
    """An `<area>`: polygons of (lat, lon), circles of (lat, lon, radius_km), geocodes."""

    desc: str
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)
    circles: list[tuple[float, float, float]] = field(default_factory=list)
    geocodes: list[tuple[str, str]] = field(default_factory=list)  # (valueName, value)

    def contains(self, branch: Branch, schemes: Sequence[str] = DEFAULT_SCHEMES) -> bool:
        """Whether the branch is in a polygon or circle of the area, or matches a geocode:
        valueName and value together (see `branch_geocodes`)."""
        lat, lon = branch.latitude, branch.longitude
        if any(in_polygon(lat, lon, polygon) for polygon in self.polygons):
            return True
        if any(in_circle(lat, lon, c_lat, c_lon, radius) for c_lat, c_lon, radius in self.circles):
            return True
        codes = branch_geocodes(branch, schemes)
        return any((name.casefold(), value.casefold()) in codes for name, value in self.geocodes)

    @property
    def empty(self) -> bool:
        """True when the area gives no polygon, circle or geocode (only a description)."""
        return not (self.polygons or self.circles or self.geocodes)


@dataclass(frozen=True)
class CapInfo:
    """One `<info>` block (CAP repeats it once per language)."""

    language: str
    categories: list[str]
    event: str
    urgency: str
    severity: str
    certainty: str
    effective: datetime | None
    onset: datetime | None
    expires: datetime | None
    headline: str
    description: str
    instruction: str
    areas: list[CapArea]
    sender_name: str = ""


@dataclass(frozen=True)
class CapAlert:
    """A parsed CAP 1.2 `<alert>`; `references` are "sender,identifier,sent" triples."""

    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    scope: str
    references: list[str]
    infos: list[CapInfo]

    @property
    def key(self) -> Key:
        """(sender, identifier): unique per alert, what later alerts reference it by."""
        return (self.sender, self.identifier)

    def referenced_keys(self) -> list[Key]:
        """(sender, identifier) of the earlier alerts this one updates or cancels (a bare
        identifier, outside the "sender,identifier,sent" form, is taken as this sender's)."""
        return [reference_key(ref, self.sender) for ref in self.references]

    def referenced_identifiers(self) -> list[str]:
        """The identifiers of the earlier alerts this one updates or cancels."""
        return [identifier for _, identifier in self.referenced_keys()]


@dataclass(frozen=True)
class Recorded:
    """An incident that recorded a CAP alert (started from it, or updated by it)."""

    incident_id: str
    is_open: bool  # not yet resolved
    status: str
    playbook: Playbook
    severity: str


@dataclass
class Decision:
    """What to do about an alert, and why.

    `applies` and `action` are the verdict: "start" (an Actual Alert or Update meeting every
    criterion; `playbook` is None when no playbook answers its event, and the supervisor
    picks one), "update" (an Actual Update of an alert that started `incident`, still open:
    its new severity, area and expiry go to that incident), "stand_down" (an Actual Cancel of
    an alert that started `incident`, still open), "duplicate" (this very alert is already
    recorded on `incident`: nothing to do) or "ignore". `info`, `playbook`, `grade` and
    `branches` describe the first info that meets its own criteria (time, urgency, severity,
    certainty, area), even when the alert as a whole is ignored for its status or msgType, so
    that an Exercise can be run as a drill.
    """

    applies: bool
    action: Action
    reasons: list[str]
    info: CapInfo | None
    playbook: Playbook | None
    grade: str | None
    branches: list[Branch]
    alert: CapAlert
    incident: str | None = None  # the incident it updates, stands down or is recorded on

    @property
    def subject(self) -> CapInfo | None:
        """The info to show: the one decided on, else the alert's first (an ignored alert
        still has an event and a headline)."""
        return self.info or (self.alert.infos[0] if self.alert.infos else None)
