"""OASIS CAP 1.2 warnings: safe parsing with line numbers, and whether a warning starts a plan.

The rules (facts.md): a warning applies when status is Actual, msgType is Alert or Update,
now is within effective..expires, urgency is Immediate or Expected, severity Extreme or Severe,
certainty Observed or Likely, and at least one branch lies in one of its areas. A Cancel
stands down whatever the alerts it references started.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from xml.parsers import expat

from incident.branches import Branch
from incident.errors import CapInvalid, Location
from incident.geo import in_circle, in_polygon
from incident.playbooks import DEFAULT_MAX_AGE, DEFAULT_SCHEMES, Playbook
from incident.timeutil import format_duration

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
T = TypeVar("T")


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


# ---------------------------------------------------------------- parsing


def load_alert(path: Path) -> CapAlert:
    """Read and validate one CAP 1.2 file; raise CapInvalid naming file, line and field."""
    display = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CapInvalid(f"CAP file not found: {display}",
                         problems=[(Location(display), "no such file")]) from None
    except OSError as exc:
        raise CapInvalid(f"cannot read CAP file {display}: {exc.strerror or exc}",
                         problems=[(Location(display), str(exc))]) from None
    return parse_alert(data, source=display)


def parse_alert(data: bytes | str, *, source: str) -> CapAlert:
    """Validate CAP 1.2 XML; `source` names the file in errors.

    Field paths count repeated elements from 1, as XPath does: `alert.info[2].area[1].polygon[1]`.
    """
    text = data if isinstance(data, str) else _decode(data, source)
    root = _parse_xml(text, source)
    reader = _Reader(source)
    alert = reader.alert(root)
    if reader.problems:
        (first, message), count = reader.problems[0], len(reader.problems)
        more = f" (and {count - 1} more)" if count > 1 else ""
        raise CapInvalid(f"{first}: {message}{more}", problems=reader.problems)
    assert alert is not None  # no problems means every required part was read
    return alert


@dataclass
class _Element:
    """A parsed XML element with the line its start tag is on."""

    namespace: str
    name: str
    line: int
    children: list[_Element] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.chunks).strip()

    def cap_children(self, name: str) -> list[_Element]:
        return [c for c in self.children if c.namespace in CAP_NAMESPACES and c.name == name]


class _Refused(Exception):
    """A DTD in the document: refused before expat can define or expand any entity."""

    def __init__(self, line: int) -> None:
        self.line = line


# The encoding an XML declaration names (it is ASCII in every ASCII-compatible encoding).
_DECLARED = re.compile(rb"""^<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
         (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(data: bytes, source: str) -> str:
    """The document as text, decoded in the encoding it declares (default UTF-8).

    expat reads only UTF-8, UTF-16, ISO-8859-1 and ASCII (pyexpat adds single-byte codecs):
    GB2312, GBK, GB18030 and Big5, which Chinese agencies publish in, are decoded here with
    Python's codecs, and the text is then parsed as UTF-8.
    """
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None)
    if encoding is None:
        declared = _DECLARED.match(data)
        encoding = declared.group(1).decode("ascii") if declared else "utf-8"
        try:
            codecs.lookup(encoding)
        except LookupError:
            message = f"unknown encoding {encoding!r} in the XML declaration"
            raise CapInvalid(f"{source}:1: {message}",
                             problems=[(Location(source, 1), message)]) from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        message = (f"not {encoding}: bytes 0x{data[exc.start:exc.end].hex()} (column "
                   f"{column}); save the file in the encoding its XML declaration names")
        raise CapInvalid(f"{source}:{line}: {message}",
                         problems=[(Location(source, line), message)]) from None


