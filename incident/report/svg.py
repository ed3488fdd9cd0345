"""The inline SVG timeline of the HTML report: notices, ETA versions, steps, manual channel,
parties and recovery on one time axis from detection. Pure SVG, no script, no external asset."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from incident.timeutil import format_duration, local_text, parse_iso

WIDTH = 1000
LEFT = 170
RIGHT = 24
TOP = 34
LANE = 40
TICKS = [timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440,
                                        2880, 10080, 43200)]
# The axis ends at most this long after detection: a time beyond it (an ETA stored as year
# 9999) is drawn at the right edge, its tooltip giving the real time.
MAX_SPAN = timedelta(days=366)
COLOURS = {"initial": "#1f5fa8", "update": "#3d8bd9", "eta_changed": "#8a5cc2",
           "resolved": "#2e8b57", "ok": "#2e8b57", "late": "#c0392b", "due": "#9aa3ad",
           "manual": "#e0a526", "party": "#1f5fa8", "ack": "#2e8b57", "eta": "#8a5cc2",
           "recovery": "#2e8b57", "detected": "#c0392b"}
LANES = ("notices", "eta", "steps", "manual", "parties")


def _t(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


def _span(report: dict[str, Any]) -> tuple[datetime, datetime]:
    inc = report["incident"]
    p = report["principles"]
    start = parse_iso(inc["detected_at"])
    times: list[datetime | None] = [parse_iso(inc["declared_at"])]
    times += [_t(n["at"]) for n in p["transparency"]["figures"]["notices"]]
    times += [_t(v["eta"]) for v in p["transparency"]["figures"]["eta"]]
    times += [_t(s["done_at"]) or _t(s["skipped_at"])
              for s in p["fast_response"]["figures"]["steps"]["items"]]
    manual = p["minimal_impact"]["figures"]["manual_channel"]
    times += [_t(manual["opened_at"]), _t(manual["closed_at"]), _t(inc["resolved_at"])]
    for party in p["coordination"]["figures"]["parties"]:
        times += [_t(party["notified_at"]), _t(party["acknowledged_at"])]
    end = max([t for t in times if t is not None] + [start + timedelta(minutes=10)])
    end = min(end, start + MAX_SPAN)
    pad = (end - start) * 0.04
    return start - pad, end + pad


def timeline_svg(report: dict[str, Any], t: dict[str, Any], zone: ZoneInfo) -> str:
    """The timeline as an SVG element (a string of markup; every text in it is escaped)."""
    start, end = _span(report)
    total = (end - start).total_seconds()
    height = TOP + LANE * len(LANES) + 16

    def x(at: datetime) -> float:
        value = LEFT + (at - start).total_seconds() / total * (WIDTH - LEFT - RIGHT)
        return round(min(max(value, LEFT), WIDTH - RIGHT), 1)

    def y(lane: str) -> int:
        return TOP + LANE * LANES.index(lane) + LANE // 2

    def clock(at: datetime) -> str:
        if not start <= at <= end:  # off the axis: say which day
            return local_text(at, zone)
        local = at.astimezone(zone)
        return local.strftime("%m-%d %H:%M" if end - start > timedelta(days=1) else "%H:%M")

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'aria-label="{escape(t["timeline_title"])}">']
    # lanes and their names
    for index, lane in enumerate(LANES):
        top = TOP + LANE * index
        fill = "#f4f6f8" if index % 2 == 0 else "#ffffff"
        parts.append(f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" '
                     f'height="{LANE}" fill="{fill}"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{top + LANE // 2 + 4}" text-anchor="end" '
                     f'class="lane">{escape(t["lanes"][lane])}</text>')
    # time axis
    step = next((s for s in TICKS if total / s.total_seconds() <= 10), TICKS[-1])
    tick = datetime.fromtimestamp(
        (start.timestamp() // step.total_seconds() + 1) * step.total_seconds(), tz=start.tzinfo)
    while tick < end:
        tx = x(tick)
        parts.append(f'<line x1="{tx}" y1="{TOP - 4}" x2="{tx}" '
                     f'y2="{TOP + LANE * len(LANES)}" class="grid"/>')
        parts.append(f'<text x="{tx}" y="{TOP - 10}" text-anchor="middle" class="tick">'
                     f'{escape(clock(tick))}</text>')
        tick += step
    inc = report["incident"]
    p = report["principles"]

    def marker(at: datetime, lane: str, colour: str, title: str, shape: str = "circle",
               dy: int = 0) -> None:
        cx, cy = x(at), y(lane) + dy
        tip = f"<title>{escape(clock(at) + ' · ' + title)}</title>"
        if shape == "diamond":
            pts = f"{cx},{cy - 7} {cx + 7},{cy} {cx},{cy + 7} {cx - 7},{cy}"
            parts.append(f'<polygon points="{pts}" fill="{colour}">{tip}</polygon>')
        elif shape == "tick":
            parts.append(f'<line x1="{cx}" y1="{cy - 9}" x2="{cx}" y2="{cy + 9}" '
                         f'stroke="{colour}" stroke-width="2">{tip}</line>')
        else:
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="6" fill="{colour}">{tip}</circle>')

    # customer notices
    for n in p["transparency"]["figures"]["notices"]:
        marker(parse_iso(n["at"]), "notices", COLOURS.get(n["phase"], "#1f5fa8"),
               f'#{n["seq"]} {t["phases"].get(n["phase"], n["phase"])}: {n["sent"]}/'
               f'{n["messages"]}')
    # ETA versions: from the announcement to the ETA announced
    for index, v in enumerate(p["transparency"]["figures"]["eta"]):
        if not v["eta"]:
            continue
        dy = -8 + 8 * (index % 3)
        a, e = parse_iso(v["announced_at"]), parse_iso(v["eta"])
        colour = COLOURS["late"] if v["lapsed"] else COLOURS["eta"]
        parts.append(f'<line x1="{x(a)}" y1="{y("eta") + dy}" x2="{x(e)}" y2="{y("eta") + dy}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="4 3"/>')
        marker(e, "eta", colour, f'{t["eta"]} {clock(e)} ({t["announced"]} {clock(a)})',
               shape="diamond", dy=dy)
    # steps: the deadline as a grey tick, the mark green (on time) or red (late)
    for s in p["fast_response"]["figures"]["steps"]["items"]:
        title = f'{s["id"]}: {t["step_states"][s["state"]]}'
        due = _t(s["due"])
        if due is not None and due <= end:
            marker(due, "steps", COLOURS["due"], f'{s["id"]} {t["due"]}', shape="tick")
        done = _t(s["done_at"]) or _t(s["skipped_at"])
        if done is not None:
            colour = {"late": COLOURS["late"], "skipped": COLOURS["due"]}.get(s["state"],
                                                                              COLOURS["ok"])
            marker(done, "steps", colour, title)
    # manual channel
    manual = p["minimal_impact"]["figures"]["manual_channel"]
    if manual["opened_at"]:
        opened = parse_iso(manual["opened_at"])
        closed = _t(manual["closed_at"]) or end
        parts.append(f'<rect x="{x(opened)}" y="{y("manual") - 8}" '
                     f'width="{max(x(closed) - x(opened), 2)}" height="16" rx="4" '
                     f'fill="{COLOURS["manual"]}"><title>{escape(t["manual_title"])} '
                     f'{escape(clock(opened))}–{escape(clock(closed))}</title></rect>')
    # parties: notified (blue) and acknowledged (green)
    for party in p["coordination"]["figures"]["parties"]:
        if party["notified_at"]:
            marker(parse_iso(party["notified_at"]), "parties", COLOURS["party"],
                   f'{party["id"]} {t["notified"]}', dy=-6)
        if party["acknowledged_at"]:
            marker(parse_iso(party["acknowledged_at"]), "parties", COLOURS["ack"],
                   f'{party["id"]} {t["acked"]}', dy=6)
    # detection and recovery across every lane
    bottom = TOP + LANE * len(LANES)
    detected = parse_iso(inc["detected_at"])
    parts.append(f'<line x1="{x(detected)}" y1="{TOP}" x2="{x(detected)}" y2="{bottom}" '
                 f'stroke="{COLOURS["detected"]}" stroke-width="2"><title>'
                 f'{escape(t["timestamps"]["detected"] + " " + clock(detected))}</title></line>')
    if inc["resolved_at"]:
        resolved = parse_iso(inc["resolved_at"])
        impact = format_duration(resolved - detected)
        parts.append(f'<line x1="{x(resolved)}" y1="{TOP}" x2="{x(resolved)}" y2="{bottom}" '
                     f'stroke="{COLOURS["recovery"]}" stroke-width="3"><title>'
                     f'{escape(t["timestamps"]["resolved"] + " " + clock(resolved))}'
                     f'</title></line>')
        parts.append(f'<text x="{x(resolved)}" y="{bottom + 13}" text-anchor="middle" '
                     f'class="tick">{escape(t["lanes"]["recovery"])} {escape(clock(resolved))}'
                     f' (+{escape(impact)})</text>')
    parts.append("</svg>")
    return "".join(parts)
