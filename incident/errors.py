"""One error hierarchy; the CLI turns it into exit codes in one place."""

from __future__ import annotations

from dataclasses import dataclass


class ExitCode:
    """The documented exit codes of the command line."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    PARTIAL = 3


@dataclass(frozen=True)
class Location:
    """Where a bad input is: file, line (1-based) and field path, any of them optional."""

    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file + (f":{self.line}" if self.line else ""))
        elif self.line:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts)


class IncidentError(Exception):
    """Base of every error the toolkit reports to the operator."""

    exit_code = ExitCode.FAILED
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None,
                 problems: list[tuple[Location, str]] | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        # `field`: the input the message is about, in domain words (`title`, `eta`); the
        # message then starts with it, and a front end may name it its own way (`name_field`).
        self.field = field
        self.detail = message
        self.message = f"{field} {message}" if field else message
        if hint is not None:
            self.hint = hint
        self.problems = problems or []

    def name_field(self, name: str) -> None:
        """Call the field the message is about `name` (the command line: `--title`)."""
        if self.field:
            self.message = f"{name} {self.detail}"
            self.args = (self.message,)

    def lines(self) -> list[str]:
        """The message followed by one line per located problem (not the one the message
        already starts with: `file:12 field: what (and 2 more)` lists only the 2 more)."""
        out = [self.message]
        for loc, msg in self.problems:
            text = f"{loc}: {msg}" if str(loc) else msg
            if not (len(out) == 1 and self.message.startswith(text)):
                out.append(f"  {text}")
        return out


class BadInput(IncidentError):
    """The operator's input is wrong: usage, config, playbook, audience, id or state."""

    exit_code = ExitCode.BAD_INPUT


class ConfigInvalid(BadInput):
    """incident.yaml or the environment does not validate."""


class PlaybookInvalid(BadInput):
    """A playbook file does not parse or validate."""


class PlaybookNotFound(BadInput):
    """No playbook with that name or path."""


class TemplateInvalid(BadInput):
    """A notice template is missing, does not compile, or fails to render."""


class AudienceInvalid(BadInput):
    """A customer list cannot be used at all (missing file, missing columns, no valid row)."""


class IncidentNotFound(BadInput):
    """No incident matches the given id or suffix."""


class AmbiguousIncident(BadInput):
    """An id suffix matches more than one incident."""


class InvalidTransition(BadInput):
    """The incident's state does not allow that command."""


class InvalidValue(BadInput):
    """A command-line value (time, duration, status) cannot be understood."""


class StorageError(IncidentError):
    """The database failed at run time; the transaction was rolled back."""


class ChainBroken(IncidentError):
    """The event chain of an incident does not verify."""


class DeliveryError(IncidentError):
    """A channel cannot be used at all (misconfigured, unreachable)."""


class CapInvalid(BadInput):
    """A CAP (Common Alerting Protocol 1.2) file cannot be read or does not conform."""


class BranchesInvalid(BadInput):
    """A branch list cannot be used (missing file or columns, bad rows)."""


class RecordInvalid(IncidentError):
    """An event's data does not match the record of its type (incident/payloads.py)."""
