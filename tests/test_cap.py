"""CAP 1.2 warnings: parsing with file/line/field errors, geometry, and the start/stand-down
decision against the shipped branch list and playbooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from incident.branches import Branch, load_branches
from incident.cap import (
    CapAlert,
    Decision,
    Recorded,
    decide,
    load_alert,
    parse_alert,
    update_messages,
    warning_record,
)
from incident.errors import CapInvalid
from incident.geo import in_circle, in_polygon
from incident.playbooks import Playbook, Warnings, load_playbook

ROOT = Path(__file__).resolve().parent.parent
CAP = Path(__file__).resolve().parent / "data" / "cap"
NOW = datetime.fromisoformat("2026-09-14T14:00:00+08:00")
HK = ["hk-central", "hk-tsim-sha-tsui", "hk-sha-tin", "hk-causeway-bay", "hk-mong-kok",
      "hk-kwun-tong"]


@pytest.fixture(scope="module")
def branches() -> list[Branch]:
    return load_branches(ROOT / "examples" / "branches.csv")


@pytest.fixture(scope="module")
def playbooks() -> list[Playbook]:
    # Every shipped playbook, system failures included: they have no warnings section and
    # must never be chosen.
    return [load_playbook(p) for p in sorted((ROOT / "playbooks").glob("*.yaml"))]


def alert_xml(*, status: str = "Actual", msg_type: str = "Alert",
              sent: str = "2026-09-14T08:00:00+08:00", infos: str | None = None) -> str:
    """A minimal alert; `infos` replaces the single default typhoon info over Hong Kong."""
    if infos is None:
        infos = info_xml()
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>T-1</identifier>
  <sender>test@example.org</sender>
  <sent>{sent}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
{infos}
</alert>
"""


def info_xml(*, language: str = "en", category: str = "Met",
             event: str = "Tropical Cyclone Warning Signal No. 8", urgency: str = "Immediate",
             severity: str = "Severe", certainty: str = "Observed", times: str = "",
             area: str = "<area><areaDesc>Central</areaDesc>"
                         "<circle>22.2819,114.1582 1</circle></area>") -> str:
    return f"""  <info>
    <language>{language}</language>
    <category>{category}</category>
    <event>{event}</event>
    <urgency>{urgency}</urgency>
    <severity>{severity}</severity>
    <certainty>{certainty}</certainty>
    {times}
    {area}
  </info>"""


def parse(text: str) -> CapAlert:
    return parse_alert(text, source="inline.xml")


# ---------------------------------------------------------------- the sample files

SAMPLES = [
    # file, applies, action, playbook, grade, affected branches, reasons (None: see below)
    ("typhoon-alert.xml", True, "start", "typhoon", "II", HK, None),
    ("typhoon-update.xml", True, "start", "typhoon", "I", HK, None),
    # No incident recorded these alerts (see test_recorded_alerts_are_updated_...).
    ("typhoon-cancel.xml", False, "ignore", "typhoon", None, HK,
     ["msgType is Cancel of HKO-TC-20260914-0740, HKO-TC-20260914-1340, which started no "
      "incident here: it applies to nothing"]),
    ("typhoon-test.xml", False, "ignore", "typhoon", "II", HK, ["status is Test, not Actual"]),
    ("typhoon-expired.xml", False, "ignore", None, None, [],
     ["expired at 2026-09-13 20:00 +08:00"]),
    ("typhoon-out-of-area.xml", False, "ignore", None, None, [],
     ["no branch inside the alert area"]),
    ("earthquake-circle.xml", True, "start", "earthquake", "II",
     ["fj-xm-siming", "fj-xm-huli"], None),
    ("rainstorm-geocode.xml", True, "start", "rainstorm-flood", "I",
     ["gd-sz-futian", "gd-sz-nanshan"], None),
    ("rainstorm-moderate.xml", False, "ignore", None, None, [],
     ["severity is Moderate, not Extreme or Severe"]),
    # An exercise is ignored, but says what it would start so it can be run as a drill.
    ("earthquake-exercise.xml", False, "ignore", "earthquake", "II",
     ["bj-haidian", "bj-xicheng"], ["status is Exercise, not Actual"]),
]


