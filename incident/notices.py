"""Customer notices: the localized context recorded with a notice, its outbox rows, and the
per-recipient messages composed from it at send time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from email.utils import parseaddr
from typing import Any

from incident import mime
from incident.audience import Customer, Recipient, wants_call
from incident.channels.base import MessageRef, VoiceOut
from incident.channels.twiml import TWIML_MAX, twiml
from incident.errors import InvalidValue, Location, TemplateInvalid
from incident.languages import CHINESE, chinese_text, to_hk
from incident.models import Phase, Status
from incident.regions import DEFAULT, for_region, labelled_time, region_key, zone_label
from incident.rendering import Renderer, SmsInfo, sms_segments, tidy_sms, uniform_shape
from incident.settings import Limits, Region, Runtime
from incident.state import IncidentView
from incident.store import Connection
from incident.store.outbox import (
    FALLBACK_CHANNEL,
    idempotency_key,
    rows_to_copy,
)
from incident.timeutil import HONG_KONG, get_zone

STATUS_LABELS = {
    "zh-CN": {Status.INVESTIGATING: "正在排查", Status.IDENTIFIED: "已查明原因",
              Status.MONITORING: "已修复，观察中", Status.RESOLVED: "已恢复",
              Status.CLOSED: "已结束"},
    "zh-HK": {Status.INVESTIGATING: "正在調查", Status.IDENTIFIED: "已找出原因",
              Status.MONITORING: "已修復，觀察中", Status.RESOLVED: "已恢復",
              Status.CLOSED: "已結束"},
    "en": {Status.INVESTIGATING: "investigating", Status.IDENTIFIED: "cause identified",
           Status.MONITORING: "fix applied, monitoring", Status.RESOLVED: "resolved",
           Status.CLOSED: "closed"},
}
KIND_LABELS = {"zh-CN": {"system_failure": "系统故障", "natural_disaster": "自然灾害"},
               "zh-HK": {"system_failure": "系統故障", "natural_disaster": "自然災害"},
               "en": {"system_failure": "system failure", "natural_disaster": "natural disaster"}}


def notice_context(rt: Runtime, view: IncidentView, *, phase: Phase, message: str,
                   lang: str) -> dict[str, Any]:
    """Everything a notice template may use except the customer, localized to `lang`, for a
    customer of the default region.

    `view` is the incident's state including the event that carries this notice. What differs
    for a customer of a region with details of its own (hotline, website, time zone) is kept
    under `regional` (region -> the context's keys that differ): see for_customer.
    """
    context = _context(rt, view, phase=phase, message=message, lang=lang, region=None)
    regional = {}
    manual = view.manual.hotline if view.manual and view.manual.open else ""
    own_hotline = [k for k in manual if k != DEFAULT] if isinstance(manual, dict) else []
    for region in dict.fromkeys([*rt.settings.regions_with_details, *own_hotline]):
        own = _context(rt, view, phase=phase, message=message, lang=lang, region=region)
        differs = {key: value for key, value in own.items() if context[key] != value}
        if differs:
            regional[region] = differs
    if regional:
        context["regional"] = regional
    return context


def for_customer(context: dict[str, Any], region: str | None) -> dict[str, Any]:
    """A notice's context (notice_context) for a customer of `region`."""
    differs = context.get("regional", {}).get(region_key(region))
    return {**context, **differs} if differs else context


def regional_variant(context: dict[str, Any], region: str | None) -> str:
    """The region whose own details a customer of `region` gets ("" for the default's)."""
    key = region_key(region)
    return key if key in context.get("regional", {}) else ""


def _context(rt: Runtime, view: IncidentView, *, phase: Phase, message: str, lang: str,
             region: str | None) -> dict[str, Any]:
    """notice_context for a customer of `region` (None: the default region)."""
    place = rt.settings.region(region)
    if lang == "zh-HK" and region_key(region) not in rt.settings.regions:
        # A Hong Kong reader whose region has no zone of its own reads Hong Kong time.
        place = Region(zone=HONG_KONG.key)
    zone = get_zone(place.zone)
    label = zone_label(zone, lang, place.label)
    org = rt.settings.organisation
    playbook = view.playbook
    last = view.eta_history[-1] if view.eta_history else None

    def when(value: Any) -> str:
        return labelled_time(value, zone, label, lang) if value is not None else ""

    return {
        "lang": lang,
        "org": {"name": org.name.get(lang), "hotline": for_region(org.hotline, region),
                "website": for_region(org.website, region)},
        "zone": {"name": zone.key, "label": label},
        "incident": {
            "id": view.id, "ref": view.id, "title": incident_title(view, lang),
            "severity": view.severity,
            "severity_name": playbook.level(view.severity).name.get(lang),
            "status": STATUS_LABELS[lang][view.status],
            "kind": KIND_LABELS[lang][playbook.kind.value],
            "detected_at": when(view.detected_at), "declared_at": when(view.declared_at),
            "affected": list(view.affected), "regions": list(view.regions), "drill": view.drill,
        },
        "notice": {"phase": phase.value, "message": message, "at": when(view.last_event_at)},
        "eta": {"known": view.eta is not None, "at": when(view.eta),
                "previous": when(view.previous_eta),
                # The reason is the ETA notice's message, in the notice's language.
                "reason": (message or last.reason) if last and phase is Phase.ETA_CHANGED
                else ""},
        "next_update": when(view.next_update_due),
        "manual": manual_context(view, lang, region),
        "branches": branch_context(view, lang),
        "playbook": {"name": playbook.name.get(lang), "summary": playbook.summary.get(lang),
                     "impact": playbook.impact.get(lang), "measures": playbook.measures.get(lang),
                     "advice": playbook.advice.get(lang)},
        "resolved": {"at": when(view.resolved_at)},
    }


def incident_title(view: IncidentView, lang: str) -> str:
    """The incident's title in `lang`: as typed for it, else converted from the other Chinese
    one; a Chinese notice of an incident titled in English only names the playbook (台风,
    核心系统故障) rather than an English title or a lead-in in a one-line title."""
    if lang in CHINESE and not (view.title_zh or view.title_zh_hk):
        return view.playbook.name.get(lang)
    return chinese_text(lang, view.title, view.title_zh, view.title_zh_hk)


def manual_context(view: IncidentView, lang: str, region: str | None = None) -> dict[str, Any]:
    """The manual-handling channel as announced (its hotline for a customer of `region`):
    empty texts while it is not open."""
    m = view.manual
    if m is None or not m.open:
        return {"open": False, "hotline": "", "counters": "", "hours": "", "workaround": ""}
    return {"open": True, "hotline": for_region(m.hotline, region),
            "hours": in_language(m.hours, lang),
            "counters": in_language(m.counters, lang) if m.counters else "",
            "workaround": in_language(m.workaround, lang) if m.workaround else ""}


def in_language(texts: Mapping[str, str], lang: str) -> str:
    """A recorded text in `lang`; a record made before zh-HK existed has zh-CN, converted."""
    if lang in texts:
        return texts[lang]
    return to_hk(texts["zh-CN"]) if lang == "zh-HK" else texts["en"]


def branch_context(view: IncidentView, lang: str) -> dict[str, Any]:
    """Closed branches and nearby open ones within reach, when the incident was scoped with a
    branch list."""
    scope = view.scope

    def label(branch: dict[str, Any]) -> str:
        if lang == "en":
            return str(branch.get("name_en") or branch["name"])
        return to_hk(branch["name"]) if lang == "zh-HK" else str(branch["name"])

    closed, near = scope.get("closed", []), scope.get("open", [])
    return {"closed": [label(b) for b in closed],
            "open": [{"name": label(b), "distance_km": b["distance_km"]} for b in near],
            # The branch list was read and no branch within reach is open.
            "none_open": bool(closed and not near and scope.get("file"))}


# Sample data per language, so that `playbooks validate` shows the segments a real SMS takes
# (a Chinese name in an English SMS would make it UCS-2).
SAMPLE_CUSTOMER = {"zh-CN": {"name": "张伟", "ref": "C-SAMPLE"},
                   "zh-HK": {"name": "陳大文", "ref": "C-SAMPLE"},
                   "en": {"name": "Wei Zhang", "ref": "C-SAMPLE"}}
SAMPLE_MESSAGE = {"zh-CN": "技术人员正在切换至备用系统",
                  "zh-HK": "技術人員正在切換至後備系統",
                  "en": "Engineers are switching to the backup system"}
# The longest values `playbooks validate` forecasts SMS segments for (README, Templates): a
# name of 12 characters in Chinese notices and 40 in English ones, a title, message and ETA
# reason of 60 characters each, a customer ref of 20; the incident id is as long as a real one.
# Characters of the notice's language: GSM-7 in English (one Chinese character makes UCS-2).
WORST_CASE = {lang: {"name": fill * n, "ref": "C" * 20, "title": fill * 60,
                     "message": fill * 60, "reason": fill * 60}
              for lang, fill, n in (("zh-CN", "测", 12), ("zh-HK", "測", 12), ("en", "x", 40))}


SAMPLE_REF = MessageRef(incident_id="", notice_seq=0, channel="voice", message_id="",
                        idempotency_key="")


def check_templates(renderer: Renderer, template_set: str, channels: Sequence[str],
                    contexts: dict[str, dict[str, Any]], *, limits: Limits) -> None:
    """Render the notice for a sample customer in every language; TemplateInvalid if any fails,
    InvalidValue if a rendered SMS or email text is longer than `limits` allow.

    Called before anything is recorded, so a broken template or an overlong message never
    leaves half a notice.
    """
    problems = []
    for lang, context in contexts.items():
        full = {**context, "customer": SAMPLE_CUSTOMER[lang]}
        problems += renderer.check(template_set, [context["notice"]["phase"]], channels,
                                   [lang], full)
    if problems:
        raise TemplateInvalid(f"notice templates of {template_set!r} cannot be rendered; "
                              "nothing was recorded", problems=problems)
    too_long = []
    for lang, context in contexts.items():
        phase = context["notice"]["phase"]
        for region in ("", *context.get("regional", {})):  # each region's own hotline, times
            full = {**for_customer(context, region), "customer": SAMPLE_CUSTOMER[lang]}
            for channel, limit in (("sms", limits.sms_chars), ("email", limits.email_chars),
                                   ("voice", TWIML_MAX)):
                if channel not in channels:
                    continue
                if channel == "voice":  # what Twilio takes: the TwiML, the script read twice
                    text = twiml(VoiceOut(ref=SAMPLE_REF, to="", script=renderer.render_voice(
                        template_set, phase, lang, full), voice="Google.yue-HK-Standard-A",
                        language="yue-HK"))
                elif channel == "sms":
                    text = renderer.render_sms(template_set, phase, lang, full).text
                else:
                    text = renderer.render_email(template_set, phase, lang, full).text
                if len(text) > limit:
                    field = f"{channel}.{lang}" + (f".{region}" if region else "")
                    too_long.append((Location(field=field),
                                     f"the {channel} text would be {len(text):,} characters; "
                                     f"the limit is {limit:,}"))
    if too_long:
        raise InvalidValue("the notice is too long to send; nothing was recorded",
                           problems=too_long,
                           hint="shorten the message (limits.sms_chars and limits.email_chars "
                                "in incident.yaml; a call's TwiML takes at most "
                                f"{TWIML_MAX:,} characters)")


def sender_domain(rt: Runtime) -> str:
    """Domain for Message-IDs: the email sender's, or a fixed local one."""
    _, addr = parseaddr(rt.settings.channels.email.sender.en)
    return addr.rpartition("@")[2] or "incident.invalid"


def message_id(key: str, incident_id: str, domain: str) -> str:
    """A stable RFC 5322 Message-ID for one outbox row."""
    return f"<{incident_id}.{key[:24]}@{domain}>"


def rows_for_customers(incident_id: str, seq: int, customers: Iterable[Customer | Recipient],
                       channels: Sequence[str], domain: str, *, transports: Mapping[str, str],
                       fallback: bool = False, calls: str = "none") -> Iterator[dict[str, Any]]:
    """Outbox rows of the first notice: one per customer and channel they can be reached on,
    each for the transport `transports` names for its channel; a call only to the customers
    `calls` (the playbook's notices.voice.who) and their voice column choose (wants_call).

    With `fallback`, an email or SMS row also carries the customer's contact on the other of
    the two when the notice does not use it, so a permanent failure can be retried there.
    """
    for customer in customers:
        contacts = {"email": customer.email, "sms": customer.phone, "voice": customer.phone}
        for channel in channels:
            address = contacts[channel]
            if not address or (channel == "voice" and not wants_call(
                    calls, customer.priority, customer.voice)):
                continue
            other = FALLBACK_CHANNEL.get(channel)
            spare = contacts[other] if fallback and other and other not in channels else None
            key = idempotency_key(incident_id, seq, customer.ref, channel)
            yield {"incident_id": incident_id, "notice_seq": seq, "channel": channel,
                   "recipient_ref": customer.ref, "recipient_name": customer.name,
                   "address": address, "language": customer.language,
                   "priority": 0 if customer.priority == "urgent" else 1,
                   "message_id": message_id(key, incident_id, domain), "idempotency_key": key,
                   "fallback_address": spare, "transport": transports[channel],
                   "region": customer.region or None}


def rows_from_notice(conn: Connection, incident_id: str, source_seq: int, seq: int,
                     domain: str, *, transports: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """Outbox rows of a later notice: every row of the first one (fallback rows included),
    minus addresses that failed permanently (invalid, unsubscribed), which are not tried again;
    for the transports of the config that records it.

    The audience is fixed when the incident is declared.
    """
    for r in rows_to_copy(conn, incident_id, source_seq):
        key = idempotency_key(incident_id, seq, r.recipient_ref, r.channel)
        yield {"incident_id": incident_id, "notice_seq": seq, "channel": r.channel,
               "recipient_ref": r.recipient_ref, "recipient_name": r.recipient_name,
               "address": r.address, "language": r.language, "priority": r.priority,
               "message_id": message_id(key, incident_id, domain), "idempotency_key": key,
               "fallback_address": r.fallback_address, "transport": transports[r.channel],
               "region": r.region}


NoticeRecords = dict[tuple[str, int], dict[str, Any]]


SWITCHED_LISTED = 20  # customers named in a dry run whose name makes their SMS UCS-2


def non_gsm(text: str) -> str:
    """The distinct characters of `text` outside the GSM-7 alphabet, in order."""
    return "".join(dict.fromkeys(ch for ch in text if sms_segments(ch).encoding == "UCS-2"))


class SmsForecast:
    """The segments each recipient's SMS of one notice takes, as the composer will render it.

    The notice is rendered once per language with placeholders for the customer's fields (as
    emails are, see Composer) and filled in per recipient; when the template transforms a
    field it is rendered per recipient. A recipient whose name and ref take one unit per
    character (rendering.uniform_shape) is counted once per (language, shape of the values).
    """

    def __init__(self, renderer: Renderer, template_set: str, phase: str,
                 contexts: dict[str, dict[str, Any]]) -> None:
        self.renderer = renderer
        self.template_set = template_set
        self.phase = phase
        self.contexts = contexts
        self.segments: dict[str, Counter[int]] = {}  # language -> {segments: messages}
        self.longest: dict[str, SmsInfo] = {}  # language -> the SMS with the most units
        self._texts: dict[tuple[str, str], str | None] = {}  # (language, region variant)
        self._known: dict[tuple[str, str, Any, Any], SmsInfo] = {}
        self._gsm: dict[str, bool] = {}  # language -> GSM-7 for a name in GSM-7 characters
        # language -> recipients whose name alone makes their SMS UCS-2: (ref, segments,
        # the name's characters outside GSM-7), the first SWITCHED_LISTED of them
        self.switched: dict[str, list[tuple[str, int, str]]] = {}
        self.switched_count: Counter[str] = Counter()

    def add(self, lang: str, name: str, ref: str, region: str | None = None) -> SmsInfo:
        """Count one recipient's SMS (in its language, or the notice's first one; with the
        details of their region)."""
        lang = lang if lang in self.contexts else next(iter(self.contexts))
        variant = regional_variant(self.contexts[lang], region)
        shapes = (uniform_shape(name), uniform_shape(ref))
        key = (lang, variant, *shapes)
        info = self._known.get(key) if None not in shapes else None
        if info is None:
            info = sms_segments(self.text(lang, name, ref, variant))
            if None not in shapes:
                self._known[key] = info
        self.segments.setdefault(lang, Counter())[info.segments] += 1
        if lang not in self.longest or info.units > self.longest[lang].units:
            self.longest[lang] = info
        if info.encoding == "UCS-2" and self._gsm_template(lang):
            self.switched_count[lang] += 1
            listed = self.switched.setdefault(lang, [])
            if len(listed) < SWITCHED_LISTED:
                listed.append((ref, info.segments, non_gsm(name)))
        return info

    def _gsm_template(self, lang: str) -> bool:
        """Whether the notice in `lang` is GSM-7 for a customer with a GSM-7 name and ref."""
        if lang not in self._gsm:
            self._gsm[lang] = sms_segments(self.text(lang, "Name", "C0")).encoding == "GSM-7"
        return self._gsm[lang]

    def text(self, lang: str, name: str, ref: str, region: str | None = None) -> str:
        """The SMS text for this customer, as the composer renders it."""
        variant = regional_variant(self.contexts[lang], region)
        if (lang, variant) not in self._texts:
            first = self._render(lang, variant, mime.NAME, mime.REF)
            second = self._render(lang, variant, mime.ALT_NAME, mime.ALT_REF)
            same = (first.replace(mime.NAME, "\0N").replace(mime.REF, "\0R")
                    == second.replace(mime.ALT_NAME, "\0N").replace(mime.ALT_REF, "\0R"))
            self._texts[lang, variant] = first if same else None
        shared = self._texts[lang, variant]
        if shared is None:
            return self._render(lang, variant, name, ref)
        return tidy_sms(shared.replace(mime.NAME, name).replace(mime.REF, ref))

    def _render(self, lang: str, region: str, name: str, ref: str) -> str:
        context = {**for_customer(self.contexts[lang], region),
                   "customer": {"name": name, "ref": ref}}
        return self.renderer.render_sms(self.template_set, self.phase, lang, context).text

    def total(self) -> int:
        """Segments of every message counted."""
        return sum(n * count for counter in self.segments.values()
                   for n, count in counter.items())