def _parse_xml(document: str, source: str) -> _Element:
    """Build a small element tree with expat, recording each start tag's line.

    Any DOCTYPE is refused: CAP needs none, and without one no entity can be declared, so
    neither entity expansion ("billion laughs") nor external entities can happen.
    """
    # The text is already decoded: the encoding given here overrides the declared one.
    parser = expat.ParserCreate(encoding="utf-8", namespace_separator=" ")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Element] = []
    roots: list[_Element] = []

    def start(tag: str, _attributes: dict[str, str]) -> None:
        namespace, _, name = tag.rpartition(" ")
        element = _Element(namespace, name, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(element)
        stack.append(element)

    def end(_tag: str) -> None:
        stack.pop()

    def text(chunk: str) -> None:
        if stack:
            stack[-1].chunks.append(chunk)

    def refuse(*_args: object) -> None:
        raise _Refused(parser.CurrentLineNumber)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(document.encode("utf-8"), True)
    except expat.ExpatError as exc:
        message = f"not well-formed XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})"
        if stack and exc.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]:
            message = (f"the file ends before <{stack[-1].name}> (line {stack[-1].line}) is "
                       "closed: truncated?")
        raise CapInvalid(f"{source}:{exc.lineno}: {message}",
                         problems=[(Location(source, exc.lineno), message)]) from None
    except _Refused as exc:
        message = "a DOCTYPE is not allowed in a CAP file (refused: entities could expand)"
        raise CapInvalid(f"{source}:{exc.line}: {message}",
                         problems=[(Location(source, exc.line), message)]) from None
    return roots[0]


