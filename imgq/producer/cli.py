"""``imgq submit``, ``imgq status``, ``imgq watch`` and ``imgq run``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
from tqdm import tqdm

from imgq.config import get_settings
from imgq.db.jobs import JobCounts
from imgq.producer.paths import Candidate

SOURCES_HELP = (
    "SOURCES are folders (searched recursively for image files), globs "
    "('photos/**/*.jpg'), CSV manifests (a path column and an optional label "
    "column) or single files; '-' reads one path per line from standard input."
)


def _candidates(
    sources: tuple[str, ...], labels_from_dirs: bool
) -> Iterator[Candidate]:
    from imgq.producer.paths import iter_candidates

    settings = get_settings()
    return iter_candidates(
        sources,
        roots=settings.resolved_allowed_roots,
        labels_from_dirs=labels_from_dirs,
    )


def _print_counts(counts: JobCounts) -> None:
    click.echo(
        f"job {counts.job_id}: {counts.state}; {counts.total} images, "
        f"{counts.done} classified, {counts.failed} failed, {counts.pending} pending"
    )


labels_option = click.option(
    "--labels-from-dirs",
    is_flag=True,
    help="Use each file's folder name as its true label (class subfolders).",
)
model_option = click.option(
    "--model",
    "model_reference",
    default=None,
    help="Model version or alias (default: the IMGQ_MODEL setting, 'production').",
)


@click.command("submit", epilog=SOURCES_HELP)
@click.argument("sources", nargs=-1, required=True)
@labels_option
@model_option
@click.option(
    "--background",
    is_flag=True,
    help="Queue on the background queue, behind fresh jobs.",
)
@click.option("--wait", is_flag=True, help="Show progress until the job is done.")
def submit_command(
    sources: tuple[str, ...],
    labels_from_dirs: bool,
    model_reference: str | None,
    background: bool,
    wait: bool,
) -> None:
    """Register images as a new job and queue them for the workers.

    Paths must lie under the allowed roots (IMGQ_ALLOWED_ROOTS). The same
    image content submitted again is not classified again by the same model.
    """
    from imgq.db.migrate import require_current
    from imgq.producer.submit import submit

    settings = get_settings()
    require_current()
    queue = settings.background_queue if background else settings.fresh_queue
    with tqdm(
        desc="submitting",
        unit=" paths",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    ) as bar:
        result = submit(
            _candidates(sources, labels_from_dirs),
            source=" ".join(sources),
            model_reference=model_reference,
            queue=queue,
            on_progress=bar.update,
        )
    click.echo(
        f"job {result.job_id}: {result.paths} paths, {result.images} images, "
        f"{result.queued} queued in {len(result.batches)} batches, "
        f"{result.already_done} already classified by model version "
        f"{result.model_version_id}, {result.refused} refused, "
        f"{result.unreadable} unreadable"
    )
    if wait:
        wait_with_progress(result.job_id)


def wait_with_progress(job_id: int) -> None:
    """Show a progress bar until the job is done, then print its counts."""
    from imgq.db.engine import session_scope
    from imgq.db.jobs import job_counts
    from imgq.producer.embedded import wait_for_job

    with tqdm(desc=f"job {job_id}", unit=" images", file=sys.stderr) as bar:

        def show(finished: int, total: int) -> None:
            bar.total = total
            bar.update(finished - bar.n)

        wait_for_job(job_id, on_progress=show)
    with session_scope() as session:
        _print_counts(job_counts(session, job_id))


@click.command("status")
@click.argument("job_id", type=int)
@click.option("--wait", is_flag=True, help="Show a progress bar until the job ends.")
def status_command(job_id: int, wait: bool) -> None:
    """Show a job's counts: images, classified, failed, pending."""
    from imgq.db.engine import session_scope
    from imgq.db.jobs import job_counts

    if wait:
        wait_with_progress(job_id)
        return
    with session_scope() as session:
        _print_counts(job_counts(session, job_id))