@pytest.mark.parametrize(("name", "applies", "action", "playbook", "grade", "affected",
                          "reasons"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_sample_decisions(name: str, applies: bool, action: str, playbook: str | None,
                          grade: str | None, affected: list[str], reasons: list[str] | None,
                          branches: list[Branch], playbooks: list[Playbook]) -> None:
    alert = load_alert(CAP / name)
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert (decision.applies, decision.action) == (applies, action)
    assert (decision.playbook.id if decision.playbook else None) == playbook
    assert decision.grade == grade
    assert [b.id for b in decision.branches] == affected
    assert decision.alert is alert
    if reasons is not None:
        assert decision.reasons == reasons
    else:
        assert decision.info is not None
        assert decision.reasons == [
            f"Actual {alert.msg_type} in effect until "
            f"{decision.info.expires:%Y-%m-%d %H:%M} +08:00",
            f"urgency {decision.info.urgency}, severity {decision.info.severity}, "
            f"certainty {decision.info.certainty}",
            f"{len(affected)} branches inside the alert area: {', '.join(affected)}",
            f"playbook {playbook} answers event {decision.info.event!r}, grade {grade}",
        ]


def test_the_decision_uses_the_first_applying_info(branches: list[Branch],
                                                   playbooks: list[Playbook]) -> None:
    hko = decide(load_alert(CAP / "typhoon-alert.xml"), now=NOW, branches=branches,
                 playbooks=playbooks)
    assert hko.info is not None
    assert (hko.info.language, hko.info.event) == ("en", "Tropical Cyclone Warning Signal No. 8")
    cma = decide(load_alert(CAP / "rainstorm-geocode.xml"), now=NOW, branches=branches,
                 playbooks=playbooks)
    assert cma.info is not None
    assert (cma.info.language, cma.info.event) == ("zh-CN", "暴雨红色预警")


def test_sample_alert_is_parsed_in_full() -> None:
    alert = load_alert(CAP / "typhoon-alert.xml")
    assert (alert.identifier, alert.sender, alert.status, alert.msg_type, alert.scope) == (
        "HKO-TC-20260914-0740", "cap@hko.gov.hk", "Actual", "Alert", "Public")
    assert alert.sent == datetime(2026, 9, 13, 23, 40, tzinfo=UTC)
    assert alert.sent.utcoffset() == timedelta(hours=8)
    assert alert.references == []
    en, zh = alert.infos
    assert (en.language, zh.language) == ("en", "zh-HK")
    assert en.categories == ["Met"]
    assert (en.urgency, en.severity, en.certainty) == ("Immediate", "Severe", "Observed")
    assert en.onset is None
    assert en.expires == datetime.fromisoformat("2026-09-15T07:40:00+08:00")
    assert en.sender_name == "Hong Kong Observatory"
    assert en.headline == "Gale or Storm Signal No. 8 Southeast is issued"
    assert en.instruction.startswith("Complete all precautions now.")
    assert zh.headline == "八號東南烈風或暴風信號現正生效"
    [area] = en.areas
    assert area.desc == "Hong Kong"
    assert area.polygons == [[(22.15, 113.83), (22.15, 114.45), (22.57, 114.45),
                              (22.50, 114.05), (22.50, 113.83), (22.15, 113.83)]]
    assert area.circles == []
    assert area.geocodes == [("GB/T 2260", "810000")]

    quake = load_alert(CAP / "earthquake-circle.xml")
    assert quake.infos[0].areas[0].circles == [(24.30, 118.45, 60.0)]
    assert quake.infos[0].onset == datetime.fromisoformat("2026-09-14T11:26:30+08:00")
    cancel = load_alert(CAP / "typhoon-cancel.xml")
    assert cancel.references == [
        "cap@hko.gov.hk,HKO-TC-20260914-0740,2026-09-14T07:40:00+08:00",
        "cap@hko.gov.hk,HKO-TC-20260914-1340,2026-09-14T13:40:00+08:00",
    ]
    assert cancel.referenced_identifiers() == ["HKO-TC-20260914-0740", "HKO-TC-20260914-1340"]


# ---------------------------------------------------------------- malformed files

MALFORMED = [
    ("not-xml.xml", 1, None, "not well-formed XML: syntax error (column 1)"),
    ("truncated.xml", 23, None, "the file ends before <area> (line 22) is closed: truncated?"),
    ("wrong-namespace.xml", 2, "alert",
     "the root element is {http://www.incident.com/cap/1.0}alert, expected "
     "{urn:oasis:names:tc:emergency:cap:1.2}alert (a CAP 1.2 alert, or 1.1)"),
    ("missing-status.xml", 2, "alert.status", "required element missing"),
    ("bad-urgency.xml", 13, "alert.info[1].urgency",
     "'Soon' is not one of Immediate, Expected, Future, Past, Unknown"),
    ("bad-polygon.xml", 25, "alert.info[1].area[1].polygon[1]",
     "the polygon is not closed: the first point must equal the last"),
]


@pytest.mark.parametrize(("name", "line", "field", "message"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_files_name_file_line_and_field(name: str, line: int, field: str | None,
                                                  message: str) -> None:
    path = CAP / "malformed" / name
    with pytest.raises(CapInvalid) as caught:
        load_alert(path)
    loc, text = caught.value.problems[0]
    assert (loc.file, loc.line, loc.field, text) == (str(path), line, field, message)
    where = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert caught.value.message.startswith(where + message)
    assert caught.value.exit_code == 2


def test_every_problem_is_listed_not_only_the_first() -> None:
    path = CAP / "malformed" / "bad-polygon.xml"
    with pytest.raises(CapInvalid) as caught:
        load_alert(path)
    assert [(loc.line, loc.field) for loc, _ in caught.value.problems] == [
        (25, "alert.info[1].area[1].polygon[1]"), (43, "alert.info[2].area[1].polygon[1]")]
    assert caught.value.message.endswith("(and 1 more)")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CapInvalid, match=r"CAP file not found: .*nope\.xml"):
        load_alert(tmp_path / "nope.xml")


def line_of(text: str, fragment: str) -> int:
    return text[:text.index(fragment)].count("\n") + 1


BAD_INFO = [
    # (info arguments, fragment on the failing line, field, message)
    ({"urgency": ""}, "<urgency>", "alert.info[1].urgency", "empty"),
    ({"severity": "severe"}, "<severity>", "alert.info[1].severity",
     "'severe' is not one of Extreme, Severe, Moderate, Minor, Unknown"),
    ({"certainty": "Sure"}, "<certainty>", "alert.info[1].certainty",
     "'Sure' is not one of Observed, Likely, Possible, Unlikely, Unknown"),
    ({"category": "Weather"}, "<category>", "alert.info[1].category[1]",
     "'Weather' is not one of Geo, Met, Safety, Security, Rescue, Fire, Health, Env, "
     "Transport, Infra, CBRNE, Other"),
    ({"times": "<expires>2026-09-14 20:00</expires>"}, "<expires>", "alert.info[1].expires",
     "'2026-09-14 20:00' has no UTC offset (write e.g. +08:00)"),
    ({"times": "<effective>tomorrow</effective>"}, "<effective>", "alert.info[1].effective",
     "'tomorrow' is not a time like 2026-09-14T08:00:00+08:00"),
    ({"area": "<area><areaDesc>x</areaDesc><polygon>22,114 22,115 23,114</polygon></area>"},
     "<polygon>", "alert.info[1].area[1].polygon[1]",
     "a polygon needs at least 4 points (first = last), got 3"),
    ({"area": "<area><areaDesc>x</areaDesc><polygon>22,114 22;115 23,114 22,114</polygon>"
              "</area>"},
     "<polygon>", "alert.info[1].area[1].polygon[1]", "expected a 'lat,lon' pair, got '22;115'"),
    ({"area": "<area><areaDesc>x</areaDesc><polygon>22,114 95,115 23,114 22,114</polygon>"
              "</area>"},
     "<polygon>", "alert.info[1].area[1].polygon[1]", "latitude 95 is out of range (-90 to 90)"),
    ({"area": "<area><areaDesc>x</areaDesc><circle>22.3,114.2</circle></area>"},
     "<circle>", "alert.info[1].area[1].circle[1]",
     "expected 'lat,lon radius_km', got '22.3,114.2'"),
    ({"area": "<area><areaDesc>x</areaDesc><circle>22.3,114.2 -5</circle></area>"},
     "<circle>", "alert.info[1].area[1].circle[1]", "radius -5 is negative"),
    ({"area": "<area><areaDesc>x</areaDesc><circle>22.3,east 5</circle></area>"},
     "<circle>", "alert.info[1].area[1].circle[1]", "longitude 'east' is not a number"),
    ({"area": "<area><circle>22.3,114.2 5</circle></area>"},
     "<area>", "alert.info[1].area[1].areaDesc", "required element missing"),
    ({"area": "<area><areaDesc>x</areaDesc><geocode><value>440304</value></geocode></area>"},
     "<geocode>", "alert.info[1].area[1].geocode[1].valueName", "required element missing"),
]


@pytest.mark.parametrize(("info", "fragment", "field", "message"), BAD_INFO,
                         ids=[b[2] + ":" + b[3][:20] for b in BAD_INFO])
def test_bad_info_values(info: dict[str, str], fragment: str, field: str,
                         message: str) -> None:
    text = alert_xml(infos=info_xml(**info))
    with pytest.raises(CapInvalid) as caught:
        parse(text)
    [(loc, got)] = caught.value.problems
    assert (loc.file, loc.line, loc.field, got) == ("inline.xml", line_of(text, fragment),
                                                    field, message)


def test_missing_required_elements_are_located_at_their_parent() -> None:
    text = alert_xml(infos="  <info>\n    <language>en</language>\n  </info>")
    text = text.replace("  <sender>test@example.org</sender>\n", "")
    with pytest.raises(CapInvalid) as caught:
        parse(text)
    info_line = line_of(text, "<info>")
    assert [(loc.line, loc.field, message) for loc, message in caught.value.problems] == [
        (2, "alert.sender", "required element missing"),
        (info_line, "alert.info[1].category", "required element missing"),
        (info_line, "alert.info[1].event", "required element missing"),
        (info_line, "alert.info[1].urgency", "required element missing"),
        (info_line, "alert.info[1].severity", "required element missing"),
        (info_line, "alert.info[1].certainty", "required element missing"),
    ]


def test_repeated_single_elements_and_bad_alert_enums() -> None:
    text = alert_xml(status="Real", msg_type="Alert</msgType>\n  <msgType>Update")
    with pytest.raises(CapInvalid) as caught:
        parse(text)
    assert [(loc.line, loc.field, message) for loc, message in caught.value.problems] == [
        (line_of(text, "<status>"), "alert.status",
         "'Real' is not one of Actual, Exercise, System, Test, Draft"),
        (line_of(text, "<msgType>Update"), "alert.msgType",
         "appears 2 times; CAP allows it once here"),
    ]


def test_identifier_must_not_contain_spaces() -> None:
    text = alert_xml().replace("<identifier>T-1", "<identifier>T 1")
    with pytest.raises(CapInvalid, match=r"inline.xml:3: alert.identifier: must not contain"):
        parse(text)


@pytest.mark.parametrize("text", [
    # billion laughs (shortened): refused before any entity is declared
    '<?xml version="1.0"?>\n<!DOCTYPE alert [\n <!ENTITY a "aaaaaaaaaa">\n'
    ' <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n]>\n'
    '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&b;</alert>',
    # external entity
    '<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier></alert>',
    # external DTD
    '<?xml version="1.0"?>\n<!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">\n<alert/>',
])
def test_doctype_and_entities_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "evil.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CapInvalid) as caught:
        load_alert(path)
    assert caught.value.message == (f"{path}:2: a DOCTYPE is not allowed in a CAP file "
                                    "(refused: entities could expand)")


def test_undeclared_entity_is_an_xml_error() -> None:
    with pytest.raises(CapInvalid, match=r"inline.xml:4: not well-formed XML: undefined entity"):
        parse(alert_xml().replace("test@example.org", "&sender;"))


# ---------------------------------------------------------------- geometry

SQUARE = [(0.0, 0.0), (0.0, 10.0), (10.0, 10.0), (10.0, 0.0), (0.0, 0.0)]
# A "U": the notch between lon 3 and 7 reaches down to lat 3.
U_SHAPE = [(0.0, 0.0), (0.0, 10.0), (10.0, 10.0), (10.0, 7.0), (3.0, 7.0), (3.0, 3.0),
           (10.0, 3.0), (10.0, 0.0), (0.0, 0.0)]


@pytest.mark.parametrize(("lat", "lon", "polygon", "inside"), [
    (5, 5, SQUARE, True),
    (0, 0, SQUARE, True),            # a corner
    (0, 5, SQUARE, True),            # on the bottom edge (lat 0)
    (5, 10, SQUARE, True),           # on the right edge
    (10.000001, 5, SQUARE, False),   # just outside
    (5, -0.000001, SQUARE, False),
    (-5, 5, SQUARE, False),
    (5, 20, SQUARE, False),          # the ray to the east crosses nothing
    (5, -20, SQUARE, False),         # the ray to the east crosses two edges
    (8, 5, U_SHAPE, False),          # in the notch
    (2, 5, U_SHAPE, True),           # below the notch
    (8, 2, U_SHAPE, True),           # in the left arm
    (3, 1, U_SHAPE, True),           # the ray runs along the notch's bottom edge
    (10, 5, U_SHAPE, False),         # on the line of the top, but in the notch's gap
    (7, -1, [(0, 0), (7, 10), (14, 0), (0, 0)], False),  # the ray grazes the apex once
    (7, 12, [(0, 0), (7, 10), (14, 0), (0, 0)], False),  # level with the apex, beyond it
    (7, 8, [(0, 0), (7, 10), (14, 0), (0, 0)], True),
    (5, 5, [(0, 0), (0, 10), (0, 5), (0, 0)], False),     # collinear: no area
    (0, 5, [(0, 0), (0, 10), (0, 5), (0, 0)], False),
    (1, 1, [(1, 1), (1, 1), (1, 1), (1, 1)], False),      # one point repeated
    (1, 1, [], False),
])
def test_point_in_polygon(lat: float, lon: float, polygon: list[tuple[float, float]],
                          inside: bool) -> None:
    assert in_polygon(lat, lon, polygon) is inside


def test_polygon_orientation_does_not_matter() -> None:
    assert in_polygon(5, 5, list(reversed(SQUARE)))
    assert not in_polygon(8, 5, list(reversed(U_SHAPE)))


def test_circle_is_great_circle_distance_in_km() -> None:
    # 1 km is 0.009° of latitude anywhere, but 0.0097° of longitude at Hong Kong's latitude.
    assert in_circle(22.3 + 0.0089, 114.2, 22.3, 114.2, 1)
    assert not in_circle(22.3 + 0.0091, 114.2, 22.3, 114.2, 1)
    assert in_circle(22.3, 114.2 + 0.0096, 22.3, 114.2, 1)
    assert not in_circle(22.3, 114.2 + 0.0099, 22.3, 114.2, 1)
    assert in_circle(22.3, 114.2, 22.3, 114.2, 0)  # a zero radius holds its centre only


def test_branch_on_the_polygon_edge_is_affected(branches: list[Branch]) -> None:
    central = next(b for b in branches if b.id == "hk-central")
    lat, lon = central.latitude, central.longitude
    ring = f"{lat},{lon} {lat},{lon + 0.1} {lat + 0.1},{lon + 0.1} {lat},{lon}"
    alert = parse(alert_xml(infos=info_xml(
        area=f"<area><areaDesc>edge</areaDesc><polygon>{ring}</polygon></area>")))
    decision = decide(alert, now=NOW, branches=[central], playbooks=[])
    assert [b.id for b in decision.branches] == ["hk-central"]


@pytest.mark.parametrize("area", [
    "<area><areaDesc>Hong Kong (no shape given)</areaDesc></area>",
    "",  # no <area> at all
])
def test_an_area_without_shape_contains_no_branch(area: str, branches: list[Branch],
                                                  playbooks: list[Playbook]) -> None:
    alert = parse(alert_xml(infos=info_xml(area=area)))
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert (decision.applies, decision.action, decision.branches) == (False, "ignore", [])
    assert decision.reasons == ["no branch inside the alert area (it gives no polygon, circle "
                                "or geocode)"]


def test_degenerate_polygon_contains_no_branch(branches: list[Branch],
                                               playbooks: list[Playbook]) -> None:
    # Four points, closed, but all on one line through hk-central.
    line = "22.2819,114.1 22.2819,114.1582 22.2819,114.2 22.2819,114.1"
    alert = parse(alert_xml(infos=info_xml(
        area=f"<area><areaDesc>line</areaDesc><polygon>{line}</polygon></area>")))
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert decision.reasons == ["no branch inside the alert area"]


def test_geocode_matches_a_branch_geocode_or_its_region(branches: list[Branch],
                                                        playbooks: list[Playbook]) -> None:
    def affected(value: str, scheme: str = "GB/T 2260", *, within: list[Branch] = branches,
                 books: list[Playbook] = playbooks) -> list[str]:
        area = (f"<area><areaDesc>x</areaDesc><geocode><valueName>{scheme}</valueName>"
                f"<value>{value}</value></geocode></area>")
        alert = parse(alert_xml(infos=info_xml(area=area)))
        return [b.id for b in decide(alert, now=NOW, branches=within,
                                     playbooks=books).branches]

    assert affected("350203") == ["fj-xm-siming"]
    assert affected("350200") == ["fj-xm-siming", "fj-xm-huli"]
    assert affected("fujian") == ["fj-xm-siming", "fj-xm-huli", "fj-fz-gulou"]
    assert affected("3502") == []  # values are compared whole, not as prefixes
    assert len(affected("440000", scheme="gb/t 2260")) == 9  # valueName in any case
    # A JMA prefecture code that happens to equal Guangdong's GB/T 2260 code is not Guangdong.
    assert affected("440000", scheme="JMA") == []
    # A branch says which scheme a code is in (valueName=value), or the playbook does.
    central = next(b for b in branches if b.id == "hk-central")
    tagged = Branch(**{**central.__dict__, "id": "jp-x", "geocodes": ("JMA=440000",)})
    assert affected("440000", scheme="JMA", within=[*branches, tagged]) == ["jp-x"]
    typhoon = next(p for p in playbooks if p.id == "typhoon")
    assert typhoon.warnings is not None
    jma = typhoon.model_copy(update={"warnings": typhoon.warnings.model_copy(
        update={"geocodes": ["JMA"]})})
    assert affected("440000", scheme="JMA", books=[jma]) == [
        b.id for b in branches if b.region == "guangdong"]
    assert affected("440000", books=[jma]) == []


# ---------------------------------------------------------------- the decision in detail


@pytest.mark.parametrize(("now", "reasons"), [
    # The alert's times are in +08:00; `now` comes in UTC and in Tokyo time.
    ("2026-09-13T23:59:59+00:00", ["not in effect until 2026-09-14 08:00 +08:00"]),
    ("2026-09-14T00:00:00+00:00", []),                  # = effective (08:00 +08:00)
    ("2026-09-14T21:00:00+09:00", []),                  # = expires (20:00 +08:00)
    ("2026-09-14T12:00:01+00:00", ["expired at 2026-09-14 20:00 +08:00"]),
])
def test_effective_and_expires_across_time_zones(now: str, reasons: list[str],
                                                 branches: list[Branch],
                                                 playbooks: list[Playbook]) -> None:
    times = ("<effective>2026-09-14T08:00:00+08:00</effective>"
             "<expires>2026-09-14T20:00:00+08:00</expires>")
    alert = parse(alert_xml(sent="2026-09-14T07:55:00+08:00", infos=info_xml(times=times)))
    decision = decide(alert, now=datetime.fromisoformat(now), branches=branches,
                      playbooks=playbooks)
    assert decision.applies is (not reasons)
    if reasons:
        assert decision.reasons == reasons


def test_effective_defaults_to_sent_and_no_expires_means_the_max_age(
        branches: list[Branch], playbooks: list[Playbook]) -> None:
    # `sent` given in UTC with CAP's "-00:00" spelling.
    alert = parse(alert_xml(sent="2026-09-14T00:00:00-00:00"))
    before = decide(alert, now=datetime(2026, 9, 13, 23, 59, tzinfo=UTC), branches=branches,
                    playbooks=playbooks)
    assert before.reasons == ["not in effect until 2026-09-14 00:00 +00:00"]
    within = decide(alert, now=datetime(2026, 9, 14, 23, 59, tzinfo=UTC), branches=branches,
                    playbooks=playbooks)
    assert within.applies
    assert within.reasons[0] == ("Actual Alert in effect until 2026-09-15 00:00 +00:00 (no "
                                 "<expires>: playbook typhoon's max_age 1d)")
    # An alert without an end does not apply for ever (a 2003 alert, read today).
    years_later = decide(alert, now=datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=8))),
                         branches=branches, playbooks=playbooks)
    assert (years_later.applies, years_later.reasons) == (False, [
        "expired at 2026-09-15 00:00 +00:00 (no <expires>: playbook typhoon's max_age 1d)"])
    # The playbook says how long; with no playbook for the event, the default (1 day).
    typhoon = next(p for p in playbooks if p.id == "typhoon")
    assert typhoon.warnings is not None
    short = typhoon.model_copy(update={"warnings": typhoon.warnings.model_copy(
        update={"max_age": timedelta(hours=6)})})
    late = datetime(2026, 9, 14, 7, tzinfo=UTC)
    assert decide(alert, now=late, branches=branches, playbooks=[short]).reasons == [
        "expired at 2026-09-14 06:00 +00:00 (no <expires>: playbook typhoon's max_age 6h)"]
    assert decide(alert, now=late, branches=branches, playbooks=[]).applies
    assert not decide(alert, now=late + timedelta(days=1), branches=branches,
                      playbooks=[]).applies


