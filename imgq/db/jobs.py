"""Job bookkeeping shared by the producer, the worker and the reconciler.

A job is done when none of its batches is still queued. The producer and the
worker both call :func:`finish_if_complete` after their own commit, so
whichever commits last sees the whole picture and closes the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session

from imgq.db.engine import session_scope
from imgq.db.schema import Batch, Failure, Job, JobImage, Prediction

SUBMITTING = "submitting"
QUEUED = "queued"
DONE = "done"

BATCH_QUEUED = "queued"
BATCH_DONE = "done"
BATCH_FAILED = "failed"
# closed by the reconciler, its unfinished images queued again in new batches
BATCH_REQUEUED = "requeued"
OPEN_JOB_STATES = (QUEUED,)


@dataclass(frozen=True)
class JobCounts:
    """Where a job's images stand."""

    job_id: int
    state: str
    total: int
    done: int
    failed: int

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done - self.failed)


def finish_if_complete(session: Session, job_id: int) -> bool:
    """Mark the job done when it is queued and no batch of it is open."""
    open_batch = exists().where(
        and_(Batch.job_id == job_id, Batch.state == BATCH_QUEUED)
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(OPEN_JOB_STATES), ~open_batch)
        .values(state=DONE, finished_at=datetime.now(UTC))
    )
    return bool(getattr(result, "rowcount", 0))


def close_batch(job_id: int, batch_id: int, state: str) -> None:
    """Record a batch as ended, then close its job if it was the last one.

    Two transactions on purpose: under READ COMMITTED two workers ending the
    last two batches in one transaction each could each see the other's batch
    still open, and neither would close the job.
    """
    with session_scope() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(state=state, finished_at=datetime.now(UTC))
        )
    with session_scope() as session:
        finish_if_complete(session, job_id)


def job_progress(session: Session, job_id: int) -> tuple[int, int]:
    """(images finished, images queued) from the batches: cheap enough to poll."""
    finished = func.coalesce(
        func.sum(Batch.image_count).filter(Batch.state != BATCH_QUEUED), 0
    )
    total = func.coalesce(func.sum(Batch.image_count), 0)
    row = session.execute(select(finished, total).where(Batch.job_id == job_id)).one()
    return int(row[0]), int(row[1])


def job_counts(session: Session, job_id: int) -> JobCounts:
    """Exact counts: images with a prediction, with a failure, and in all."""
    job = session.get(Job, job_id)
    if job is None:
        from imgq.errors import InputError

        raise InputError(f"no job {job_id}")
    predicted = exists().where(
        Prediction.image_id == JobImage.image_id,
        Prediction.model_version_id == job.model_version_id,
    )
    failed = exists().where(
        Failure.job_id == job_id, Failure.image_id == JobImage.image_id
    )
    members = select(
        func.count(),
        func.count().filter(predicted),
        func.count().filter(~predicted & failed),
    ).where(JobImage.job_id == job_id)
    total, done, failed_images = session.execute(members).one()
    path_failures = session.scalar(
        select(func.count()).where(Failure.job_id == job_id, Failure.image_id.is_(None))
    )
    return JobCounts(
        job_id=job_id,
        state=job.state,
        total=int(total) + int(path_failures or 0),
        done=int(done),
        failed=int(failed_images) + int(path_failures or 0),
    )