@click.command("watch")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@labels_option
@model_option
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Ignore the files already in the folder at start.",
)
def watch_command(
    folder: str,
    labels_from_dirs: bool,
    model_reference: str | None,
    skip_existing: bool,
) -> None:
    """Keep submitting the image files that appear in FOLDER until stopped.

    A file is taken once it has stopped changing (IMGQ_WATCH_SETTLE seconds),
    each file once; files are grouped into one job per IMGQ_CHUNK_SIZE files
    or per IMGQ_WATCH_BATCH_WAIT seconds, whichever comes first.
    """
    from imgq.db.migrate import require_current
    from imgq.producer.submit import submit
    from imgq.producer.watch import FolderWatcher

    settings = get_settings()
    require_current()
    if not labels_from_dirs:
        labels_from_dirs = False

    def send(batch: list[Candidate]) -> None:
        result = submit(
            batch, source=f"watch {folder}", model_reference=model_reference
        )
        click.echo(f"job {result.job_id}: {result.queued} queued", err=True)

    watcher = FolderWatcher(Path(folder), settings, send, labels_from_dirs)
    if skip_existing:
        click.echo(f"skipping {watcher.skip_existing()} existing files", err=True)
    click.echo(f"watching {folder}; Ctrl-C stops", err=True)
    try:
        watcher.run()
    except KeyboardInterrupt:
        click.echo(f"stopped after {watcher.submitted_files} files", err=True)


@click.command("run", epilog=SOURCES_HELP)
@click.argument("sources", nargs=-1, required=True)
@labels_option
@model_option
def run_command(
    sources: tuple[str, ...], labels_from_dirs: bool, model_reference: str | None
) -> None:
    """Classify images on this machine with no server: submit, work, wait.

    Uses SQLite (or IMGQ_DATABASE_URL) and a queue in the data folder, starts
    a worker process, shows progress, and prints a summary when done.
    """
    import time

    from imgq.producer.embedded import run_embedded

    started = time.perf_counter()
    with tqdm(desc="classifying", unit=" images", file=sys.stderr) as bar:

        def show(finished: int, total: int) -> None:
            bar.total = total
            bar.update(finished - bar.n)
            if total and finished >= total:
                # the rate shown stays the classifying rate, not the shutdown's
                bar.close()

        result, counts = run_embedded(
            _candidates(sources, labels_from_dirs),
            source=" ".join(sources),
            model_reference=model_reference,
            on_progress=show,
        )
    seconds = time.perf_counter() - started
    _print_counts(counts)
    click.echo(
        f"model version {result.model_version_id}; {result.already_done} were "
        f"classified before; {seconds:.1f} s in all"
    )
    _print_label_summary(result.job_id)


def _print_label_summary(job_id: int) -> None:
    from sqlalchemy import func, select

    from imgq.db.engine import session_scope
    from imgq.db.schema import Failure, Image, Job, JobImage, Prediction

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        rows = session.execute(
            select(
                Prediction.label,
                func.count(),
                func.count().filter(Image.true_label == Prediction.label),
                func.count(Image.true_label),
            )
            .join(JobImage, JobImage.image_id == Prediction.image_id)
            .join(Image, Image.id == Prediction.image_id)
            .where(
                JobImage.job_id == job_id,
                Prediction.model_version_id == job.model_version_id,
            )
            .group_by(Prediction.label)
            .order_by(Prediction.label)
        ).all()
        failures = session.execute(
            select(Failure.kind, func.count())
            .where(Failure.job_id == job_id)
            .group_by(Failure.kind)
        ).all()
    labelled = sum(row[3] for row in rows)
    if labelled:
        right = sum(row[2] for row in rows)
        click.echo(
            f"accuracy on the {labelled} labelled images: {right / labelled:.4f}"
        )
    click.echo("predicted labels: " + ", ".join(f"{row[0]}: {row[1]}" for row in rows))
    for kind, count in failures:
        click.echo(f"failed ({kind}): {count}")


commands = [submit_command, status_command, watch_command, run_command]
