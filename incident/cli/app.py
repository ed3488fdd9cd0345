"""What every command shares: the lazily built Runtime and Service, and the output."""

from __future__ import annotations

from functools import cached_property

from incident.cli.output import Output
from incident.service import Service
from incident.settings import Runtime, load_runtime


class App:
    """Per-invocation state on ctx.obj; settings are read once, on first use."""

    def __init__(self, *, config: str | None, db: str | None, operator: str | None,
                 as_json: bool, debug: bool) -> None:
        self.config = config
        self.db = db
        self.operator = operator
        self.debug = debug
        self.out = Output(as_json=as_json)

    @cached_property
    def rt(self) -> Runtime:
        """Settings, paths, database URL and operator."""
        rt = load_runtime(self.config, db=self.db, operator=self.operator)
        self.out.zone = rt.zone
        if rt.config_path is None:
            self.out.note("No incident.yaml here: using the built-in defaults "
                          "(SQLite, file channel). Create one with: incident init")
        return rt

    @cached_property
    def service(self) -> Service:
        """The use cases."""
        return Service(self.rt)
