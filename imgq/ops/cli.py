"""``imgq health`` and ``imgq metrics``: is the deployment up, and how busy."""

from __future__ import annotations

import json

import click

from imgq.config import get_settings
from imgq.errors import UnhealthyError

DEFAULT_EXPORTER_PORT = 9808


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--timeout",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds each part may take to answer.",
)
def health_command(as_json: bool, timeout: float) -> None:
    """Check Redis, the database, the workers and whether they are ready.

    Prints one line per part, "ok" or "down: reason", and exits with code 8
    when any part is down. A worker is ready once every pool process has
    loaded and warmed up its model; only workers serving this deployment's
    queues count.
    """
    from imgq.ops.health import check_all

    parts = check_all(get_settings(), timeout=timeout)
    if as_json:
        report = {
            "healthy": all(part.ok for part in parts),
            "parts": {
                part.part: {"ok": part.ok, "detail": part.detail} for part in parts
            },
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for part in parts:
            click.echo(part.line())
    down = [part.part for part in parts if not part.ok]
    if down:
        raise UnhealthyError(f"{', '.join(down)} down")


@click.command("metrics")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_EXPORTER_PORT,
    show_default=True,
    help="Port to serve /metrics on.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to bind.")
def metrics_command(port: int, host: str) -> None:
    """Serve queue depth, jobs in progress and pending images for Prometheus.

    Run one per deployment. Each worker serves its own counts and timings on
    IMGQ_METRICS_PORT; this exporter adds what no single worker knows, read
    from Redis (or the embedded queue) and the database at every scrape.
    """
    from imgq.ops.exporter import run_exporter

    run_exporter(get_settings(), port=port, host=host)


commands = [health_command, metrics_command]
