"""Composing each recipient's message from its notice's recorded context: the email (signed
when DKIM is configured), the SMS, the call's script and a party's chat-webhook post. The
dispatcher composes a message just before sending it (incident/delivery/dispatcher.py); what
the context holds is built when the notice is recorded (incident/notices.py)."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

from incident import mime
from incident.channels.base import EmailOut, MessageRef, Outgoing, SmsOut, VoiceOut, WebhookOut
from incident.channels.twiml import GATHER_PATH, PRESS_ANSWER, PRESS_ONE, say_language
from incident.errors import ConfigInvalid, Location, TemplateInvalid
from incident.mime import EmailTemplate
from incident.notices import NoticeRecords, for_customer, regional_variant
from incident.rendering import Renderer
from incident.settings import Runtime
from incident.store.outbox import PARTY_PREFIX, OutboxRow
from incident.store.rollcall import STAFF_PREFIX


def dkim_signer(rt: Runtime) -> mime.DkimSigner | None:
    """The signer `channels.email.dkim` configures (None without); ConfigInvalid naming the
    key file when it cannot be read or cannot sign. The key's content is never shown."""
    config = rt.settings.channels.email.dkim
    if config is None:
        return None
    path = rt.path(config.key_file)
    try:
        key = path.read_bytes()
        return mime.DkimSigner(config.selector, config.domain, key)
    except (OSError, ValueError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
        where = str(rt.config_path) if rt.config_path else "built-in defaults"
        raise ConfigInvalid(f"DKIM key {path}: {reason}",
                            problems=[(Location(where, None, "channels.email.dkim.key_file"),
                                       reason)],
                            hint="key_file names a PEM RSA private key (openssl genrsa 2048)"
                            ) from None


def message_ref(row: OutboxRow) -> MessageRef:
    """What a channel needs to know of an outbox row besides the message itself."""
    return MessageRef(incident_id=row.incident_id, notice_seq=row.notice_seq,
                      channel=row.channel, message_id=row.message_id,
                      idempotency_key=row.idempotency_key,
                      internal=row.recipient_ref.startswith(PARTY_PREFIX))


class Composer:
    """Builds each recipient's message from its notice's recorded context.

    Emails are rendered once per (notice, language) with placeholders for the customer and
    filled in per recipient (see incident.mime), provided the templates use the customer's
    fields as plain text — checked by rendering with two different placeholders and comparing.
    A template that transforms them (e.g. `customer.name|upper`) is rendered per recipient.
    """

    def __init__(self, rt: Runtime, renderer: Renderer, notices: NoticeRecords) -> None:
        self.rt = rt
        self.renderer = renderer
        self.notices = notices  # (incident, seq) -> the notice record of the event
        # (incident, notice, language, region variant) -> the shared email
        self._emails: dict[tuple[str, int, str, str], EmailTemplate | None] = {}
        self._signer = dkim_signer(rt)
        self._date_second = -1
        self._date_text = ""

    def compose(self, row: OutboxRow) -> Outgoing:
        """The message for one outbox row (TemplateInvalid if its template broke since)."""
        notice = self.notices[(row.incident_id, row.notice_seq)]
        lang = row.language if row.language in notice["context"] else next(iter(notice["context"]))
        if row.channel == "sms":
            context = self._context(notice, lang, row.region, row.recipient_name,
                                    row.recipient_ref)
            sms = self.renderer.render_sms(notice["template_set"], notice["phase"], lang, context)
            return SmsOut(ref=message_ref(row), to=row.address, body=sms.text, info=sms.info)
        if row.channel == "webhook":
            return self._webhook(row, notice, lang)
        if row.channel == "voice":
            context = self._context(notice, lang, row.region, row.recipient_name,
                                    row.recipient_ref)
            return self.call(row, lang, self.renderer.render_voice(
                notice["template_set"], notice["phase"], lang, context))
        if row.channel != "email":
            raise TemplateInvalid(f"no customer template for channel {row.channel!r}")
        key = (row.incident_id, row.notice_seq, lang,
               regional_variant(notice["context"][lang], row.region))
        if key not in self._emails:
            self._emails[key] = self._shared_email(row, notice, lang)
        template = self._emails[key] or self._email_template(
            row, notice, lang, row.recipient_name, row.recipient_ref)
        to = mime.idna_address(row.address)  # the same in the header and the envelope
        data = template.build(name=row.recipient_name, ref=row.recipient_ref, to=to,
                              message_id=row.message_id, date=self._date())
        ready = template.data_ready(to=to, message_id=row.message_id)
        if self._signer is not None:
            unsigned = len(data)
            data = self._signer.sign(data)
            ready = ready and mime.data_ready(data[:len(data) - unsigned])
        # VERP (bounces.verp_domain): the return path names this row, so any bounce matches.
        sender = (self.rt.settings.bounces.verp_address(row.idempotency_key)
                  or template.envelope_sender)
        return EmailOut(ref=message_ref(row), sender=sender, data=data, recipients=(to,),
                        data_ready=ready)

    def call(self, row: OutboxRow, lang: str, script: str) -> VoiceOut:
        """The call reading `script` in the voice channels.voice.voices gives `lang`."""
        voice = self.rt.settings.channels.voice.voice_for(lang)
        public = self.rt.settings.receipts.public_url
        # A key press is a reply: a customer's 1 asks for a call back, a staff member's digit
        # answers the roll-call; other parties' calls take none.
        staff = row.recipient_ref.startswith(STAFF_PREFIX)
        takes_key = staff or not row.recipient_ref.startswith(PARTY_PREFIX)
        prompts = PRESS_ANSWER if staff else PRESS_ONE
        return VoiceOut(ref=message_ref(row), to=row.address, script=script, voice=voice,
                        language=say_language(lang, voice),
                        gather_url=public + GATHER_PATH if public and takes_key else None,
                        gather_prompt=prompts.get(lang, prompts["en"]))

    def _date(self) -> str:
        """The Date header's value, formatted once per second rather than per message."""
        now = self.rt.clock.now()
        second = int(now.timestamp())
        if second != self._date_second:
            self._date_second, self._date_text = second, format_datetime(now)
        return self._date_text

    def _context(self, notice: dict[str, Any], lang: str, region: str | None, name: str,
                 ref: str) -> dict[str, Any]:
        return {**for_customer(notice["context"][lang], region),
                "customer": {"name": name, "ref": ref}}

    def _email_template(self, row: OutboxRow, notice: dict[str, Any], lang: str, name: str,
                        ref: str) -> EmailTemplate:
        mail = self.renderer.render_email(notice["template_set"], notice["phase"], lang,
                                          self._context(notice, lang, row.region, name, ref))
        email = self.rt.settings.channels.email
        return EmailTemplate(
            sender=email.sender.get(lang),
            reply_to=email.reply_to.get(lang) if email.reply_to else None,
            subject=mail.subject, text=mail.text, html=mail.html,
            # Service notices are transactional: no List-Unsubscribe; marked as automatic.
            headers=(("X-Incident-ID", row.incident_id),
                     ("X-Incident-Notice", str(row.notice_seq)),
                     ("Auto-Submitted", "auto-generated")))

    def _shared_email(self, row: OutboxRow, notice: dict[str, Any],
                      lang: str) -> EmailTemplate | None:
        """The notice rendered once with placeholders, or None if the templates transform the
        customer's fields (then every recipient is rendered on their own)."""
        first = self._email_template(row, notice, lang, mime.NAME, mime.REF)
        second = self._email_template(row, notice, lang, mime.ALT_NAME, mime.ALT_REF)
        for a, b in ((first.subject, second.subject), (first.text, second.text),
                     (first.html, second.html)):
            if (a.replace(mime.NAME, "\0N").replace(mime.REF, "\0R")
                    != b.replace(mime.ALT_NAME, "\0N").replace(mime.ALT_REF, "\0R")):
                return None
        return first

    def _webhook(self, row: OutboxRow, notice: dict[str, Any], lang: str) -> WebhookOut:
        """A party's chat message: the notice's SMS text (one short paragraph, what a chat
        group reads), its email subject as the title where the format has one."""
        party = row.recipient_ref.removeprefix(PARTY_PREFIX)
        found = self.rt.settings.parties.get(party)
        if found is None or found.webhook is None:
            raise ConfigInvalid(f"party {party} has no webhook in incident.yaml any more",
                                problems=[(Location(field=f"parties.{party}.webhook"),
                                           "removed after the notice was recorded")])
        context = self._context(notice, lang, row.region, row.recipient_name, row.recipient_ref)
        template_set, phase = notice["template_set"], notice["phase"]
        text = self.renderer.render_sms(template_set, phase, lang, context).text
        title = self.renderer.render_email(template_set, phase, lang, context).subject
        return WebhookOut(ref=message_ref(row), party=party, url=row.address,
                          kind=found.webhook.kind, title=title, text=text,
                          event=webhook_event(row, context, title=title, text=text))


# What the generic webhook tells about an incident: what its customers may be told too.
PUBLIC_FIELDS = ("id", "title", "severity", "severity_name", "status", "kind", "detected_at",
                 "declared_at", "affected", "regions", "drill")


def webhook_event(row: OutboxRow, context: dict[str, Any], *, title: str,
                  text: str) -> dict[str, Any]:
    """The generic webhook's JSON: the event (the notice's kind, time, text) and the
    incident's public fields, never customer data or the internal detail (operator, audience
    size, manual cases)."""
    notice = context["notice"]
    return {"type": "incident.notice", "id": row.idempotency_key,
            "language": context["lang"],
            "event": {"kind": notice.get("kind", notice["phase"]),
                      "label": notice.get("kind_label", ""), "seq": row.notice_seq,
                      "at": notice["at"], "title": title, "text": text},
            "incident": {name: context["incident"][name] for name in PUBLIC_FIELDS},
            "eta": context["eta"]["at"] or None, "next_update": context["next_update"] or None}
