"""The branch list (CSV): where each branch is, which warning areas name it, nearby open ones."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from incident.errors import BranchesInvalid, InvalidValue, Location
from incident.geo import haversine_km
from incident.regions import region_key

__all__ = ["Branch", "haversine_km", "load_branches", "nearby_open", "scope_branches"]

REQUIRED_COLUMNS = ("id", "name", "region", "latitude", "longitude")
OPTIONAL_COLUMNS = ("name_en", "geocodes", "min_staff")
_RANGES = {"latitude": 90.0, "longitude": 180.0}


@dataclass(frozen=True)
class Branch:
    """One branch: names, region, position (WGS 84 degrees) and its CAP geocode values."""

    id: str
    name: str
    name_en: str
    region: str
    latitude: float
    longitude: float
    geocodes: tuple[str, ...] = ()
    min_staff: int | None = None  # staff able to work it needs to open (roll-call readiness)

    def label(self, lang: str) -> str:
        """The branch's name in `lang`: Chinese for zh-*, else the English name if there is one."""
        if lang.lower().startswith("zh"):
            return self.name
        return self.name_en or self.name


def load_branches(path: Path) -> list[Branch]:
    """Read a branch CSV; raise BranchesInvalid listing every problem with line and field."""
    display = str(path)
    text = _read_text(path, display)
    reader = csv.reader(io.StringIO(text))
    columns: dict[str, int] | None = None
    width = 0
    branches: list[Branch] = []
    problems: list[tuple[Location, str]] = []
    seen: dict[str, int] = {}
    previous_end = 0
    try:
        for row in reader:
            # line_num is where the record ends; a quoted cell may span lines, so the record
            # starts right after the previous one.
            line, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns, width = _header(row, line, display)
                continue
            if len(row) != width:
                problems.append((Location(display, line), f"expected {width} cells, found "
                                 f"{len(row)} (quote cells that contain commas)"))
                continue
            branch, row_problems = _parse_row(row, columns, line, display, seen)
            problems += row_problems
            if branch is not None:
                branches.append(branch)
    except csv.Error as exc:
        line = previous_end + 1
        problems.append((Location(display, line), f"not readable as CSV: {exc}"))
    if columns is None:
        raise BranchesInvalid(f"branch list {display} is empty (no header line)",
                              problems=[(Location(display, 1), "no header")])
    if problems:
        first, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BranchesInvalid(f"branch list {display} is not usable: {first}: {message}{more}",
                              problems=problems)
    if not branches:
        raise BranchesInvalid(f"branch list {display} has no branches",
                              problems=[(Location(display), "no data rows after the header")])
    return branches


def nearby_open(closed: Sequence[Branch], branches: Sequence[Branch], *, within_km: float,
                limit: int, reachable: Mapping[str, Sequence[str]] | None = None
                ) -> list[tuple[Branch, float]]:
    """Open branches within `within_km` of the nearest closed one they are within reach of,
    nearest first, at most `limit`.

    Within reach of a closed branch: a branch of the same region, or of a region `reachable`
    lists for its region (region -> regions its customers can get to; a border in between,
    e.g. Hong Kong and Shenzhen, makes a near branch out of reach). Each comes with its
    distance to the nearest such closed branch, rounded to 0.1 km.
    """
    closed_ids = {b.id for b in closed}
    reach = {region_key(r): {region_key(to) for to in tos}
             for r, tos in (reachable or {}).items()}
    found: list[tuple[float, Branch]] = []
    for branch in branches:
        if branch.id in closed_ids:
            continue
        region = region_key(branch.region)
        distances = [haversine_km(branch.latitude, branch.longitude, c.latitude, c.longitude)
                     for c in closed if region == region_key(c.region)
                     or region in reach.get(region_key(c.region), ())]
        if distances and min(distances) <= within_km:
            found.append((min(distances), branch))
    # sorted() is stable: equally distant branches keep the list's order.
    found.sort(key=lambda item: item[0])
    return [(branch, round(distance, 1)) for distance, branch in found[:max(limit, 0)]]


