"""``imgq reconcile``: re-queue the images of jobs the broker lost."""

from __future__ import annotations

import click

from imgq.config import get_settings


@click.command("reconcile")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a job may go without a new batch before its unfinished "
    "images are queued again (default: the IMGQ_RECONCILE_GRACE setting).",
)
def reconcile_command(grace: float | None) -> None:
    """Queue again the images of open jobs that have no prediction nor failure.

    Beat runs the same check every IMGQ_RECONCILE_INTERVAL seconds; run it by
    hand after Redis lost messages or a producer died mid-submission. It is
    safe to run at any time: a re-queued image that had only been late still
    ends with one row.
    """
    from imgq.db.migrate import require_current
    from imgq.worker.reconcile import reconcile

    require_current()
    settings = get_settings()
    result = reconcile(grace=grace, settings=settings)
    click.echo(
        f"{result.jobs_checked} idle jobs checked: {result.images_requeued} images "
        f"of {result.jobs_requeued} jobs re-queued in {len(result.batches_sent)} "
        f"batches, {result.jobs_closed} jobs closed"
    )


commands = [reconcile_command]
