"""Re-inference: queue the stored images that a model version has not answered.

The images are found with set-based queries that stream: keyset pages over
``images.id`` (``id > last ORDER BY id LIMIT chunk_size``), each keeping the
images with no prediction from the version (``NOT EXISTS``). Each page
becomes one batch of a job of kind ``reinfer`` on the background queue, so
that a fresh job submitted meanwhile is served first; ``imgq status`` follows
it like any other job. Memory depends on the chunk size, not on the table.

A run that finds nothing creates no job, so running it twice does nothing
the second time. An image is not queued again when

- the version has a failure row for it (a missing or corrupt file; with
  ``retry_failed`` those are queued too), or
- it belongs to an open job (one with a batch still queued) of the same
  version, such as a re-inference still running.

Two runs started at the same moment may both queue an image; the worker
skips an image that has a prediction already, so that costs a lookup, not a
second row. TensorFlow is not imported here: beat loads this module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, aliased

from imgq.config import Settings, get_settings
from imgq.db import bulk
from imgq.db.engine import get_engine, read_only, session_scope
from imgq.db.jobs import BATCH_QUEUED
from imgq.db.schema import Batch, Failure, Image, Job, JobImage, Prediction
from imgq.errors import InputError
from imgq.models import registry
from imgq.producer.submit import (
    close_submission,
    create_job,
    enqueue_rows,
    send_batches,
)
from imgq.worker.schedule import REINFER_TASK

log = logging.getLogger(__name__)

KIND_REINFER = "reinfer"


@dataclass(frozen=True)
class Selection:
    """The images a re-inference considers, for one model version."""

    model_version_id: int
    job_id: int | None = None
    since: datetime | None = None
    retry_failed: bool = False

    def describe(self) -> str:
        """A one-line account of the selection, kept as the job's source."""
        parts = [f"reinfer with model version {self.model_version_id}"]
        if self.job_id is not None:
            parts.append(f"images of job {self.job_id}")
        if self.since is not None:
            parts.append(f"images stored since {self.since.isoformat()}")
        if self.retry_failed:
            parts.append("failed ones again")
        return "; ".join(parts)


@dataclass
class ReinferResult:
    """What one re-inference queued; ``job_id`` is None when nothing was missing."""

    model_version_id: int
    job_id: int | None = None
    queued: int = 0
    batches: list[int] = field(default_factory=list)


def parse_since(text: str) -> datetime:
    """A date (``2024-05-01``) or ISO time as UTC; a time without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise InputError(
            f"since={text!r} is not a date (2024-05-01) or an ISO time"
        ) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def resolve_selection(
    session: Session,
    *,
    model_reference: str,
    job_id: int | None = None,
    since: datetime | None = None,
    retry_failed: bool = False,
) -> Selection:
    """The selection for a version number or alias; InputError for an unknown job."""
    version = registry.resolve(session, model_reference)
    if job_id is not None and session.get(Job, job_id) is None:
        raise InputError(f"no job {job_id}")
    return Selection(
        model_version_id=version.id,
        job_id=job_id,
        since=since,
        retry_failed=retry_failed,
    )


def open_jobs(model_version_id: int) -> Select[int]:
    """Ids of the version's jobs that still have a batch queued."""
    return select(Job.id).where(
        Job.model_version_id == model_version_id,
        exists().where(Batch.job_id == Job.id, Batch.state == BATCH_QUEUED),
    )


