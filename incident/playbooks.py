"""Playbooks: YAML → validated `Playbook`, with errors that name file, line and field."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator, model_validator

from incident.errors import PlaybookInvalid, PlaybookNotFound
from incident.inbound.optout import STOP_KEYWORDS
from incident.languages import LANGUAGES
from incident.models import Duration, Kind, Phase, Strict, Text
from incident.regions import by_region
from incident.yamlfile import parse_model

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
CustomerChannel = Literal["email", "sms", "voice"]
StepAction = Literal["declare", "notify_customers", "open_manual_channel", "notify_parties"]
CapSeverity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
DEFAULT_MAX_AGE = timedelta(hours=24)
DEFAULT_SCHEMES = ("GB/T 2260",)  # China's administrative division codes (HK is 810000)


class SeverityLevel(Strict):
    """One grade of the playbook's severity scale (e.g. I–IV of the 2008 rule)."""

    id: str = Field(pattern=r"^[A-Za-z0-9]+$")
    name: Text
    criteria: Text
    update_every: Duration | None = None  # overrides transparency.update_every for this grade


class Severity(Strict):
    """The grades and which one an incident starts with."""

    default: str
    levels: list[SeverityLevel] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_is_a_level(self) -> Severity:
        ids = [level.id for level in self.levels]
        if len(set(ids)) != len(ids):
            raise ValueError(f"severity level ids repeat: {ids}")
        if self.default not in ids:
            raise ValueError(f"default {self.default!r} is not one of the levels {ids}")
        return self


class ManualChannel(Strict):
    """The manual-handling channel announced in every notice (minimal impact)."""

    hotline: str | dict[str, str] | None = None  # once, or by region: {default: …, R: …}
    counters: Text | None = None
    hours: Text
    workaround: Text | None = None
    # Opened by `incident start` so the first notice already offers it; otherwise the
    # supervisor opens it with `incident manual open`.
    open_at_start: bool = True

    @field_validator("hotline", mode="before")
    @classmethod
    def _per_region(cls, value: object) -> object:
        return by_region(value, "hotline")

    @model_validator(mode="after")
    def _something_to_offer(self) -> ManualChannel:
        if not (self.hotline or self.counters or self.workaround):
            raise ValueError("give at least one of hotline, counters or workaround")
        return self


class RegulatorDuty(Strict):
    """A reporting duty with a deadline relative to detection, for some grades."""

    id: str = Field(pattern=ID_PATTERN)
    title: Text
    body: str = Field(min_length=1)  # who receives it, e.g. "NFRA local office"
    within: Duration | None = None  # one-off deadline after detection
    every: Duration | None = None  # recurring progress report until resolution
    grades: list[str] = Field(default_factory=list)  # empty: every grade
    source: str = Field(min_length=1)  # the rule, article and number it comes from
    owner: str = Field(default="compliance", min_length=1)  # role that files the report
    party: str = "regulator"  # the party (incident.yaml parties) the report goes to

    @model_validator(mode="after")
    def _one_clock(self) -> RegulatorDuty:
        if (self.within is None) == (self.every is None):
            raise ValueError("give exactly one of within (a deadline) or every (recurring)")
        return self


class FastResponse(Strict):
    """Fast response: how soon the first customer notice must be accepted."""

    first_notice_within: Duration


class MinimalImpact(Strict):
    """Minimal impact: the manual channel; urgent customers first."""

    manual_channel: ManualChannel
    urgent_first: bool = True


class Coordination(Strict):
    """Coordination: parties to notify and regulator duties."""

    parties: list[str] = Field(default_factory=list)
    regulator: list[RegulatorDuty] = Field(default_factory=list)


class Transparency(Strict):
    """Transparency: promised cadence of customer updates."""

    update_every: Duration


class Principles(Strict):
    """The department's four principles as data."""

    fast_response: FastResponse
    minimal_impact: MinimalImpact
    coordination: Coordination
    transparency: Transparency


class Step(Strict):
    """A checklist item with an owner role and a due time relative to detection."""

    id: str = Field(pattern=ID_PATTERN)
    title: Text
    owner: str = Field(min_length=1)  # a role: commander, communications, operations, liaison…
    due: Duration
    action: StepAction | None = None
    grades: list[str] = Field(default_factory=list)  # empty: every grade
    parties: list[str] = Field(default_factory=list)  # notify_parties: these (empty: all)


class AudienceFilter(Strict):
    """Which customers are affected; an empty list means no restriction on that field."""

    products: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    branches: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)


