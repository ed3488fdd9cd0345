"""`incident.yaml` + environment → validated `Settings`. Secrets come only from the environment."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, ValidationInfo, field_validator, model_validator

from incident.clock import SYSTEM_CLOCK, Clock
from incident.errors import ConfigInvalid, InvalidValue
from incident.inbound_settings import BounceSettings, ReceiptsSettings
from incident.languages import LANGUAGES, Language
from incident.models import Duration, Strict, Text
from incident.page_settings import StatusPageSettings
from incident.privacy import remember_secret
from incident.regions import DEFAULT, LABEL_LANGUAGES, by_region, region_key
from incident.resources import shipped
from incident.timeutil import get_zone
from incident.yamlfile import parse_model

CONFIG_NAME = "incident.yaml"


# A value given once, or per customer region: {default: …, hong-kong: …} (incident.regions).
PerRegion = str | dict[str, str]


class Organisation(Strict):
    """Who the notices come from; the hotline and website may differ by customer region."""

    name: Text
    hotline: PerRegion
    website: PerRegion = ""

    @field_validator("hotline", "website", mode="before")
    @classmethod
    def _per_region(cls, value: object, info: ValidationInfo) -> object:
        return by_region(value, str(info.field_name))

    @field_validator("hotline")
    @classmethod
    def _dialable(cls, value: PerRegion) -> PerRegion:
        empty = [k for k, v in ({"": value} if isinstance(value, str) else value).items()
                 if not v.strip()]
        if empty:
            raise ValueError("must not be empty" + (f" (region {empty[0]})" if empty[0] else ""))
        return value


def _zone_name(value: str) -> str:
    try:
        get_zone(value)
    except InvalidValue as exc:
        raise ValueError(f"{exc.message} (use an IANA name such as Asia/Shanghai)") from None
    return value


class Region(Strict):
    """The time zone a region's customers read times in, and how notices name it."""

    zone: str
    label: dict[str, str] = Field(default_factory=dict)  # by language; default: ZONE_LABELS

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone_name(value)

    @field_validator("label")
    @classmethod
    def _languages(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(LABEL_LANGUAGES))
        if unknown:
            raise ValueError(f"unknown language {', '.join(unknown)} "
                             f"(labels are given in {', '.join(LABEL_LANGUAGES)})")
        if any(not text.strip() for text in value.values()):
            raise ValueError("a label must not be empty")
        return value


