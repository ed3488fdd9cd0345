"""Email bounces: RFC 3464 delivery status notifications and the common non-standard
bounces read from files, mbox and Maildir (sources.py), each classified hard or soft with
what matches it to the outbox: the original Message-ID or a VERP key (parse.py). No storage
here: the response layer matches and (with the receipts store) records them."""

from incident.bounces.model import Kind, ParsedBounce, RecipientStatus, Severity, SourceMessage
from incident.bounces.parse import message_identity, parse_bounce
from incident.bounces.sources import read_sources

__all__ = ["Kind", "ParsedBounce", "RecipientStatus", "Severity", "SourceMessage",
           "message_identity", "parse_bounce", "read_sources"]