class Warnings(Strict):
    """Which OASIS CAP 1.2 alerts this playbook answers (`incident warnings ingest`)."""

    events: list[str] = Field(min_length=1)  # words matched in <info><event>, any case
    categories: list[str] = Field(default_factory=list)  # CAP categories, e.g. Met, Geo
    grades: dict[CapSeverity, str] = Field(default_factory=dict)  # CAP severity -> grade
    # An alert without <expires> applies this long after it took effect, no longer.
    max_age: Duration = DEFAULT_MAX_AGE
    # The geocode schemes (<valueName>) the branch list's bare geocodes and regions are in.
    geocodes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCHEMES), min_length=1)


class Branches(Strict):
    """How a disaster notice names closed branches and nearby open ones."""

    announce: bool = True
    nearby_km: float = Field(default=20.0, gt=0)  # open branches within this distance
    nearby_max: int = Field(default=3, ge=0, le=20)  # at most this many of them
    # Regions whose open branches a closed branch's customers can reach besides their own
    # (region -> regions), e.g. {guangdong: [guangdong, hong-kong]}; by default only their own:
    # a Hong Kong customer is not sent across the border to a Shenzhen branch.
    reachable_regions: dict[str, list[str]] = Field(default_factory=dict)


class VoiceCalls(Strict):
    """Who the voice channel calls (customers with a phone): urgent-priority ones, all, or
    none; besides them, customers whose list says voice=yes, never those with voice=no."""

    who: Literal["urgent", "all", "none"] = "urgent"


class Notices(Strict):
    """Which template set and customer channels the notices use."""

    template_set: str = Field(pattern=ID_PATTERN)
    channels: list[CustomerChannel] = Field(min_length=1)
    # A customer whose address fails permanently on one channel gets the notice on the other
    # (the emergency office mechanism): only meaningful when `channels` has one of the two.
    fallback: bool = False
    phases: list[Phase] = Field(default_factory=lambda: list(Phase))
    voice: VoiceCalls = Field(default_factory=VoiceCalls)


EscalationTarget = Literal["email", "sms", "voice", "manual_callback"]
Confirmation = Literal["delivered", "answered"]
CONFIRMATIONS: tuple[Confirmation, ...] = ("delivered", "answered")


class EscalationStep(Strict):
    """One step of escalation: a customer whose message (on `from`, or any channel) is not
    confirmed (`unless`) `after` it was accepted gets the notice on `to`, or, with
    manual_callback, a call-back case on the manual channel (`incident escalate`)."""

    after: Duration  # since the provider accepted the message
    unless: list[Confirmation] = Field(default_factory=lambda: list(CONFIRMATIONS))
    from_: CustomerChannel | None = Field(default=None, alias="from")
    to: EscalationTarget

    @field_validator("unless", mode="before")
    @classmethod
    def _alternatives(cls, value: object) -> object:
        return [v.strip() for v in value.split("|")] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _another_channel(self) -> EscalationStep:
        if self.from_ is not None and self.from_ == self.to:
            raise ValueError(f"from and to are both {self.to!r}: escalate to another channel")
        if self.after <= timedelta(0):
            raise ValueError("after must be a positive duration, e.g. 15m")
        return self


class Rollcall(Strict):
    """The staff roll-call's targets (a drill is scored against them)."""

    target_90: Duration = timedelta(minutes=30)  # 90% of the staff answered within this
# Whole-message replies asking to be called back, per language (a customer may use any).
CALLBACK_KEYWORDS = {"zh-CN": ["1", "回电"], "zh-HK": ["1", "回電"], "en": ["1", "CALL"]}


class Replies(Strict):
    """What a customer's reply asks for (`replies:`): a call back or an opt-out, each a whole
    message (any case or width, punctuation around it ignored); any other text becomes a
    manual case carrying it, at most `max_text` characters."""

    callback: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in CALLBACK_KEYWORDS.items()})
    stop: list[str] = Field(default_factory=lambda: list(STOP_KEYWORDS))
    max_text: int = Field(default=500, ge=20, le=1600)

    @field_validator("callback")
    @classmethod
    def _languages(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(LANGUAGES))
        if unknown:
            raise ValueError(f"unknown language {unknown[0]!r} (use {', '.join(LANGUAGES)})")
        return value