class SmtpSettings(Strict):
    """An SMTP relay; the password is read from the environment variable `password_env`."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: str = "INCIDENT_SMTP_PASSWORD"
    timeout: float = Field(default=30.0, gt=0)
    connections: int = Field(default=4, ge=1, le=64)
    # Addresses with a non-ASCII local part (张伟@example.com) need the relay's SMTPUTF8
    # (RFC 6531): true: it offers it; false: refuse them when the audience is read; auto: ask
    # the relay (EHLO) when the audience has one, before anything is recorded.
    smtputf8: bool | Literal["auto"] = "auto"


class DkimSettings(Strict):
    """DKIM signing by the toolkit, for a relay that does not sign (RFC 6376, rsa-sha256)."""

    selector: str = Field(min_length=1)  # the key's DNS name: <selector>._domainkey.<domain>
    domain: str = Field(min_length=1)  # d=: the From domain, or its parent, for DMARC
    key_file: str = Field(min_length=1)  # PEM RSA private key, relative to incident.yaml


class EmailSettings(Strict):
    """The email channel."""

    transport: Literal["file", "smtp"] = "file"
    sender: Text = Field(alias="from")
    reply_to: Text | None = None
    rate: float = Field(default=50.0, gt=0, description="messages per second")
    smtp: SmtpSettings | None = None
    dkim: DkimSettings | None = None

    @model_validator(mode="after")
    def _smtp_needs_relay(self) -> EmailSettings:
        if self.transport == "smtp" and self.smtp is None:
            raise ValueError("transport smtp needs an smtp: section (host, port, security)")
        return self


class TwilioSettings(Strict):
    """Twilio (or a Twilio-compatible gateway); SID and token come from the environment."""

    from_number: str | None = None
    messaging_service_sid: str | None = None
    api_base_url: str = "https://api.twilio.com"

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioSettings:
        if not (self.from_number or self.messaging_service_sid):
            raise ValueError("give from_number or messaging_service_sid")
        return self


class SmsSettings(Strict):
    """The SMS channel; its rate is counted in segments per second."""

    transport: Literal["file", "twilio"] = "file"
    rate: float = Field(default=10.0, gt=0, description="segments per second")
    twilio: TwilioSettings | None = None

    @model_validator(mode="after")
    def _twilio_needs_sender(self) -> SmsSettings:
        if self.transport == "twilio" and self.twilio is None:
            raise ValueError(
                "transport twilio needs a twilio: section (from_number or messaging_service_sid)"
            )
        return self


class WebhookChannelSettings(Strict):
    """The parties' chat webhooks: `http` posts to each party's URL, `file` writes the request
    that would be posted (drills, demos)."""

    transport: Literal["http", "file"] = "http"
    timeout: float = Field(default=10.0, gt=0, le=120)  # seconds per request
    rate: float = Field(default=5.0, gt=0, description="requests per second")


class VoiceTwilio(Strict):
    """Twilio Programmable Voice: the caller id and the API (SID and token as for SMS)."""

    from_number: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$")  # E.164, a Twilio number
    api_base_url: str = "https://api.twilio.com"


# <Say> voices per notice language (Twilio's Amazon Polly and Google voices): Mandarin,
# Cantonese, English. A language missing here is spoken by Twilio's default voice for it.
DEFAULT_VOICES = {"zh-CN": "Polly.Zhiyu-Neural", "zh-HK": "Google.yue-HK-Standard-A",
                  "en": "Polly.Joanna-Neural"}


class VoiceSettings(Strict):
    """The voice channel: calls that read the notice aloud (<Say>), counted in calls."""

    transport: Literal["file", "twilio"] = "file"
    rate: float = Field(default=1.0, gt=0, description="calls started per second")
    concurrent: int = Field(default=10, ge=1, le=1000, description="calls in progress at once")
    twilio: VoiceTwilio | None = None
    voices: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_VOICES))

    @model_validator(mode="after")
    def _twilio_needs_caller(self) -> VoiceSettings:
        if self.transport == "twilio" and self.twilio is None:
            raise ValueError("transport twilio needs a twilio: section (from_number)")
        unknown = sorted(set(self.voices) - set(DEFAULT_VOICES))
        if unknown:
            raise ValueError(f"voices names unknown languages {unknown} "
                             f"(use {', '.join(DEFAULT_VOICES)})")
        return self

    def voice_for(self, lang: str) -> str:
        """The configured <Say> voice of a notice language."""
        return self.voices.get(lang) or DEFAULT_VOICES.get(lang, DEFAULT_VOICES["en"])


class Channels(Strict):
    """Customer channels and where the `file` transport writes."""

    email: EmailSettings
    sms: SmsSettings = Field(default_factory=SmsSettings)
    webhook: WebhookChannelSettings = Field(default_factory=WebhookChannelSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    outbox_dir: str = "outbox"

    @property
    def transports(self) -> dict[str, str]:
        """The transport of each channel (recorded with every outbox row)."""
        return {"email": self.email.transport, "sms": self.sms.transport,
                "webhook": self.webhook.transport,
                "voice": self.voice.transport}


class DeliverySettings(Strict):
    """How the dispatcher retries and batches (the defaults suit most relays)."""

    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base: Duration = timedelta(seconds=2)  # first retry after about this long
    backoff_cap: Duration = timedelta(minutes=5)  # never wait longer than this between tries
    wait_for_retries: Duration = timedelta(seconds=30)  # a foreground send waits this for retries
    batch: int = Field(default=64, ge=1, le=5000)  # rows claimed per transaction
    stale_claim: Duration = timedelta(minutes=5)  # a claim older than this on another host is
    # taken back (a worker on this host that died is detected at once)
    # Sender processes of a foreground send (`start`, `deliver`): a second one sends email
    # beside the first, each with half the connections and half the rate. None: 2 on a machine
    # with 2 CPUs or more once at least SPLIT_AT emails are due, else 1 (response/senders.py).
    processes: int | None = Field(default=None, ge=1, le=2)


WebhookKind = Literal["slack", "teams", "wecom", "dingtalk", "feishu", "generic"]
SIGNED_KINDS = frozenset({"dingtalk", "feishu", "generic"})  # these need a secret_env


class PartyWebhook(Strict):
    """A party's chat webhook (incoming-webhook URL of Slack, Teams Workflows, WeCom, DingTalk,
    Feishu, or any receiver of the generic signed JSON); the signing secret comes from the
    environment variable `secret_env`, never from the file."""

    url: str = Field(min_length=1, max_length=320)  # stored as the outbox row's address
    kind: WebhookKind
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        if "@" in parts.netloc:
            raise ValueError("must not contain user:password@ (secrets come from secret_env)")
        return value

    @model_validator(mode="after")
    def _signed_needs_secret(self) -> PartyWebhook:
        if self.kind in SIGNED_KINDS and not self.secret_env:
            raise ValueError(f"kind {self.kind} signs every request: give secret_env, the "
                             "environment variable that holds the signing secret")
        return self


class Party(Strict):
    """An internal department or outside body to coordinate with."""

    name: Text
    email: str | None = None
    phone: str | None = None
    webhook: PartyWebhook | None = None
    language: Language = "zh-CN"

    @model_validator(mode="after")
    def _reachable(self) -> Party:
        if not (self.email or self.phone or self.webhook):
            raise ValueError("give the party an email, a phone or a webhook to be notified on")
        return self


class Operator(Strict):
    """A person allowed to run incidents, with their incident-command role."""

    id: str
    name: str
    role: str = "commander"


class Alerts(Strict):
    """Who `incident watch` alerts, and how early."""

    parties: list[str] = Field(default_factory=list)  # party ids that get an internal message
    due_soon: Duration = timedelta(minutes=15)  # warn this long before something falls due


class Limits(Strict):
    """Bounds on what an operator may type, so that nothing absurd is sent or stored."""

    max_eta: Duration = timedelta(days=30)  # an ETA at most this far ahead
    max_backdate: Duration = timedelta(days=30)  # --detected-at at most this far back
    sms_chars: int = Field(default=1600, ge=70, le=1600)  # a rendered SMS (Twilio: 1,600)
    email_chars: int = Field(default=20_000, ge=1000, le=1_000_000)  # a rendered email body
    max_amount: int = Field(default=1_000_000_000, ge=1, le=10**15)  # manual log --amount


class QueryAudience(Strict):
    """A customer list read from a database: a single SELECT, run read-only, on the
    SQLAlchemy URL held by the environment variable `url_env` (never in this file)."""

    url_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    query: str = Field(min_length=1)


class Settings(Strict):
    """The validated contents of incident.yaml."""

    organisation: Organisation
    timezone: str = "Asia/Shanghai"
    languages: list[Language] = Field(default_factory=lambda: list(LANGUAGES), min_length=1)
    default_language: Language = "zh-CN"
    database: str | None = None
    playbooks_dir: str = "playbooks"
    templates_dir: str = "templates"
    # An audience is a CSV file, or a query (QueryAudience).
    audiences: dict[str, str | QueryAudience] = Field(
        default_factory=lambda: dict[str, "str | QueryAudience"](customers="customers.csv"))
    default_audience: str = "customers"
    phone_region: str = Field(default="CN", pattern=r"^[A-Z]{2}$")
    channels: Channels
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    parties: dict[str, Party] = Field(default_factory=dict)
    operators: list[Operator] = Field(default_factory=list)
    branches: str | None = None  # branch list CSV: id,name,region,latitude,longitude
    # Time zone and its label per customer region; `default` for the others (else timezone).
    regions: dict[str, Region] = Field(default_factory=dict)
    alerts: Alerts = Field(default_factory=Alerts)
    receipts: ReceiptsSettings = Field(default_factory=ReceiptsSettings)
    limits: Limits = Field(default_factory=Limits)
    bounces: BounceSettings = Field(default_factory=BounceSettings)
    status_page: StatusPageSettings = Field(default_factory=StatusPageSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone_name(value)

    @field_validator("regions")
    @classmethod
    def _region_keys(cls, value: dict[str, Region]) -> dict[str, Region]:
        keys = {region_key(k) for k in value}
        if len(keys) != len(value):
            raise ValueError("a region appears twice")
        return {region_key(k): v for k, v in value.items()}

    def region(self, region: str | None) -> Region:
        """The zone and label of a customer of `region` (the default's, else `timezone`)."""
        found = self.regions.get(region_key(region)) or self.regions.get(DEFAULT)
        return found or Region(zone=self.timezone)

    @property
    def regions_with_details(self) -> list[str]:
        """Every region given a detail of its own (zone, hotline, website), default aside."""
        org = self.organisation
        keys = [*self.regions, *(k for v in (org.hotline, org.website)
                                 if isinstance(v, dict) for k in v)]
        return [k for k in dict.fromkeys(keys) if k != DEFAULT]

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language} is not in languages")
        if self.default_audience not in self.audiences:
            raise ValueError(f"default_audience {self.default_audience!r} is not in audiences")
        unknown = sorted(set(self.alerts.parties) - set(self.parties))
        if unknown:
            raise ValueError(f"alerts.parties names unknown parties {unknown}")
        return self


