"""Output for people (short, tables, what to do next) and for scripts (--json)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from incident.controls import UNSAFE
from incident.errors import IncidentError, InvalidValue, StorageError
from incident.timeutil import format_duration, local_text

if TYPE_CHECKING:  # `incident --help` must not import the delivery machinery
    from incident.delivery import Tally

STATES = ("pending", "sending", "sent", "failed")
# Shown only when some rows are in them (the JSON contract names the four above).
OCCASIONAL_STATES = ("skipped",)  # never sent: the number opted out


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    # One character for one, so a rich Text's styles stay aligned: C0 as its control picture
    # (ESC shows as ␛), DEL as ␡, anything else as the replacement character.
    return chr(0x2400 + code) if code < 0x20 else "\u2421" if code == 0x7F else "\ufffd"


def clean(text: str) -> str:
    """Text with every control character that could act on a terminal made visible instead."""
    return UNSAFE.sub(_visible, text)


def safe(value: object) -> str:
    """Data (a title, a name, a message) to put into a line of rich markup: cleaned and with
    its own `[...]` escaped, so it is shown as it is and never read as markup."""
    return escape(clean(str(value)))


def _cell(value: object) -> Text:
    """A table cell or title: plain strings are data and never parsed as markup; a rich Text a
    printer styled keeps its style, its text cleaned."""
    if isinstance(value, Text):
        copy = value.copy()
        copy.plain = clean(value.plain)
        return copy
    return Text(clean(str(value)))


class Output:
    """Writes tables and notes to the terminal, or one JSON document to stdout."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.json_extra: dict[str, Any] = {}  # merged into the next JSON document printed
        self.zone: ZoneInfo | None = None
        # soft_wrap: a message is never broken mid-path; scripts grep these lines.
        self.console = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    # ---------------------------------------------------------------- plain output

    def json(self, data: Any) -> None:
        """Print one JSON document (only in --json mode)."""
        if self.json_extra and isinstance(data, dict):
            data, self.json_extra = {**data, **self.json_extra}, {}
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")

    def line(self, text: str = "") -> None:
        """A line for people in rich markup, data in it passed through `safe` (suppressed in
        --json). Control characters are made visible here whatever the caller did."""
        if not self.as_json:
            _print(self.console, clean(text))

    def note(self, text: str) -> None:
        """A remark on stderr (never mixed into --json output)."""
        self.err.print(f"[dim]{safe(text)}[/dim]")

    def warn(self, text: str) -> None:
        """A warning on stderr."""
        self.err.print(f"[yellow]warning:[/yellow] {safe(text)}")

    def error(self, exc: IncidentError) -> None:
        """The message of a toolkit error, its located problems and its hint, on stderr."""
        lines = exc.lines()
        self.err.print(f"[bold red]error:[/bold red] {safe(lines[0])}")
        for extra in lines[1:]:
            self.err.print(safe(extra))
        if exc.hint:
            self.err.print(f"[dim]hint: {safe(exc.hint)}[/dim]")

    def next(self, *commands: str) -> None:
        """Tell the supervisor what to do next."""
        if not self.as_json and commands:
            self.console.print("[bold]Next:[/bold] " + "  ·  ".join(safe(c) for c in commands))

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              ) -> None:
        """A rich table (suppressed in --json mode)."""
        if self.as_json:
            return
        # The title names an incident by its title: data, like every cell.
        table = Table(title=_cell(title) if title is not None else None, title_justify="left",
                      header_style="bold")
        for index, column in enumerate(columns):
            # The first column is an identifier: never wrap or truncate it.
            table.add_column(column, no_wrap=index == 0, min_width=len(column))
        for row in rows:
            table.add_row(*[_cell(cell) for cell in row])
        self.console.print(table)

    # ---------------------------------------------------------------- formatting

    def when(self, value: datetime | None) -> str:
        """A time in the configured zone, or '—'."""
        if value is None:
            return "—"
        return local_text(value, self.zone) if self.zone else value.isoformat()

    def short(self, value: datetime | None, now: datetime) -> str:
        """A time for a table cell: `14:30` today, `11-26 14:30` another day, or '—'."""
        if value is None:
            return "—"
        if self.zone is None:
            return value.isoformat(timespec="minutes")
        local, today = value.astimezone(self.zone), now.astimezone(self.zone)
        return local.strftime("%H:%M" if local.date() == today.date() else "%m-%d %H:%M")

    @staticmethod
    def ago(value: timedelta) -> str:
        """A duration as `1h30m`."""
        return format_duration(value)

    def deliveries(self, counts: dict[str, dict[str, int]], title: str = "Deliveries") -> None:
        """Delivery counts by channel and state."""
        rows = []
        states = [*STATES, *(s for s in OCCASIONAL_STATES
                             if any(s in by_state for by_state in counts.values()))]
        for channel in sorted(counts):
            by_state = counts[channel]
            failed = by_state.get("failed", 0)
            rows.append([channel, *[
                (Text(str(failed), style="red") if state == "failed" and failed else
                 str(by_state.get(state, 0))) for state in states]])
        if rows:
            self.table(title, ["channel", *states], rows)

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Any]:
        """A progress bar on stderr for long sends; yields a callback taking a Tally."""
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("sent {task.fields[sent]} · "
                                                        "failed {task.fields[failed]} · "
                                                        "{task.fields[rate]:.0f}/s"),
                       TimeElapsedColumn(), console=self.err, transient=True,
                       disable=self.as_json or not self.err.is_terminal)
        with bar:
            task = bar.add_task(label, total=max(total, 1), sent=0, failed=0, rate=0.0)

            def update(tally: Tally) -> None:
                bar.update(task, completed=tally.sent + tally.failed, sent=tally.sent,
                           failed=tally.failed, rate=tally.rate)

            yield update


@contextmanager
def writing(path: object) -> Iterator[None]:
    """Writes to a path the operator named (init DIR, --export, -o): a path that cannot be
    written (a folder missing, a file where a folder should be, no permission) is bad input
    naming it; any other OS error (disk full) a run-time failure. Never a traceback."""
    try:
        yield
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        raise InvalidValue(f"cannot write {exc.filename or path}: {exc.strerror or exc}",
                           hint="give a path in a folder that exists and you may write to"
                           ) from None
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _print(console: Console, markup: str) -> None:
    """Print a line of markup; if data in it was not passed through `safe` and breaks the
    markup (`[/bold]` in a title), print the line as it is rather than fail."""
    try:
        console.print(markup)
    except MarkupError:
        console.print(markup, markup=False)


def state_counts(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Counts by state over all channels."""
    total: dict[str, int] = dict.fromkeys(STATES, 0)
    for by_state in counts.values():
        for state, n in by_state.items():
            total[state] = total.get(state, 0) + n
    return total
