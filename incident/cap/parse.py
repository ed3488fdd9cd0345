"""CAP 1.2 (and 1.1) XML → `CapAlert`: safe parsing (no DOCTYPE, so no entity expansion),
the encoding the file declares (GB2312, GBK, GB18030, Big5 too), and every problem located
by file, line and field path.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from xml.parsers import expat

from incident.cap.model import (
    CAP_NAMESPACE,
    CAP_NAMESPACES,
    CATEGORIES,
    CERTAINTIES,
    MSG_TYPES,
    SCOPES,
    SEVERITIES,
    STATUSES,
    URGENCIES,
    CapAlert,
    CapArea,
    CapInfo,
)
from incident.errors import CapInvalid, Location

T = TypeVar("T")



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