class _Reader:
    """Turns the element tree into dataclasses, collecting every problem with its line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[tuple[Location, str]] = []

    def problem(self, line: int, path: str, message: str) -> None:
        self.problems.append((Location(self.source, line, path), message))

    def alert(self, root: _Element) -> CapAlert | None:
        if root.name != "alert" or root.namespace not in CAP_NAMESPACES:
            found = f"{{{root.namespace}}}{root.name}" if root.namespace else root.name
            self.problem(root.line, "alert", f"the root element is {found}, expected "
                         f"{{{CAP_NAMESPACE}}}alert (a CAP 1.2 alert, or 1.1)")
            return None
        identifier = self.text(root, "alert", "identifier")
        if identifier and any(ch in identifier for ch in " ,<&"):
            self.problem(self.line_of(root, "identifier"), "alert.identifier",
                         "must not contain spaces, commas, < or &")
        sender = self.text(root, "alert", "sender")
        sent = self.time(root, "alert", "sent", required=True)
        status = self.choice(root, "alert", "status", STATUSES)
        msg_type = self.choice(root, "alert", "msgType", MSG_TYPES)
        scope = self.choice(root, "alert", "scope", SCOPES)
        references = self.optional(root, "alert", "references").split()
        infos = [self.info(element, f"alert.info[{n}]")
                 for n, element in enumerate(root.cap_children("info"), start=1)]
        if (identifier is None or sender is None or sent is None or status is None
                or msg_type is None or scope is None or None in infos):
            return None
        return CapAlert(identifier=identifier, sender=sender, sent=sent, status=status,
                        msg_type=msg_type, scope=scope, references=references,
                        infos=[i for i in infos if i is not None])

    def info(self, element: _Element, path: str) -> CapInfo | None:
        ok = len(self.problems)
        categories = []
        for n, child in enumerate(element.cap_children("category"), start=1):
            if child.text not in CATEGORIES:
                self.problem(child.line, f"{path}.category[{n}]",
                             _not_one_of(child.text, CATEGORIES))
            categories.append(child.text)
        if not categories:
            self.problem(element.line, f"{path}.category", "required element missing")
        event = self.text(element, path, "event")
        urgency = self.choice(element, path, "urgency", URGENCIES)
        severity = self.choice(element, path, "severity", SEVERITIES)
        certainty = self.choice(element, path, "certainty", CERTAINTIES)
        effective = self.time(element, path, "effective", required=False)
        onset = self.time(element, path, "onset", required=False)
        expires = self.time(element, path, "expires", required=False)
        areas = [self.area(child, f"{path}.area[{n}]")
                 for n, child in enumerate(element.cap_children("area"), start=1)]
        if (len(self.problems) > ok or event is None or urgency is None or severity is None
                or certainty is None):
            return None
        return CapInfo(
            language=self.optional(element, path, "language") or "en-US",
            categories=categories, event=event, urgency=urgency, severity=severity,
            certainty=certainty, effective=effective, onset=onset, expires=expires,
            headline=self.optional(element, path, "headline"),
            description=self.optional(element, path, "description"),
            instruction=self.optional(element, path, "instruction"),
            areas=[a for a in areas if a is not None],
            sender_name=self.optional(element, path, "senderName"),
        )

    def area(self, element: _Element, path: str) -> CapArea | None:
        ok = len(self.problems)
        desc = self.text(element, path, "areaDesc")
        polygons = self.each(element, path, "polygon", self.polygon)
        circles = self.each(element, path, "circle", self.circle)
        geocodes: list[tuple[str, str]] = []
        for n, child in enumerate(element.cap_children("geocode"), start=1):
            name = self.text(child, f"{path}.geocode[{n}]", "valueName")
            value = self.text(child, f"{path}.geocode[{n}]", "value")
            if name is not None and value is not None:
                geocodes.append((name, value))
        if len(self.problems) > ok or desc is None:
            return None
        return CapArea(desc=desc, polygons=polygons, circles=circles, geocodes=geocodes)

    def polygon(self, text: str) -> list[tuple[float, float]]:
        points = [_point(pair) for pair in text.split()]
        if len(points) < 4:
            raise ValueError(f"a polygon needs at least 4 points (first = last), got {len(points)}")
        if points[0] != points[-1]:
            raise ValueError("the polygon is not closed: the first point must equal the last")
        return points

    def circle(self, text: str) -> tuple[float, float, float]:
        parts = text.split()
        if len(parts) != 2:
            raise ValueError(f"expected 'lat,lon radius_km', got {text!r}")
        lat, lon = _point(parts[0])
        radius = _number(parts[1], "radius")
        if radius < 0:
            raise ValueError(f"radius {parts[1]} is negative")
        return lat, lon, radius

    # -- element helpers: each records a problem and returns None (or "") when it fails

    def each(self, parent: _Element, path: str, name: str,
             convert: Callable[[str], T]) -> list[T]:
        values = []
        for n, child in enumerate(parent.cap_children(name), start=1):
            try:
                values.append(convert(child.text))
            except ValueError as exc:
                self.problem(child.line, f"{path}.{name}[{n}]", str(exc))
        return values

    def single(self, parent: _Element, path: str, name: str, required: bool) -> _Element | None:
        found = parent.cap_children(name)
        if len(found) > 1:
            self.problem(found[1].line, f"{path}.{name}",
                         f"appears {len(found)} times; CAP allows it once here")
        if not found:
            if required:
                self.problem(parent.line, f"{path}.{name}", "required element missing")
            return None
        if required and not found[0].text:
            self.problem(found[0].line, f"{path}.{name}", "empty")
            return None
        return found[0]

    def line_of(self, parent: _Element, name: str) -> int:
        found = parent.cap_children(name)
        return found[0].line if found else parent.line

    def text(self, parent: _Element, path: str, name: str) -> str | None:
        element = self.single(parent, path, name, True)
        return element.text if element is not None else None

    def optional(self, parent: _Element, path: str, name: str) -> str:
        element = self.single(parent, path, name, False)
        return element.text if element is not None else ""

    def choice(self, parent: _Element, path: str, name: str,
               allowed: Sequence[str]) -> str | None:
        element = self.single(parent, path, name, True)
        if element is None:
            return None
        if element.text not in allowed:
            self.problem(element.line, f"{path}.{name}", _not_one_of(element.text, allowed))
            return None
        return element.text

    def time(self, parent: _Element, path: str, name: str, *,
             required: bool) -> datetime | None:
        element = self.single(parent, path, name, required)
        if element is None or not element.text:
            return None
        try:
            value = datetime.fromisoformat(element.text)
        except ValueError:
            self.problem(element.line, f"{path}.{name}",
                         f"{element.text!r} is not a time like 2026-09-14T08:00:00+08:00")
            return None
        if value.tzinfo is None:
            self.problem(element.line, f"{path}.{name}",
                         f"{element.text!r} has no UTC offset (write e.g. +08:00)")
            return None
        return value


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not a number")
    return value


def _point(pair: str) -> tuple[float, float]:
    parts = pair.split(",")
    if len(parts) != 2:
        raise ValueError(f"expected a 'lat,lon' pair, got {pair!r}")
    lat, lon = _number(parts[0], "latitude"), _number(parts[1], "longitude")
    if not -90 <= lat <= 90:
        raise ValueError(f"latitude {parts[0]} is out of range (-90 to 90)")
    if not -180 <= lon <= 180:
        raise ValueError(f"longitude {parts[1]} is out of range (-180 to 180)")
    return lat, lon


def _not_one_of(value: str, allowed: Sequence[str]) -> str:
    return f"{value!r} is not one of {', '.join(allowed)}"


# ---------------------------------------------------------------- the decision


def decide(alert: CapAlert, *, now: datetime, branches: Sequence[Branch],
           playbooks: Sequence[Playbook],
           recorded: Mapping[Key, Recorded] | None = None) -> Decision:
    """Decide whether `alert` starts a plan (and which), updates or stands down the incident
    an earlier alert started, or is ignored. `recorded` maps the alerts already recorded on
    incidents (by `CapAlert.key`) to those incidents."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    recorded = recorded or {}
    known = recorded.get(alert.key)
    if known is not None:
        return Decision(applies=False, action="duplicate",
                        reasons=[f"already recorded on {known.incident_id} ({known.status}): "
                                 "nothing to do"],
                        info=None, playbook=known.playbook, grade=None, branches=[],
                        alert=alert, incident=known.incident_id)
    alert_reasons = []
    if alert.status != "Actual":
        alert_reasons.append(f"status is {alert.status}, not Actual")
    cancel = alert.msg_type == "Cancel"
    if alert.msg_type not in ("Alert", "Update", "Cancel"):
        alert_reasons.append(f"msgType is {alert.msg_type}, not Alert, Update or Cancel")
    started = _referenced(alert, recorded)

    if cancel:
        return _stand_down(alert, alert_reasons, branches, playbooks, started)
    target = next((r for r in started if r.is_open), None)
    if alert.msg_type == "Update" and not alert_reasons and target is not None:
        return _update(alert, target, now, branches)

    # Each info is checked with the playbook that answers its event: its geocode schemes and
    # the maximum age of an alert without <expires> are the playbook's.
    checked = []
    for info in alert.infos:
        playbook = _match_playbook(info, playbooks)
        failed, hit = _check_info(alert, info, playbook, now, branches)
        checked.append((info, playbook, failed, hit))
    applying = [(info, playbook, hit) for info, playbook, failed, hit in checked if not failed]
    if not alert.infos:
        info_reasons = ["the alert has no <info> block"]
    elif applying:
        info_reasons = []
    else:
        info_reasons = _merge_reasons(alert, [failed for _, _, failed, _ in checked])
    if not applying:
        return Decision(applies=False, action="ignore", reasons=alert_reasons + info_reasons,
                        info=None, playbook=None, grade=None, branches=[], alert=alert)

    # The first applying info whose event a playbook answers; else the first applying one.
    info, playbook, hit = next((m for m in applying if m[1] is not None), applying[0])
    grade = None
    if playbook is not None and playbook.warnings is not None:
        grade = next((g for severity, g in playbook.warnings.grades.items()
                      if severity == info.severity), playbook.severity.default)
    if alert_reasons:
        return Decision(applies=False, action="ignore", reasons=alert_reasons, info=info,
                        playbook=playbook, grade=grade, branches=hit, alert=alert)
    reasons = [
        f"{alert.status} {alert.msg_type} in effect until "
        f"{_when(_expires(alert, info, playbook))}" + _no_expires(info, playbook),
        f"urgency {info.urgency}, severity {info.severity}, certainty {info.certainty}",
        f"{len(hit)} branch{'es' if len(hit) != 1 else ''} inside the alert area: "
        + ", ".join(b.id for b in hit),
    ]
    if playbook is None:
        reasons.append(f"no playbook answers event {info.event!r}: choose one by hand")
    else:
        reasons.append(f"playbook {playbook.id} answers event {info.event!r}, grade {grade}")
    return Decision(applies=True, action="start", reasons=reasons, info=info,
                    playbook=playbook, grade=grade, branches=hit, alert=alert)


