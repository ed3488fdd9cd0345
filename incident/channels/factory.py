"""Builds the configured transport of each customer channel (imports only what is used)."""

from __future__ import annotations

from collections.abc import Mapping

from incident.audience import ContactChecks
from incident.channels.base import Channel
from incident.channels.file import FileChannel
from incident.errors import ConfigInvalid, Location
from incident.settings import Runtime, secret


def build_channels(rt: Runtime, env: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """One Channel per customer channel, as incident.yaml configures it."""
    config = rt.settings.channels
    channels: dict[str, Channel] = {}
    email, sms = config.email, config.sms
    if email.transport == "smtp" and email.smtp is not None:
        from incident.channels.email import SmtpChannel

        password = secret(email.smtp.password_env, env)
        if email.smtp.username and not password:
            raise _missing(rt, "channels.email.smtp.password_env", email.smtp.password_env)
        channels["email"] = SmtpChannel(email.smtp, rate=email.rate, password=password)
    else:
        channels["email"] = FileChannel("email", rt.outbox_dir)
    if sms.transport == "twilio" and sms.twilio is not None:
        from incident.channels.sms import TwilioChannel

        sid = secret("TWILIO_ACCOUNT_SID", env)
        token = secret("TWILIO_AUTH_TOKEN", env)
        if not sid or not token:
            raise _missing(rt, "channels.sms.transport",
                           "TWILIO_ACCOUNT_SID" if not sid else "TWILIO_AUTH_TOKEN")
        channels["sms"] = TwilioChannel(sms.twilio, rate=sms.rate, account_sid=sid,
                                        auth_token=token)
    else:
        channels["sms"] = FileChannel("sms", rt.outbox_dir)
    return channels


def contact_checks(rt: Runtime) -> ContactChecks:
    """What the configured transports refuse of a valid contact, per audience field ("email",
    "phone"): a refused contact costs the customer that channel only (audience.ContactChecks).
    None so far; e.g. a relay without SMTPUTF8 would refuse non-ASCII addresses here."""
    return {}


def concurrency(rt: Runtime) -> dict[str, int]:
    """Messages in flight per channel: one per SMTP connection; a few HTTP requests for SMS."""
    smtp = rt.settings.channels.email.smtp
    return {"email": smtp.connections if smtp else 8, "sms": 8}


def _missing(rt: Runtime, field: str, variable: str) -> ConfigInvalid:
    where = str(rt.config_path) if rt.config_path else "built-in defaults"
    return ConfigInvalid(f"the environment variable {variable} is not set",
                         problems=[(Location(where, None, field), f"needs ${variable}")],
                         hint=f"export {variable}=... (secrets are never read from the file)")
