"""Builds the configured transport of each channel (imports only what is used)."""

from __future__ import annotations

from collections.abc import Mapping

from incident.audience.model import ContactChecks
from incident.channels.base import Channel
from incident.channels.file import FileChannel
from incident.errors import ConfigInvalid, Location
from incident.settings import Runtime, TwilioSettings, secret


def build_channels(rt: Runtime, env: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """One Channel per channel (customers' and the parties' webhooks), as incident.yaml
    configures it."""
    config = rt.settings.channels
    secrets = check_channels(rt, env)
    channels: dict[str, Channel] = {}
    email, sms = config.email, config.sms
    callback = rt.settings.receipts.callback_url
    if email.transport == "smtp" and email.smtp is not None:
        from incident.channels.email import SmtpChannel

        channels["email"] = SmtpChannel(email.smtp, rate=email.rate,
                                        password=secrets.get("smtp_password"))
    else:
        channels["email"] = FileChannel("email", rt.outbox_dir)
    if sms.transport == "twilio" and sms.twilio is not None:
        from incident.channels.sms import TwilioChannel

        channels["sms"] = TwilioChannel(sms.twilio, rate=sms.rate,
                                        account_sid=secrets["twilio_sid"],
                                        auth_token=secrets["twilio_token"],
                                        status_callback=callback)
    else:
        channels["sms"] = FileChannel("sms", rt.outbox_dir)
    voice = config.voice
    if voice.transport == "twilio" and voice.twilio is not None:
        from incident.channels.voice import VoiceChannel

        caller = TwilioSettings(from_number=voice.twilio.from_number,
                                api_base_url=voice.twilio.api_base_url)
        channels["voice"] = VoiceChannel(caller, rate=voice.rate, concurrent=voice.concurrent,
                                         account_sid=secrets["twilio_sid"],
                                         auth_token=secrets["twilio_token"],
                                         status_callback=callback)
    else:
        channels["voice"] = FileChannel("voice", rt.outbox_dir)
    webhook = config.webhook
    if webhook.transport == "http":
        from incident.channels.webhook import WebhookChannel

        prefix = "webhook:"
        channels["webhook"] = WebhookChannel(
            {k[len(prefix):]: v for k, v in secrets.items() if k.startswith(prefix)},
            rate=webhook.rate, timeout=webhook.timeout,
            now=lambda: rt.clock.now().timestamp())
    else:
        channels["webhook"] = FileChannel("webhook", rt.outbox_dir)
    return channels


def check_channels(rt: Runtime, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secrets every configured transport needs, read from the environment; ConfigInvalid
    naming each one missing, so that a command can refuse before it records anything."""
    config = rt.settings.channels
    found: dict[str, str] = {}
    missing: list[tuple[str, str]] = []  # (config field, variable)
    smtp = config.email.smtp if config.email.transport == "smtp" else None
    if smtp is not None:
        password = secret(smtp.password_env, env)
        if password:
            found["smtp_password"] = password
        elif smtp.username:
            missing.append(("channels.email.smtp.password_env", smtp.password_env))
    twilio = [f"channels.{name}.transport" for name, transport in
              (("sms", config.sms.transport), ("voice", config.voice.transport))
              if transport == "twilio"]
    if twilio:
        for key, variable in (("twilio_sid", "TWILIO_ACCOUNT_SID"),
                              ("twilio_token", "TWILIO_AUTH_TOKEN")):
            value = secret(variable, env)
            if value:
                found[key] = value
            else:
                missing.append((twilio[0], variable))
    if config.webhook.transport == "http":
        for party_id, party in rt.settings.parties.items():
            hook = party.webhook
            if hook is None or not hook.secret_env:
                continue
            value = secret(hook.secret_env, env)
            if value:
                found["webhook:" + party_id] = value
            else:
                missing.append((f"parties.{party_id}.webhook.secret_env", hook.secret_env))
    if missing:
        where = str(rt.config_path) if rt.config_path else "built-in defaults"
        names = [variable for _, variable in missing]
        raise ConfigInvalid(
            f"the environment variable{'s' if len(names) > 1 else ''} {', '.join(names)} "
            f"{'are' if len(names) > 1 else 'is'} not set",
            problems=[(Location(where, None, field), f"needs ${variable}")
                      for field, variable in missing],
            hint=" ".join(f"export {v}=..." for v in names)
            + " (secrets are never read from the file)")
    return found


def contact_checks(rt: Runtime) -> ContactChecks:
    """What the configured transports refuse of a valid contact, per audience field ("email",
    "phone"): a refused contact costs the customer that channel only (audience.ContactChecks).
    None so far; e.g. a relay without SMTPUTF8 would refuse non-ASCII addresses here."""
    return {}


def concurrency(rt: Runtime) -> dict[str, int]:
    """Messages in flight per channel: one per SMTP connection; a few HTTP requests for SMS,
    call creates (the voice channel itself caps the calls in progress) and webhooks."""
    smtp = rt.settings.channels.email.smtp
    return {"email": smtp.connections if smtp else 8, "sms": 8, "webhook": 4,
            "voice": min(8, rt.settings.channels.voice.concurrent)}