def _expires(alert: CapAlert, info: CapInfo, playbook: Playbook | None) -> datetime:
    """When the info stops applying: its <expires>, else the playbook's `warnings.max_age`
    after it took effect (an alert without an end must not apply for ever)."""
    if info.expires is not None:
        return info.expires
    return (info.effective or alert.sent) + _max_age(playbook)


def _max_age(playbook: Playbook | None) -> timedelta:
    warnings = playbook.warnings if playbook is not None else None
    return warnings.max_age if warnings is not None else DEFAULT_MAX_AGE


def _no_expires(info: CapInfo, playbook: Playbook | None) -> str:
    """Said after a time derived from the maximum age, not given by the alert."""
    if info.expires is not None:
        return ""
    whose = f"playbook {playbook.id}'s" if playbook is not None else "the default"
    return f" (no <expires>: {whose} max_age {format_duration(_max_age(playbook))})"


def _check_info(alert: CapAlert, info: CapInfo, playbook: Playbook | None, now: datetime,
                branches: Sequence[Branch]) -> tuple[list[str], list[Branch]]:
    """The criteria the info fails (empty when it applies) and the branches in its area."""
    failed = []
    effective = info.effective or alert.sent
    if now < effective:
        failed.append(f"not in effect until {_when(effective)}")
    expires = _expires(alert, info, playbook)
    if now > expires:
        failed.append(f"expired at {_when(expires)}{_no_expires(info, playbook)}")
    if info.urgency not in APPLYING_URGENCY:
        failed.append(f"urgency is {info.urgency}, not Immediate or Expected")
    if info.severity not in APPLYING_SEVERITY:
        failed.append(f"severity is {info.severity}, not Extreme or Severe")
    if info.certainty not in APPLYING_CERTAINTY:
        failed.append(f"certainty is {info.certainty}, not Observed or Likely")
    hit = _in_area(info, playbook, branches)
    if not hit:
        if all(area.empty for area in info.areas):
            failed.append("no branch inside the alert area (it gives no polygon, circle "
                          "or geocode)")
        else:
            failed.append("no branch inside the alert area")
    return failed, hit