def test_a_naive_now_is_refused(branches: list[Branch]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(parse(alert_xml()), now=datetime(2026, 9, 14, 14), branches=branches,
               playbooks=[])


def test_every_failed_criterion_is_a_reason(branches: list[Branch],
                                            playbooks: list[Playbook]) -> None:
    info = info_xml(urgency="Future", severity="Minor", certainty="Possible",
                    times="<expires>2026-09-14T09:00:00+08:00</expires>",
                    area="<area><areaDesc>Haikou</areaDesc><circle>20.0,110.3 30</circle></area>")
    alert = parse(alert_xml(status="Draft", msg_type="Ack", infos=info))
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert (decision.applies, decision.action, decision.info, decision.playbook) == (
        False, "ignore", None, None)
    assert decision.reasons == [
        "status is Draft, not Actual",
        "msgType is Ack, not Alert, Update or Cancel",
        "expired at 2026-09-14 09:00 +08:00",
        "urgency is Future, not Immediate or Expected",
        "severity is Minor, not Extreme or Severe",
        "certainty is Possible, not Observed or Likely",
        "no branch inside the alert area",
    ]


def test_translations_that_disagree_are_told_apart(branches: list[Branch],
                                                   playbooks: list[Playbook]) -> None:
    infos = info_xml(severity="Moderate") + "\n" + info_xml(language="zh-CN", event="台风",
                                                            certainty="Possible")
    decision = decide(parse(alert_xml(infos=infos)), now=NOW, branches=branches,
                      playbooks=playbooks)
    assert decision.reasons == [
        "info[1] (en): severity is Moderate, not Extreme or Severe",
        "info[2] (zh-CN): certainty is Possible, not Observed or Likely",
    ]


def test_an_alert_with_no_info_is_ignored(branches: list[Branch]) -> None:
    decision = decide(parse(alert_xml(infos="")), now=NOW, branches=branches, playbooks=[])
    assert decision.reasons == ["the alert has no <info> block"]


def test_an_applying_info_is_preferred_to_one_that_does_not(
        branches: list[Branch], playbooks: list[Playbook]) -> None:
    infos = info_xml(severity="Moderate") + "\n" + info_xml(language="zh-CN",
                                                            event="热带气旋警告信号八号")
    decision = decide(parse(alert_xml(infos=infos)), now=NOW, branches=branches,
                      playbooks=playbooks)
    assert decision.info is not None
    assert (decision.action, decision.info.language) == ("start", "zh-CN")


def test_an_info_a_playbook_answers_is_preferred(branches: list[Branch],
                                                 playbooks: list[Playbook]) -> None:
    infos = (info_xml(event="Signal No. 8") + "\n"
             + info_xml(language="zh-CN", event="台风"))
    decision = decide(parse(alert_xml(infos=infos)), now=NOW, branches=branches,
                      playbooks=playbooks)
    assert decision.info is not None
    assert decision.playbook is not None
    assert (decision.info.language, decision.playbook.id) == ("zh-CN", "typhoon")


@pytest.mark.parametrize(("event", "category"), [
    ("Landslide", "Geo"),                          # no playbook has the word
    ("Tropical Cyclone Warning Signal No. 8", "Safety"),  # the word, but the wrong category
])
def test_applicable_alert_without_a_playbook(event: str, category: str,
                                             branches: list[Branch],
                                             playbooks: list[Playbook]) -> None:
    alert = parse(alert_xml(infos=info_xml(event=event, category=category)))
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert (decision.applies, decision.action, decision.playbook, decision.grade) == (
        True, "start", None, None)
    assert [b.id for b in decision.branches] == ["hk-central"]
    assert decision.reasons[-1] == f"no playbook answers event {event!r}: choose one by hand"


def test_playbook_order_and_grade_fallback(branches: list[Branch],
                                           playbooks: list[Playbook]) -> None:
    typhoon = next(p for p in playbooks if p.id == "typhoon")
    narrow = typhoon.model_copy(update={
        "id": "typhoon-narrow",
        "warnings": Warnings(events=["SIGNAL NO. 8"], categories=["met"],
                             grades={"Extreme": "I"}),
    })
    alert = parse(alert_xml())  # severity Severe: not in narrow's grades
    first = decide(alert, now=NOW, branches=branches, playbooks=[narrow, typhoon])
    assert (first.playbook, first.grade) == (narrow, typhoon.severity.default)
    second = decide(alert, now=NOW, branches=branches, playbooks=[typhoon, narrow])
    assert (second.playbook, second.grade) == (typhoon, "II")


def test_a_cancel_that_is_not_actual_is_ignored(branches: list[Branch],
                                                playbooks: list[Playbook]) -> None:
    text = (CAP / "typhoon-cancel.xml").read_text(encoding="utf-8")
    alert = parse(text.replace("<status>Actual</status>", "<status>Test</status>"))
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert (decision.applies, decision.action) == (False, "ignore")
    assert decision.reasons == ["status is Test, not Actual"]


def test_a_cancel_without_references_or_info(branches: list[Branch]) -> None:
    decision = decide(parse(alert_xml(msg_type="Cancel", infos="")), now=NOW,
                      branches=branches, playbooks=[])
    assert (decision.applies, decision.action, decision.info, decision.branches) == (
        False, "ignore", None, [])
    assert decision.reasons == ["msgType is Cancel, but it references no earlier alert: it "
                                "applies to nothing"]


# ---------------------------------------------------------------- declared encodings

# Chinese agencies publish in these; expat itself reads none of them.
CHINESE_ENCODINGS = [("GB2312", "rainstorm-geocode.xml"), ("GBK", "rainstorm-geocode.xml"),
                     ("GB18030", "rainstorm-geocode.xml"), ("Big5", "typhoon-alert.xml")]


@pytest.mark.parametrize(("encoding", "name"), CHINESE_ENCODINGS,
                         ids=[e for e, _ in CHINESE_ENCODINGS])
def test_a_file_in_a_chinese_encoding_is_read_in_it(tmp_path: Path, encoding: str,
                                                    name: str) -> None:
    text = (CAP / name).read_text(encoding="utf-8")
    text = text.replace('encoding="UTF-8"', f'encoding="{encoding}"', 1)
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    assert load_alert(path) == load_alert(CAP / name)


def test_bytes_that_are_not_in_the_declared_encoding_are_located(tmp_path: Path) -> None:
    text = (CAP / "typhoon-alert.xml").read_text(encoding="utf-8")
    path = tmp_path / "mixed.xml"
    # Declared Big5, but the Chinese headline is written in UTF-8.
    path.write_bytes(text.replace('encoding="UTF-8"', 'encoding="Big5"', 1).encode("utf-8"))
    with pytest.raises(CapInvalid) as caught:
        load_alert(path)
    [(loc, message)] = caught.value.problems
    assert (loc.file, loc.line) == (str(path), line_of(text, "<event>熱帶"))
    assert message.startswith("not Big5: bytes 0x")


def test_an_unknown_encoding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_bytes(alert_xml().replace('encoding="UTF-8"', 'encoding="KLINGON-8"').encode())
    with pytest.raises(CapInvalid, match=r"x.xml:1: unknown encoding 'KLINGON-8'"):
        load_alert(path)


# ---------------------------------------------------------------- alerts already recorded


def _recorded(playbooks: list[Playbook], *, is_open: bool = True) -> dict[tuple[str, str],
                                                                           Recorded]:
    """The typhoon alert of typhoon-alert.xml recorded on INC-20260914-AAAAAA."""
    typhoon = next(p for p in playbooks if p.id == "typhoon")
    return {("cap@hko.gov.hk", "HKO-TC-20260914-0740"): Recorded(
        incident_id="INC-20260914-AAAAAA", is_open=is_open,
        status="investigating" if is_open else "resolved", playbook=typhoon, severity="II")}


def test_recorded_alerts_are_updated_stood_down_and_not_repeated(
        branches: list[Branch], playbooks: list[Playbook]) -> None:
    recorded = _recorded(playbooks)

    def decision(name: str) -> Decision:
        return decide(load_alert(CAP / name), now=NOW, branches=branches, playbooks=playbooks,
                      recorded=recorded)

    again = decision("typhoon-alert.xml")
    assert (again.applies, again.action, again.incident) == (
        False, "duplicate", "INC-20260914-AAAAAA")
    assert again.reasons == ["already recorded on INC-20260914-AAAAAA (investigating): "
                             "nothing to do"]
    update = decision("typhoon-update.xml")
    assert (update.applies, update.action, update.incident, update.grade) == (
        True, "update", "INC-20260914-AAAAAA", "I")
    assert [b.id for b in update.branches] == HK
    assert update.reasons == [
        "Update of HKO-TC-20260914-0740, which started INC-20260914-AAAAAA: record it there, "
        "not a second incident",
        "urgency Immediate, severity Extreme, certainty Observed: grade I",
        "in force until 2026-09-15 13:40 +08:00",
        "6 branches inside the alert area: " + ", ".join(HK),
    ]
    assert update_messages(update) == (
        "Hurricane Signal No. 10 is issued (in force until 2026-09-15 13:40 +08:00)",
        "十號颶風信號現正生效（有效至 2026-09-15 13:40 +08:00）")
    record = warning_record(update)
    assert (record["identifier"], record["references"], record["expires"]) == (
        "HKO-TC-20260914-1340",
        ["cap@hko.gov.hk,HKO-TC-20260914-0740,2026-09-14T07:40:00+08:00"],
        "2026-09-15T13:40:00+08:00")
    cancel = decision("typhoon-cancel.xml")
    assert (cancel.applies, cancel.action, cancel.incident) == (
        True, "stand_down", "INC-20260914-AAAAAA")
    assert cancel.reasons == [
        "msgType is Cancel of HKO-TC-20260914-0740, HKO-TC-20260914-1340, which started "
        "INC-20260914-AAAAAA: stand it down",
        'incident resolve AAAAAA --message "..."  (customers get the recovery notice)']
    # Another sender's alert with the same identifier is another alert.
    other = parse(alert_xml().replace("<identifier>T-1", "<identifier>HKO-TC-20260914-0740"))
    assert decide(other, now=NOW, branches=branches, playbooks=playbooks,
                  recorded=recorded).action == "start"


def test_alerts_of_a_resolved_incident(branches: list[Branch],
                                       playbooks: list[Playbook]) -> None:
    recorded = _recorded(playbooks, is_open=False)
    cancel = decide(load_alert(CAP / "typhoon-cancel.xml"), now=NOW, branches=branches,
                    playbooks=playbooks, recorded=recorded)
    assert (cancel.applies, cancel.action, cancel.incident) == (
        False, "ignore", "INC-20260914-AAAAAA")
    assert cancel.reasons == [
        "msgType is Cancel of HKO-TC-20260914-0740, HKO-TC-20260914-1340; the incident they "
        "started is no longer open: INC-20260914-AAAAAA (resolved)"]
    # The typhoon is back after the incident was resolved: a new incident.
    update = decide(load_alert(CAP / "typhoon-update.xml"), now=NOW, branches=branches,
                    playbooks=playbooks, recorded=recorded)
    assert (update.action, update.incident) == ("start", None)


def test_an_ignored_alert_still_shows_its_event(branches: list[Branch],
                                                playbooks: list[Playbook]) -> None:
    decision = decide(load_alert(CAP / "typhoon-expired.xml"), now=NOW, branches=branches,
                      playbooks=playbooks)
    assert (decision.action, decision.info) == ("ignore", None)
    assert decision.subject is not None
    assert decision.subject.event == "台风橙色预警"


# The Hong Kong Observatory names its tropical cyclone signals itself, in zh-HK and English
# (www.hko.gov.hk/en/explain/tc/tc_signals.htm): none of them says "typhoon".
HKO_SIGNALS = [
    ("en", "Standby Signal No. 1"), ("zh-HK", "一號戒備信號"),
    ("en", "Strong Wind Signal No. 3"), ("zh-HK", "三號強風信號"),
    ("en", "No. 8 Northeast Gale or Storm Signal"), ("zh-HK", "八號東北烈風或暴風信號"),
    ("en", "No. 8 Southwest Gale or Storm Signal"), ("zh-HK", "八號西南烈風或暴風信號"),
    ("en", "Increasing Gale or Storm Signal No. 9"), ("zh-HK", "九號烈風或暴風風力增強信號"),
    ("en", "Hurricane Signal No. 10"), ("zh-HK", "十號颶風信號"),
]


@pytest.mark.parametrize(("language", "event"), HKO_SIGNALS, ids=[e for _, e in HKO_SIGNALS])
def test_hong_kong_observatory_signal_names_start_the_typhoon_playbook(
        language: str, event: str, branches: list[Branch], playbooks: list[Playbook]) -> None:
    alert = parse(alert_xml(infos=info_xml(language=language, event=event)))
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert decision.playbook is not None
    assert (decision.action, decision.playbook.id) == ("start", "typhoon")


@pytest.mark.parametrize("event", ["Amber Rainstorm Warning Signal", "黑色暴雨警告信號",
                                   "Red Rainstorm Warning Signal", "新界北部水浸特別報告"])
def test_hong_kong_observatory_rain_names_start_the_rainstorm_playbook(
        event: str, branches: list[Branch], playbooks: list[Playbook]) -> None:
    alert = parse(alert_xml(infos=info_xml(language="zh-HK", event=event)))
    decision = decide(alert, now=NOW, branches=branches, playbooks=playbooks)
    assert decision.playbook is not None
    assert decision.playbook.id == "rainstorm-flood"


# ---------------------------------------------------------------- real alerts

REAL = sorted((CAP / "real").glob("*.*[lp]"))  # .xml and .cap; not the README


def test_the_real_corpus_is_complete() -> None:
    listed = (CAP / "real" / "README.md").read_text(encoding="utf-8")
    assert len(REAL) == 25
    assert all(f"`{path.name}`" in listed for path in REAL)


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_alerts_are_decided_or_refused_with_a_location(
        path: Path, branches: list[Branch], playbooks: list[Playbook]) -> None:
    """Alerts as agencies and CAP libraries publish them: each is read and decided, or
    refused as bad input naming the file and line; none raises anything else."""
    try:
        alert = load_alert(path)
    except CapInvalid as refused:
        assert refused.exit_code == 2
        assert refused.message.startswith(f"{path}:")
        return
    for now in (NOW, datetime(2003, 6, 17, 22, 0, tzinfo=UTC)):  # today, and when sent
        decision = decide(alert, now=now, branches=branches, playbooks=playbooks)
        assert decision.reasons
        # None of these alerts is about a place the bank has a branch.
        assert (decision.applies, decision.branches) == (False, [])
    # An alert without <expires> no longer applies years later (the 2003 DHS advisory).
    if all(info.expires is None for info in alert.infos) and alert.infos:
        late = decide(alert, now=NOW, branches=[], playbooks=playbooks)
        assert any("no <expires>" in reason for reason in late.reasons)