def scope_branches(branches: Sequence[Branch], *, regions: Sequence[str] = (),
                   branch_ids: Sequence[str] = ()) -> list[Branch]:
    """The branches in any of `regions` or named in `branch_ids`, in the list's order."""
    by_id = {b.id.casefold(): b for b in branches}
    unknown = [i for i in branch_ids if i.strip().casefold() not in by_id]
    if unknown:
        known = [b.id for b in branches]
        shown = ", ".join(known[:12]) + (f", … ({len(known)} in all)" if len(known) > 12 else "")
        raise InvalidValue(f"unknown branch {', '.join(map(repr, unknown))}",
                           hint=f"known branches: {shown or 'none'}")
    wanted_regions = {r.strip().casefold() for r in regions if r.strip()}
    wanted_ids = {i.strip().casefold() for i in branch_ids}
    return [b for b in branches
            if b.region.casefold() in wanted_regions or b.id.casefold() in wanted_ids]


# ---------------------------------------------------------------- parsing


def _read_text(path: Path, display: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BranchesInvalid(f"branch list not found: {display}",
                              problems=[(Location(display), "no such file")]) from None
    except OSError as exc:
        raise BranchesInvalid(f"cannot read branch list {display}: {exc.strerror or exc}",
                              problems=[(Location(display), str(exc))]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8: byte 0x{raw[exc.start]:02x}"
        raise BranchesInvalid(f"{display}:{line}: {message}",
                              hint="save the file as UTF-8 (Excel: 'CSV UTF-8')",
                              problems=[(Location(display, line), message)]) from None


def _header(row: list[str], line: int, display: str) -> tuple[dict[str, int], int]:
    columns: dict[str, int] = {}
    problems: list[tuple[Location, str]] = []
    for index, raw in enumerate(row):
        name = raw.strip().lower()
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            continue  # extra columns (address, manager, ...) are allowed
        if name in columns:
            problems.append((Location(display, line, name), "column appears twice"))
        columns.setdefault(name, index)
    problems += [(Location(display, line, name), "required column missing")
                 for name in REQUIRED_COLUMNS if name not in columns]
    if problems:
        fields = ", ".join(loc.field or "" for loc, _ in problems)
        raise BranchesInvalid(f"{display}:{line}: bad header ({fields})",
                              hint="the header needs the columns " + ",".join(REQUIRED_COLUMNS)
                              + "; optional: " + ",".join(OPTIONAL_COLUMNS),
                              problems=problems)
    return columns, len(row)


def _parse_row(row: list[str], columns: dict[str, int], line: int, display: str,
               seen: dict[str, int]) -> tuple[Branch | None, list[tuple[Location, str]]]:
    def cell(name: str) -> str:
        index = columns.get(name)
        return row[index].strip() if index is not None else ""

    problems: list[tuple[Location, str]] = []
    for name in ("id", "name", "region"):
        if not cell(name):
            problems.append((Location(display, line, name), f"empty {name}"))
    branch_id = cell("id")
    if branch_id in seen:
        problems.append((Location(display, line, "id"),
                         f"duplicate id {branch_id!r} (first on line {seen[branch_id]})"))
    elif branch_id:
        seen[branch_id] = line
    position: dict[str, float] = {}
    for name, limit in _RANGES.items():
        raw = cell(name)
        try:
            value = float(raw)
        except ValueError:
            problems.append((Location(display, line, name),
                             f"empty {name}" if not raw else f"{name} {raw!r} is not a number"))
            continue
        if not (math.isfinite(value) and -limit <= value <= limit):
            problems.append((Location(display, line, name),
                             f"{name} {raw} is out of range (-{limit:g} to {limit:g})"))
            continue
        position[name] = value
    min_staff: int | None = None
    if cell("min_staff"):
        raw = cell("min_staff")
        if raw.isdigit():
            min_staff = int(raw)
        else:
            problems.append((Location(display, line, "min_staff"),
                             f"min_staff {raw!r} is not a whole number ≥ 0"))
    if problems:
        return None, problems
    geocodes = tuple(dict.fromkeys(g.strip() for g in cell("geocodes").split(";") if g.strip()))
    return Branch(id=branch_id, name=cell("name"), name_en=cell("name_en"),
                  region=cell("region"), latitude=position["latitude"],
                  longitude=position["longitude"], geocodes=geocodes,
                  min_staff=min_staff), []