def _in_area(info: CapInfo, playbook: Playbook | None,
             branches: Sequence[Branch]) -> list[Branch]:
    """The branches inside an area of the info, geocodes read in the playbook's schemes."""
    warnings = playbook.warnings if playbook is not None else None
    schemes = warnings.geocodes if warnings is not None else DEFAULT_SCHEMES
    return [b for b in branches if any(area.contains(b, schemes) for area in info.areas)]


def _merge_reasons(alert: CapAlert, per_info: list[list[str]]) -> list[str]:
    """One list of reasons; prefixed with the info when translations disagree."""
    if all(reasons == per_info[0] for reasons in per_info):
        return per_info[0]
    return [f"info[{n}] ({info.language}): {reason}"
            for n, (info, reasons) in enumerate(zip(alert.infos, per_info, strict=True), start=1)
            for reason in reasons]


def _match_playbook(info: CapInfo, playbooks: Sequence[Playbook]) -> Playbook | None:
    """The first playbook whose `warnings` answer the info's event and category."""
    event = info.event.casefold()
    categories = {c.casefold() for c in info.categories}
    for playbook in playbooks:
        warnings = playbook.warnings
        if warnings is None:
            continue
        if warnings.categories and not categories & {c.casefold() for c in warnings.categories}:
            continue
        if any(word.casefold() in event for word in warnings.events):
            return playbook
    return None


def _referenced(alert: CapAlert, recorded: Mapping[Key, Recorded]) -> list[Recorded]:
    """The incidents the alerts `alert` references are recorded on, each once."""
    found = {r.incident_id: r for key in alert.referenced_keys()
             if (r := recorded.get(key)) is not None}
    return list(found.values())


def _update(alert: CapAlert, target: Recorded, now: datetime,
            branches: Sequence[Branch]) -> Decision:
    """An Update of an alert that started `target`: its severity, area and expiry update it
    (even when it lowers the warning below the starting criteria: customers are told)."""
    playbook = target.playbook
    matched = [info for info in alert.infos if _match_playbook(info, [playbook])]
    info = next(iter(matched or alert.infos), None)
    if info is None:
        return Decision(applies=False, action="ignore",
                        reasons=["the alert has no <info> block"], info=None,
                        playbook=playbook, grade=None, branches=[], alert=alert,
                        incident=target.incident_id)
    warnings = playbook.warnings
    grade = next((g for severity, g in warnings.grades.items() if severity == info.severity),
                 None) if warnings is not None else None
    hit = _in_area(info, playbook, branches)
    expires = _expires(alert, info, playbook)
    reasons = [
        f"Update of {', '.join(alert.referenced_identifiers())}, which started "
        f"{target.incident_id}: record it there, not a second incident",
        f"urgency {info.urgency}, severity {info.severity}, certainty {info.certainty}"
        + (f": grade {grade}" if grade and grade != target.severity else
           f": grade stays {target.severity}"),
        (f"in force until {_when(expires)}" if now <= expires
         else f"expired at {_when(expires)}") + _no_expires(info, playbook),
        f"{len(hit)} branch{'es' if len(hit) != 1 else ''} inside the alert area"
        + (": " + ", ".join(b.id for b in hit) if hit else ""),
    ]
    return Decision(applies=True, action="update", reasons=reasons, info=info,
                    playbook=playbook, grade=grade if grade != target.severity else None,
                    branches=hit, alert=alert, incident=target.incident_id)