class Playbook(Strict):
    """A validated playbook."""

    id: str = Field(pattern=ID_PATTERN)
    name: Text
    kind: Kind
    summary: Text
    affected_services: list[str] = Field(default_factory=list)
    impact: Text  # what customers cannot do
    measures: Text  # what the institution does / how customers can still do business
    advice: Text  # what customers should do
    severity: Severity
    principles: Principles
    steps: list[Step] = Field(default_factory=list)
    audience: AudienceFilter = Field(default_factory=AudienceFilter)
    notices: Notices
    warnings: Warnings | None = None
    branches: Branches = Field(default_factory=Branches)
    escalation: list[EscalationStep] = Field(default_factory=list)
    rollcall: Rollcall = Field(default_factory=Rollcall)
    replies: Replies = Field(default_factory=Replies)

    @field_validator("escalation")
    @classmethod
    def _in_order(cls, steps: list[EscalationStep]) -> list[EscalationStep]:
        delays = [s.after for s in steps]
        if delays != sorted(delays):
            raise ValueError("escalation steps must come in the order of their `after`")
        if any(s.to == "manual_callback" for s in steps[:-1]):
            raise ValueError("manual_callback can only be the last escalation step")
        return steps

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} repeats")
            seen.add(step.id)
        return steps

    @model_validator(mode="after")
    def _grades_exist(self) -> Playbook:
        levels = {level.id for level in self.severity.levels}
        for where, grades in [(f"steps.{s.id}", s.grades) for s in self.steps] + [
            (f"regulator.{d.id}", d.grades) for d in self.principles.coordination.regulator
        ]:
            unknown = sorted(set(grades) - levels)
            if unknown:
                raise ValueError(f"{where}: unknown grades {unknown}; levels are {sorted(levels)}")
        if self.warnings:
            unknown = sorted(set(self.warnings.grades.values()) - levels)
            if unknown:
                raise ValueError(f"warnings.grades: unknown grades {unknown}; "
                                 f"levels are {sorted(levels)}")
        ids = [s.id for s in self.steps]
        clash = sorted(set(ids) & {d.id for d in self.principles.coordination.regulator})
        if clash:
            raise ValueError(f"steps and regulator duties share ids {clash}: a duty is already "
                             "a checklist item")
        return self

    def steps_for(self, grade: str) -> list[Step]:
        """The checklist steps that apply at `grade`."""
        return [s for s in self.steps if not s.grades or grade in s.grades]

    def duties_for(self, grade: str) -> list[RegulatorDuty]:
        """The regulator duties that apply at `grade`."""
        return [d for d in self.principles.coordination.regulator
                if not d.grades or grade in d.grades]

    def level(self, grade: str) -> SeverityLevel:
        """The severity level with id `grade`."""
        for level in self.severity.levels:
            if level.id == grade:
                return level
        raise KeyError(grade)

    def update_every(self, grade: str) -> Duration:
        """Promised update cadence for `grade`."""
        return self.level(grade).update_every or self.principles.transparency.update_every


# ---------------------------------------------------------------- loading


def parse_playbook(text: str, *, source: str) -> Playbook:
    """Validate playbook YAML text; `source` names the file in errors."""
    return parse_model(text, Playbook, source=source, what="playbook", error=PlaybookInvalid)


def load_playbook(path: Path) -> Playbook:
    """Read and validate one playbook file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookNotFound(f"no playbook file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookInvalid(f"cannot read playbook {path}: {exc}") from None
    return parse_playbook(text, source=str(path))


def playbook_files(search_path: Sequence[Path]) -> dict[str, Path]:
    """Playbook files by stem; earlier directories shadow later ones (local over shipped)."""
    found: dict[str, Path] = {}
    for directory in search_path:
        if directory.is_dir():
            for path in sorted(directory.glob("*.y*ml")):
                found.setdefault(path.stem, path)
    return found


def find_playbook(name: str, search_path: Sequence[Path]) -> Path:
    """Resolve NAME (a path, a file stem or a playbook id) to a playbook file."""
    candidate = Path(name)
    if candidate.suffix in {".yaml", ".yml"} or "/" in name:
        if candidate.exists():
            return candidate
        raise PlaybookNotFound(f"no playbook file {name}")
    files = playbook_files(search_path)
    if name in files:
        return files[name]
    for path in files.values():
        try:
            head = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue
        if isinstance(head, dict) and head.get("id") == name:
            return path
    known = ", ".join(sorted(files)) or "none"
    raise PlaybookNotFound(f"no playbook called {name!r}", hint=f"known playbooks: {known}")
