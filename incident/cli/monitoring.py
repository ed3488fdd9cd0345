"""`--metrics-port` / `--metrics-host` of `incident deliver` and `incident receipts serve`:
Prometheus metrics of the process at http://HOST:PORT/metrics (README "Metrics")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from incident.cli.app import App


def metrics_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --metrics-port and --metrics-host to `command`."""
    command = click.option(
        "--metrics-host", default="127.0.0.1", show_default=True, metavar="HOST",
        help="Address the metrics are served on (0.0.0.0: every interface).")(command)
    return click.option(
        "--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 9464; 0: any free "
             "port, printed).")(command)


def serve_metrics(app: App, host: str, port: int | None) -> bool:
    """Start serving the metrics if a port was given (a taken port: exit 1); whether it did.
    They stop when the command ends."""
    if port is None:
        return False
    exporter = app.response.serve_metrics(host=host, port=port)
    click.get_current_context().call_on_close(exporter.close)
    app.out.note(f"Metrics at {exporter.url}")
    return True
