"""The reconciler: the last line of defence when the broker loses messages.

A job stays open while one of its batches is queued. If the broker loses a
batch's message (Redis restarted without its append-only file, a deleted
key, a producer that died between its commit and its send), nothing would
ever close the job. Every ``reconcile_interval`` seconds Celery beat runs
:func:`reconcile`: an open job with no activity (no batch queued or ended,
no row written) for ``reconcile_grace`` seconds gets its images that have
neither a prediction nor a failure queued again, in new batches; its old
open batches are closed as ``requeued``, keeping the count of images they
finished. A job that is being worked is never touched.

Re-queuing is safe because the work is idempotent: a message that was late
rather than lost ends in the same single row per image. It costs work, not
rows, so keep the grace above the visibility timeout and above the longest
time a job may wait behind others in the queue. TensorFlow is not imported
here: beat loads this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from celery import shared_task
from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from imgq.config import Settings, get_settings
from imgq.db.engine import get_engine, read_only, session_scope
from imgq.db.jobs import (
    BATCH_DONE,
    BATCH_QUEUED,
    BATCH_REQUEUED,
    QUEUED,
    SUBMITTING,
    finish_if_complete,
)
from imgq.db.schema import Batch, Failure, Job, JobImage, Prediction
from imgq.errors import QueueError
from imgq.producer.submit import send_batches
from imgq.worker.schedule import RECONCILE_TASK

log = logging.getLogger(__name__)

RECONCILED_JOB_STATES = (SUBMITTING, QUEUED)


@dataclass
class Requeue:
    """New batches of one job, committed and waiting to be sent."""

    job_id: int
    model_version_id: int
    queue: str
    batch_ids: list[int]
    image_ids: list[int]


@dataclass
class ReconcileResult:
    """What one reconciler run did."""

    jobs_checked: int = 0
    jobs_requeued: int = 0
    jobs_closed: int = 0
    images_requeued: int = 0
    batches_sent: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "jobs_checked": self.jobs_checked,
            "jobs_requeued": self.jobs_requeued,
            "jobs_closed": self.jobs_closed,
            "images_requeued": self.images_requeued,
            "batches_sent": len(self.batches_sent),
        }


def reconcile(
    *,
    grace: float | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> ReconcileResult:
    """Re-queue the unfinished images of every job idle for ``grace`` seconds."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    grace = settings.reconcile_grace if grace is None else grace
    cutoff = now - timedelta(seconds=grace)
    result = ReconcileResult()

    for job_id in _idle_jobs(cutoff):
        result.jobs_checked += 1
        with session_scope() as session:
            requeue = _reconcile_job(
                session, job_id, cutoff=cutoff, now=now, settings=settings
            )
            closed = requeue is None and finish_if_complete(session, job_id)
        if closed:
            result.jobs_closed += 1
            log.info("job=%d: closed, every image had its result", job_id)
        if requeue is not None:
            try:
                _send(requeue, settings)
            except QueueError as error:
                # the new batches are committed: the next run sends them again
                log.error("job=%d: %s", job_id, error)
                continue
            result.jobs_requeued += 1
            result.images_requeued += len(requeue.image_ids)
            result.batches_sent.extend(requeue.batch_ids)
    return result


def _idle_jobs(cutoff: datetime) -> list[int]:
    """Open jobs created before ``cutoff`` and with no activity since."""
    with session_scope(read_only(get_engine())) as session:
        open_jobs = session.scalars(
            select(Job.id)
            .where(Job.state.in_(RECONCILED_JOB_STATES), Job.created_at < cutoff)
            .order_by(Job.id)
        ).all()
        return [
            job_id for job_id in open_jobs if _last_activity(session, job_id) < cutoff
        ]


def _last_activity(session: Session, job_id: int) -> datetime:
    """When the job last changed: created, a batch queued or ended, a row written."""
    moments = session.execute(
        select(
            select(Job.created_at).where(Job.id == job_id).scalar_subquery(),
            select(func.max(Batch.created_at))
            .where(Batch.job_id == job_id)
            .scalar_subquery(),
            select(func.max(Batch.finished_at))
            .where(Batch.job_id == job_id)
            .scalar_subquery(),
            select(func.max(Prediction.created_at))
            .where(Prediction.job_id == job_id)
            .scalar_subquery(),
            select(func.max(Failure.created_at))
            .where(Failure.job_id == job_id)
            .scalar_subquery(),
        )
    ).one()
    return max(_aware(moment) for moment in moments if moment is not None)


