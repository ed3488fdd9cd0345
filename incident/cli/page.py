"""`incident page build | serve`: the public status page."""

from __future__ import annotations

import sys

import click

from incident.cli.app import App, pass_app
from incident.cli.output import safe


@click.group()
def page() -> None:
    """The public status page: HTML in zh-CN, zh-HK and en, Statuspage JSON, Atom and RSS."""


@page.command()
@click.argument("directory", metavar="[DIR]", required=False)
@pass_app
def build(app: App, directory: str | None) -> None:
    """Write the status site into DIR (default: status_page.dir), then run
    status_page.publish when building the configured directory.

    \b
    Example:
      incident page build public/ && aws s3 sync public/ s3://status-bucket --delete
    """
    built = app.response.page.build(directory)
    if app.out.as_json:
        app.out.json({"directory": str(built.directory), "incidents": built.incidents,
                      "files": built.files, "written": built.written,
                      "removed": built.removed, "published": built.published})
    else:
        app.out.line(f"Status page: {built.incidents} incident(s), {built.files} files in "
                     f"{safe(built.directory)}; {len(built.written)} written, "
                     f"{len(built.removed)} removed"
                     + ("; published" if built.published else ""))
    app.conclude(built)


@page.command()
@click.argument("directory", metavar="[DIR]", required=False)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free one, printed).")
@pass_app
def serve(app: App, directory: str | None, port: int) -> None:
    """Preview the status site on http://127.0.0.1:PORT/ until Ctrl-C, rebuilding it into
    DIR (default: status_page.dir) whenever the record changes."""

    def ready(host: str, bound: int) -> None:
        if app.out.as_json:
            app.out.json({"listening": f"http://{host}:{bound}/"})
        else:
            app.out.line(f"Serving the status page on http://{host}:{bound}/ (Ctrl-C stops)")
        sys.stdout.flush()  # a test (or a supervisor) waits for this line

    app.conclude(app.response.page.serve(host="127.0.0.1", port=port, ready=ready,
                                         directory=directory))


COMMANDS = [page]
