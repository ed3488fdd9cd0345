"""What every command shares: the lazily built Runtime and use cases, and the output."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property, update_wrapper
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from incident.cli.output import Output
from incident.clock import SYSTEM_CLOCK, Clock
from incident.errors import ConfigInvalid

if TYPE_CHECKING:  # imported on first use: `incident --help` needs neither
    from incident.response import Response
    from incident.response.results import Result
    from incident.settings import Runtime


class App:
    """Per-invocation state on ctx.obj; settings are read once, on first use."""

    def __init__(self, *, config: str | None, db: str | None, operator: str | None,
                 as_json: bool, debug: bool, creates: bool = True,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self.creates = creates  # the command may start a workspace's first incident
        self.db = db
        self.operator = operator
        self.debug = debug
        self.out = Output(as_json=as_json)
        self.touched: list[str] = []  # incidents this command acted on (for the reminders)
        self.reminded = False  # the command showed what falls due itself (status, watch)
        self.command: click.Command | None = None  # the (sub)command running

    @cached_property
    def rt(self) -> Runtime:
        """Settings, paths, database URL, operator and clock."""
        from incident.settings import load_runtime

        rt = load_runtime(self.config, db=self.db, operator=self.operator, clock=self.clock)
        self.out.zone = rt.zone
        missing = _missing_sqlite(rt.db_url)
        if rt.config_path is None and missing and not self.creates:
            # Reading a folder that holds no incidents must not leave an empty database in it.
            raise ConfigInvalid(f"no incident.yaml and no database here ({missing} does not "
                                "exist): there is no incident to show",
                                hint="run it in the folder made by incident init, or give "
                                     "--config PATH or --db URL")
        if rt.config_path is None:
            self.out.note("No incident.yaml here: using the built-in defaults "
                          "(SQLite, file channel). Create one with: incident init")
        return rt

    @cached_property
    def response(self) -> Response:
        """The use cases."""
        from incident.response import Response

        return Response(self.rt)

    def conclude(self, result: Result) -> None:
        """End the command as its result says: its notes (stderr), then exit 1 with the
        problem when what was recorded could not be carried out, 3 when part of it failed for
        good, else carry on (0). The one place a result becomes an exit code."""
        for note in result.notes:  # e.g. the first notice, completed after a crash
            self.out.warn(note)
        result.notes = []
        problem = result.problem
        if problem is not None:
            raise problem
        if result.exit_code:
            raise click.exceptions.Exit(result.exit_code)

    def warn_tampered(self) -> None:
        """Warn (stderr) about each incident whose event chain a write of this command found
        broken; the write went on and recorded a `chain_tampered` event first."""
        response = self.__dict__.get("response")  # never open the database just for this
        store = response.journal.store_if_open() if response is not None else None
        for incident_id, problems in (store.tampered.items() if store is not None else ()):
            self.out.warn(f"{incident_id}: the event chain is broken ({len(problems)} "
                          f"problem(s): {problems[0]}); this write went on, and the finding is "
                          "recorded in the log — "
                          f"keep a copy of the database and run: incident verify {incident_id}")

    def touch(self, incident_id: str) -> None:
        """Note that the command acted on `incident_id`: what falls due there is shown after
        the command's own output."""
        if incident_id not in self.touched:
            self.touched.append(incident_id)

    def remind(self) -> None:
        """Warn (stderr) about what falls due on the incidents this command touched: the next
        customer update, a passed ETA, overdue steps and regulator deadlines."""
        if self.reminded:
            return
        self.reminded = True
        for incident_id in self.touched:
            items = self.response.coordination.attention(incident_id)
            # The customer update and the ETA first: they must not hide behind late steps.
            items.sort(key=lambda a: not a.key.startswith(("update:", "eta:")))
            for item in items[:4]:
                self.out.warn(f"{incident_id[-6:]}: {item.what}")
            if len(items) > 4:
                self.out.warn(f"{incident_id[-6:]}: and {len(items) - 4} more — "
                              f"incident status {incident_id[-6:]}")


F = TypeVar("F", bound=Callable[..., Any])


def pass_app(command: F) -> F:
    """Pass the App as the first argument, and note the command's context on it: an error
    about a field is then worded with the command's own option name (cli/__init__.py)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        app = ctx.find_object(App)
        if app is None:
            raise RuntimeError("the incident command group did not set up its App")
        app.command = ctx.command
        return ctx.invoke(command, app, *args, **kwargs)
    return update_wrapper(call, command)  # type: ignore[return-value]


def _missing_sqlite(url: str) -> Path | None:
    """The SQLite file `url` names if it does not exist yet (None for other databases)."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if not path.name or path.exists() else path