def _reconcile_job(
    session: Session,
    job_id: int,
    *,
    cutoff: datetime,
    now: datetime,
    settings: Settings,
) -> Requeue | None:
    """Close a stale job's open batches and make new ones for what is left."""
    # the row lock keeps two reconcilers from re-queuing the same job twice
    job = session.scalars(
        select(Job).where(Job.id == job_id).with_for_update()
    ).one_or_none()
    if job is None or job.state not in RECONCILED_JOB_STATES:
        return None
    if _last_activity(session, job_id) >= cutoff:
        return None

    unfinished = _unfinished_images(session, job)
    open_batches = list(
        session.scalars(
            select(Batch)
            .where(Batch.job_id == job_id, Batch.state == BATCH_QUEUED)
            .order_by(Batch.id)
        )
    )
    _close_batches(open_batches, unfinished=len(unfinished), now=now)
    if job.state == SUBMITTING:
        # the producer died before it closed the submission
        _close_submission(session, job)
    if not unfinished:
        return None

    batch_ids = _new_batches(
        session, job_id, unfinished, chunk_size=settings.chunk_size, now=now
    )
    log.warning(
        "job=%d: %d images without a result and no activity since %s; re-queued "
        "in batches %s",
        job_id,
        len(unfinished),
        cutoff.isoformat(timespec="seconds"),
        ",".join(str(batch_id) for batch_id in batch_ids),
    )
    return Requeue(
        job_id=job_id,
        model_version_id=job.model_version_id,
        queue=job.queue or settings.fresh_queue,
        batch_ids=batch_ids,
        image_ids=unfinished,
    )


def _unfinished_images(session: Session, job: Job) -> list[int]:
    predicted = exists().where(
        Prediction.image_id == JobImage.image_id,
        Prediction.model_version_id == job.model_version_id,
    )
    failed = exists().where(
        Failure.job_id == job.id, Failure.image_id == JobImage.image_id
    )
    return list(
        session.scalars(
            select(JobImage.image_id)
            .where(JobImage.job_id == job.id, ~predicted, ~failed)
            .order_by(JobImage.image_id)
        )
    )


def _close_batches(batches: list[Batch], *, unfinished: int, now: datetime) -> None:
    """Mark open batches requeued; their counts keep the images they finished.

    Which images a batch held is known only to its message, so the finished
    images are spread over the batches in order; the job's total stays right.
    """
    finished = max(0, sum(batch.image_count for batch in batches) - unfinished)
    for batch in batches:
        batch.image_count = min(batch.image_count, finished)
        finished -= batch.image_count
        batch.state = BATCH_REQUEUED if unfinished else BATCH_DONE
        batch.finished_at = now


def _close_submission(session: Session, job: Job) -> None:
    members = session.scalar(select(func.count()).where(JobImage.job_id == job.id)) or 0
    path_failures = (
        session.scalar(
            select(func.count()).where(
                Failure.job_id == job.id, Failure.image_id.is_(None)
            )
        )
        or 0
    )
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(state=QUEUED, total_images=members + path_failures)
    )


def _new_batches(
    session: Session,
    job_id: int,
    image_ids: list[int],
    *,
    chunk_size: int,
    now: datetime,
) -> list[int]:
    batches = [
        Batch(
            job_id=job_id,
            image_count=len(image_ids[start : start + chunk_size]),
            created_at=now,
        )
        for start in range(0, len(image_ids), chunk_size)
    ]
    session.add_all(batches)
    session.flush()
    return [batch.id for batch in batches]


def _send(requeue: Requeue, settings: Settings) -> None:
    """Send the new batches; if that fails they wait for the next run."""
    send_batches(
        requeue.batch_ids,
        job_id=requeue.job_id,
        model_version_id=requeue.model_version_id,
        image_ids=requeue.image_ids,
        chunk_size=settings.chunk_size,
        queue=requeue.queue,
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@shared_task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_task() -> dict[str, int]:
    """The periodic run that Celery beat schedules every ``reconcile_interval``."""
    result = reconcile()
    if result.jobs_requeued or result.jobs_closed:
        log.warning("reconcile: %s", result.as_dict())
    return result.as_dict()
