"""``imgq reinfer`` and ``imgq beat``: re-inference by hand and on a schedule."""

from __future__ import annotations

import click

from imgq.config import get_settings
from imgq.worker.reinfer import ReinferResult


def print_reinfer_result(result: ReinferResult) -> None:
    """One line: the job and what it queued, or that nothing was missing."""
    if result.job_id is None:
        click.echo(
            f"model version {result.model_version_id}: nothing to re-infer; every "
            "selected image has a prediction, a failure or an open job"
        )
        return
    click.echo(
        f"job {result.job_id}: {result.queued} images queued in "
        f"{len(result.batches)} batches for model version {result.model_version_id} "
        f"on {get_settings().background_queue}"
    )


@click.command("reinfer")
@click.option(
    "--model",
    "model_reference",
    default=None,
    help="Model version or alias (default: the IMGQ_MODEL setting, 'production').",
)
@click.option(
    "--job", "job_id", type=int, default=None, help="Only the images of this job."
)
@click.option(
    "--since",
    default=None,
    help="Only images first stored at or after this date or ISO time "
    "(UTC unless it names a zone).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also queue images whose earlier try with this version failed.",
)
@click.option("--wait", is_flag=True, help="Show progress until the job is done.")
def reinfer_command(
    model_reference: str | None,
    job_id: int | None,
    since: str | None,
    retry_failed: bool,
    wait: bool,
) -> None:
    """Queue every stored image that a model version has not answered yet.

    The images go to the background queue as one job of kind 'reinfer', so
    fresh jobs are served first; 'imgq status JOB' follows it. When nothing
    is missing no job is created, so running it again is harmless.
    """
    from imgq.db.migrate import require_current
    from imgq.producer.cli import wait_with_progress
    from imgq.worker.reinfer import parse_since, reinfer

    require_current()
    result = reinfer(
        model_reference=model_reference,
        job_id=job_id,
        since=parse_since(since) if since else None,
        retry_failed=retry_failed,
    )
    print_reinfer_result(result)
    if wait and result.job_id is not None:
        wait_with_progress(result.job_id)


@click.command("beat")
def beat_command() -> None:
    """Run Celery beat: a re-inference on the IMGQ_REINFER_SCHEDULE crontab.

    Run exactly one beat per deployment; two would start every run twice.
    The crontab is in UTC; beat keeps its state in <data_dir>/beat-schedule.
    """
    from imgq.worker.app import get_app

    settings = get_settings()
    app = get_app()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    click.echo(
        f"beat: re-inference on {settings.reinfer_schedule!r} (UTC), sent to "
        f"{settings.background_queue}",
        err=True,
    )
    app.Beat(loglevel=settings.log_level, quiet=True).run()


commands = [reinfer_command, beat_command]