@dataclass(frozen=True)
class Runtime:
    """Settings plus everything resolved at start-up: paths, database URL, operator, zone,
    and the clock every recorded time comes from."""

    settings: Settings
    config_path: Path | None
    base_dir: Path
    db_url: str
    operator: str
    zone: ZoneInfo
    clock: Clock = SYSTEM_CLOCK

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    @property
    def playbook_path(self) -> list[Path]:
        """Where playbooks are looked up: the local folder first, then the shipped ones."""
        return [self.path(self.settings.playbooks_dir), shipped("playbooks")]

    @property
    def template_path(self) -> list[Path]:
        """Where templates are looked up: the local folder first, then the shipped ones."""
        return [self.path(self.settings.templates_dir), shipped("templates")]

    @property
    def outbox_dir(self) -> Path:
        """Folder of the `file` transport."""
        return self.path(self.settings.channels.outbox_dir)


def example_config_text() -> str:
    """The documented example configuration shipped with the package."""
    return shipped("incident.yaml.example").read_text(encoding="utf-8")


def parse_settings(text: str, *, source: str) -> Settings:
    """Validate incident.yaml text."""
    return parse_model(text, Settings, source=source, what="config", error=ConfigInvalid)


def load_runtime(config: str | None, *, db: str | None = None, operator: str | None = None,
                 env: Mapping[str, str] | None = None, clock: Clock = SYSTEM_CLOCK) -> Runtime:
    """Build the Runtime from --config/--db/--as, the environment, and the config file; the
    time comes from `clock` (never from the environment).

    Without an explicit config and with no ./incident.yaml, the shipped example (SQLite,
    file channel, no credentials) is used with the current folder as base.
    """
    env = os.environ if env is None else env
    explicit = config or env.get("INCIDENT_CONFIG")
    path = Path(explicit or CONFIG_NAME).expanduser()
    if path.is_dir():
        path = path / CONFIG_NAME
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigInvalid(f"cannot read config {path}: {exc}") from None
        settings = parse_settings(text, source=str(path))
        config_path: Path | None = path.resolve()
        base_dir = path.resolve().parent
    elif explicit:
        raise ConfigInvalid(f"no config file {path}", hint="create one with: incident init")
    else:
        settings = parse_settings(example_config_text(), source="built-in defaults")
        config_path, base_dir = None, Path.cwd()
    db_url = db or env.get("INCIDENT_DB") or settings.database or "incident.db"
    if "://" not in db_url:
        db_file = Path(db_url).expanduser()
        db_url = f"sqlite:///{db_file if db_file.is_absolute() else base_dir / db_file}"
    who = operator or env.get("INCIDENT_OPERATOR") or _os_user()
    return Runtime(settings=settings, config_path=config_path, base_dir=base_dir,
                   db_url=db_url, operator=who, zone=get_zone(settings.timezone), clock=clock)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def secret(env_name: str, env: Mapping[str, str] | None = None) -> str | None:
    """Read a secret from the environment (never from a file, never printed)."""
    env = os.environ if env is None else env
    value = env.get(env_name)
    remember_secret(value)  # scrubbed from every provider error stored or shown
    return value or None