def _stand_down(alert: CapAlert, alert_reasons: list[str], branches: Sequence[Branch],
                playbooks: Sequence[Playbook], started: list[Recorded]) -> Decision:
    """A Cancel: stand down the incident the referenced alerts started (time and area are
    not checked); a Cancel of alerts that started nothing applies to nothing."""
    info: CapInfo | None = None
    playbook: Playbook | None = None
    for candidate in alert.infos:
        playbook = _match_playbook(candidate, playbooks)
        if playbook is not None or info is None:
            info = candidate
        if playbook is not None:
            break
    hit = _in_area(info, playbook, branches) if info is not None else []
    target = next((r for r in started if r.is_open), None)

    def decision(applies: bool, reasons: list[str]) -> Decision:
        return Decision(applies=applies, action="stand_down" if applies else "ignore",
                        reasons=reasons, info=info,
                        playbook=target.playbook if target else playbook, grade=None,
                        branches=hit, alert=alert, incident=shown.incident_id if shown else None)

    shown = target or (started[0] if started else None)

    if alert_reasons:
        return decision(False, alert_reasons)
    referenced = ", ".join(alert.referenced_identifiers())
    if not referenced:
        return decision(False, ["msgType is Cancel, but it references no earlier alert: it "
                                "applies to nothing"])
    if target is None:
        if started:
            done = ", ".join(f"{r.incident_id} ({r.status})" for r in started)
            return decision(False, [f"msgType is Cancel of {referenced}; the incident they "
                                    f"started is no longer open: {done}"])
        return decision(False, [f"msgType is Cancel of {referenced}, which started no "
                                "incident here: it applies to nothing"])
    return decision(True, [
        f"msgType is Cancel of {referenced}, which started {target.incident_id}: stand it down",
        f"incident resolve {target.incident_id[-6:]} --message \"...\"  (customers get the "
        "recovery notice)",
    ])


def warning_record(decision: Decision) -> dict[str, Any]:
    """What an incident records of the alert it was started or updated from (event data)."""
    alert, info = decision.alert, decision.info
    expires = (_expires(alert, info, decision.playbook) if info is not None else None)
    return {"identifier": alert.identifier, "sender": alert.sender,
            "sent": alert.sent.isoformat(), "msg_type": alert.msg_type,
            "references": list(alert.references),
            "event": info.event if info else "", "severity": info.severity if info else "",
            "expires": expires.isoformat() if expires else None,
            "branches": [b.id for b in decision.branches]}


def update_messages(decision: Decision) -> tuple[str, str | None]:
    """The customer update for an Update: its headline (English and Chinese infos) and how
    long it is in force."""
    alert, chosen = decision.alert, decision.info
    assert chosen is not None

    def text(info: CapInfo | None) -> str | None:
        if info is None:
            return None
        until = _when(_expires(alert, info, decision.playbook))
        line = info.headline or info.event
        return (f"{line}（有效至 {until}）" if info.language.lower().startswith("zh")
                else f"{line} (in force until {until})")

    english = next((i for i in alert.infos if i.language.lower().startswith("en")), None)
    chinese = next((i for i in alert.infos if i.language.lower().startswith("zh")), None)
    return text(english) or text(chosen) or chosen.event, text(chinese)


def _when(value: datetime) -> str:
    """`2026-09-14 20:00 +08:00`: the time in the offset the alert gave it."""
    offset = value.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{value.strftime('%Y-%m-%d %H:%M')} {sign}{minutes // 60:02d}:{minutes % 60:02d}"