def missing_statement(
    selection: Selection, *, after_id: int, limit: int
) -> Select[int]:
    """One keyset page: the next ``limit`` image ids above ``after_id`` to queue."""
    version = selection.model_version_id
    statement = select(Image.id)
    if selection.job_id is not None:
        # driven by the job's key (job_id, image_id), not by the whole table
        statement = statement.join(JobImage, JobImage.image_id == Image.id).where(
            JobImage.job_id == selection.job_id
        )
    member = aliased(JobImage)
    queued_elsewhere = select(member.image_id).where(
        member.image_id == Image.id, member.job_id.in_(open_jobs(version))
    )
    conditions = [
        Image.id > after_id,
        ~exists().where(
            Prediction.image_id == Image.id, Prediction.model_version_id == version
        ),
        ~queued_elsewhere.exists(),
    ]
    if not selection.retry_failed:
        conditions.append(
            ~exists().where(
                Failure.image_id == Image.id, Failure.model_version_id == version
            )
        )
    if selection.since is not None:
        conditions.append(Image.created_at >= selection.since)
    return statement.where(*conditions).order_by(Image.id).limit(limit)


def iter_missing(selection: Selection, *, chunk_size: int) -> Iterator[list[int]]:
    """Pages of at most ``chunk_size`` image ids to queue, in id order."""
    after_id = 0
    while True:
        with session_scope(read_only(get_engine())) as session:
            page = list(
                session.scalars(
                    missing_statement(selection, after_id=after_id, limit=chunk_size)
                )
            )
        if page:
            yield page
        if len(page) < chunk_size:
            return
        after_id = page[-1]


def count_missing(selection: Selection, *, chunk_size: int) -> int:
    """How many images a re-inference of ``selection`` would queue now."""
    return sum(len(page) for page in iter_missing(selection, chunk_size=chunk_size))


def reinfer(
    *,
    model_reference: str | None = None,
    job_id: int | None = None,
    since: datetime | None = None,
    retry_failed: bool = False,
    settings: Settings | None = None,
) -> ReinferResult:
    """Queue the selected images without an answer from the version, as one job."""
    settings = settings or get_settings()
    with session_scope() as session:
        selection = resolve_selection(
            session,
            model_reference=model_reference or settings.model,
            job_id=job_id,
            since=since,
            retry_failed=retry_failed,
        )
    result = ReinferResult(model_version_id=selection.model_version_id)
    for page in iter_missing(selection, chunk_size=settings.chunk_size):
        _queue_page(page, selection=selection, result=result, settings=settings)

    if result.job_id is None:
        log.info("%s: nothing to re-infer, no job created", selection.describe())
        return result
    close_submission(result.job_id, total=result.queued, queued=result.queued)
    log.info(
        "job=%d: %s: %d images in %d batches on %s",
        result.job_id,
        selection.describe(),
        result.queued,
        len(result.batches),
        settings.background_queue,
    )
    return result


def _queue_page(
    page: list[int], *, selection: Selection, result: ReinferResult, settings: Settings
) -> None:
    """Record one page as the job's batch (creating the job first), then send it."""
    with session_scope() as session:
        job_id = result.job_id
        if job_id is None:
            job_id = create_job(
                session,
                model_version_id=selection.model_version_id,
                source=selection.describe(),
                kind=KIND_REINFER,
                queue=settings.background_queue,
            ).id
        bulk.insert_ignoring_duplicates(
            session,
            JobImage,
            [{"job_id": job_id, "image_id": image_id} for image_id in page],
        )
        batch_ids = enqueue_rows(
            session, job_id=job_id, image_ids=page, chunk_size=settings.chunk_size
        )
    result.job_id = job_id
    result.queued += len(page)
    result.batches.extend(batch_ids)
    send_batches(
        batch_ids,
        job_id=job_id,
        model_version_id=selection.model_version_id,
        image_ids=page,
        chunk_size=settings.chunk_size,
        queue=settings.background_queue,
    )


@shared_task(name=REINFER_TASK)
def reinfer_task(
    *,
    model: str | None = None,
    job: int | None = None,
    since: str | None = None,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Re-infer on a worker: the task beat sends on IMGQ_REINFER_SCHEDULE."""
    result = reinfer(
        model_reference=model,
        job_id=job,
        since=parse_since(since) if since else None,
        retry_failed=retry_failed,
    )
    return {
        "job_id": result.job_id,
        "model_version_id": result.model_version_id,
        "queued": result.queued,
    }
