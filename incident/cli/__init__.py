"""The command line: parsing, one service call, output. Errors become exit codes here only."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from incident import __version__
from incident.cli.app import App
from incident.cli.output import clean
from incident.clock import SYSTEM_CLOCK, Clock
from incident.errors import ExitCode, IncidentError


class IncidentGroup(click.Group):
    """Turns IncidentError into its message and exit code (traceback only with --debug)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Refuse an argument that is not valid UTF-8 (bytes a terminal or a script passed
        through): it could be neither recorded nor sent."""
        for position, arg in enumerate(args, start=1):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError as exc:
                shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                raise click.UsageError(
                    f"argument {position} ({clean(shown)[:60]}) is not valid UTF-8 at "
                    f"character {exc.start + 1}: type it again, or fix the script's encoding",
                    ctx) from None
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report toolkit errors in one place."""
        try:
            result = super().invoke(ctx)
        except click.exceptions.Exit as done:
            if done.exit_code in (ExitCode.OK, ExitCode.PARTIAL):
                self._remind(ctx)
            raise
        except IncidentError as exc:
            _name_field(ctx, exc)
            app = ctx.obj if isinstance(ctx.obj, App) else None
            if app is not None and app.debug:
                traceback.print_exc()
            if app is not None:
                app.out.error(exc)
            else:
                click.echo(clean("\n".join(exc.lines())), err=True)
            ctx.exit(exc.exit_code)
        self._remind(ctx)
        return result

    @staticmethod
    def _remind(ctx: click.Context) -> None:
        """After a command: a broken chain it wrote to, and on an open incident what falls due
        there (never fails it)."""
        app = ctx.obj if isinstance(ctx.obj, App) else None
        if app is not None:
            app.warn_tampered()
        if app is None or not app.touched:
            return
        try:
            app.remind()
        except IncidentError as exc:  # a reminder must not turn a success into a failure
            app.out.warn(f"cannot check what falls due: {exc.message}")


def _name_field(ctx: click.Context, exc: IncidentError) -> None:
    """Name the field an error is about as the command line does: the option (`--title`) or
    argument (`WHEN`) of the running command whose parameter has that name."""
    app = ctx.obj if isinstance(ctx.obj, App) else None
    if not exc.field or app is None or app.command is None:
        return
    for param in app.command.params:
        if param.name == exc.field:
            exc.name_field(param.opts[0] if isinstance(param, click.Option)
                           else (param.metavar or param.name or exc.field).upper())
            return


# Commands that may run in a folder with no incident.yaml and no database yet (the built-in
# defaults); any other needs an incident, so there it is refused rather than creating one.
CREATING = frozenset({"init", "playbooks", "start", "warnings"})


@click.group(cls=IncidentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", metavar="PATH", envvar="INCIDENT_CONFIG",
              help="Config file (default ./incident.yaml; env INCIDENT_CONFIG).")
@click.option("--db", metavar="URL", envvar="INCIDENT_DB",
              help="Database URL (default: SQLite next to the config; env INCIDENT_DB).")
@click.option("--as", "operator", metavar="NAME", envvar="INCIDENT_OPERATOR",
              help="Who is acting (default: the OS user; env INCIDENT_OPERATOR).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="incident")
@click.pass_context
def cli(ctx: click.Context, config: str | None, db: str | None, operator: str | None,
        as_json: bool, debug: bool) -> None:
    """Run an incident from a playbook: notify customers with the ETA, keep them updated
    until recovery, and keep a verifiable record of every action.

    \b
    A typical incident:
      incident start core-banking-outage --title "Core banking down" --eta 2h
      incident update 3F2A --message "Database failover in progress" --status identified
      incident eta 3F2A 16:30 --reason "Failover slower than planned"
      incident resolve 3F2A --message "All services restored"
      incident close 3F2A

    Exit codes: 0 done; 1 failed at run time (nothing half-recorded); 2 bad input;
    3 done, but some deliveries failed permanently.
    """
    # The time source is whatever the caller passed in as the context object (a program
    # embedding the command line, or a test freezing time); otherwise the system clock.
    clock = ctx.obj if isinstance(ctx.obj, Clock) else SYSTEM_CLOCK
    ctx.obj = App(config=config, db=db, operator=operator, as_json=as_json, debug=debug,
                  creates=ctx.invoked_subcommand in CREATING, clock=clock)


def _register() -> None:
    from incident.cli import (
        bounces,
        coordination,
        lifecycle,
        manual,
        optout,
        page,
        receipts,
        record,
        replies,
        report,
        rollcall,
        setup,
        views,
    )

    for module in (setup, lifecycle, manual, coordination, views, record, report, receipts,
                   bounces, optout, rollcall, page, replies):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(clock: Clock = SYSTEM_CLOCK) -> None:
    """Console-script entry point; every time recorded comes from `clock`."""
    try:
        cli.main(prog_name="incident", obj=clock)
    except KeyboardInterrupt:
        click.echo("Interrupted. Recorded work is safe; pending messages stay queued — "
                   "resume with: incident deliver", err=True)
        sys.exit(ExitCode.FAILED)
