"""Builds the configured transport of each customer channel."""

from __future__ import annotations

from incident.channels.base import Channel
from incident.channels.file import FileChannel
from incident.errors import ConfigInvalid, Location
from incident.settings import Runtime


def build_channels(rt: Runtime) -> dict[str, Channel]:
    """One Channel per customer channel, as incident.yaml configures it."""
    channels: dict[str, Channel] = {}
    config = rt.settings.channels
    for name, transport in (("email", config.email.transport), ("sms", config.sms.transport)):
        if transport == "file":
            channels[name] = FileChannel(name, rt.outbox_dir)
        else:
            raise ConfigInvalid(
                f"channels.{name}.transport {transport!r} is not available in this version",
                problems=[(rt_location(rt, f"channels.{name}.transport"),
                           "use transport: file")])
    return channels


def rt_location(rt: Runtime, field: str) -> Location:
    """A Location naming the config file and field."""
    return Location(str(rt.config_path) if rt.config_path else "built-in defaults", None, field)
