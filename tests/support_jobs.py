"""Jobs for the reliability tests: images, submissions and the end-state check.

imgq's promise, checked by :meth:`EndState.check`: every image of a job ends
with exactly one prediction or one failure row, and the job ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sqlalchemy import distinct, func, select
from support import wait_until

from imgq.config import get_settings
from imgq.db.engine import get_engine, read_only, session_scope
from imgq.db.jobs import BATCH_QUEUED, DONE
from imgq.db.schema import Batch, Failure, Job, JobImage, Prediction
from imgq.producer.submit import SubmitResult
from imgq.worker.app import reset_app

JOB_TIMEOUT = 120.0

# ----------------------------------------------------------------- images


_DIGITS: list[tuple[Image.Image, int]] = []


def digit_image(index: int) -> tuple[Image.Image, int]:
    """A 28x28 greyscale digit of scikit-learn's set, and its label."""
    if not _DIGITS:
        from imgq.models.datasets import digit_images

        _DIGITS.extend(digit_images())
    image, label = _DIGITS[index % len(_DIGITS)]
    return image.copy(), label


def write_digit(path: Path, index: int) -> Path:
    """Digit number ``index`` as a PNG at ``path``, distinct from every other.

    The file carries its number in a text chunk, so two digits with the same
    pixels are still two images (content hash).
    """
    image, _ = digit_image(index)
    info = PngInfo()
    info.add_text("imgq-test", str(index))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG", pnginfo=info)
    return path


def digit_path(folder: Path, index: int) -> Path:
    """Where :func:`write_digits` puts digit ``index``: in its class subfolder."""
    _, label = digit_image(index)
    return folder / str(label) / f"digit-{index:06d}.png"


def write_digits(folder: Path, count: int, *, start: int = 0) -> list[Path]:
    """``count`` distinct digit PNGs in class subfolders."""
    return [
        write_digit(digit_path(folder, index), index)
        for index in range(start, start + count)
    ]


# ------------------------------------------------------------- end state


@dataclass(frozen=True)
class EndState:
    """Where a job's images stand, counted the way imgq promises them."""

    images: int
    predicted: int
    failed: int
    both: int
    lost: int
    duplicated: int
    job_state: str

    def check(self) -> None:
        """Every image has exactly one prediction or one failure, and the job ended."""
        assert self.lost == 0, f"{self.lost} images have no result: {self}"
        assert self.duplicated == 0, f"{self.duplicated} duplicate rows: {self}"
        assert self.both == 0, f"{self.both} images predicted and failed: {self}"
        assert self.predicted + self.failed == self.images, self
        assert self.job_state == DONE, self


def end_state(job_id: int, url: str | None = None) -> EndState:
    """Count the job's images, their predictions, failures and duplicates."""
    with session_scope(read_only(get_engine(url))) as session:
        job = session.get(Job, job_id)
        assert job is not None, f"no job {job_id}"
        members = select(JobImage.image_id).where(JobImage.job_id == job_id)
        model = job.model_version_id
        predictions = select(Prediction.image_id).where(
            Prediction.model_version_id == model, Prediction.image_id.in_(members)
        )
        failures = select(Failure.image_id).where(
            Failure.job_id == job_id, Failure.image_id.in_(members)
        )
        images = session.scalar(select(func.count()).select_from(members.subquery()))
        predicted_rows = session.scalar(
            select(func.count()).select_from(predictions.subquery())
        )
        predicted = session.scalar(
            select(func.count(distinct(Prediction.image_id))).where(
                Prediction.model_version_id == model, Prediction.image_id.in_(members)
            )
        )
        failure_rows = session.scalar(
            select(func.count()).select_from(failures.subquery())
        )
        failed = session.scalar(
            select(func.count(distinct(Failure.image_id))).where(
                Failure.job_id == job_id, Failure.image_id.in_(members)
            )
        )
        both = session.scalar(
            select(func.count()).where(
                JobImage.job_id == job_id,
                JobImage.image_id.in_(predictions),
                JobImage.image_id.in_(failures),
            )
        )
        lost = session.scalar(
            select(func.count()).where(
                JobImage.job_id == job_id,
                JobImage.image_id.not_in(predictions),
                JobImage.image_id.not_in(failures),
            )
        )
        state = job.state
    duplicated = (
        (predicted_rows or 0) - (predicted or 0) + (failure_rows or 0) - (failed or 0)
    )
    return EndState(
        images=int(images or 0),
        predicted=int(predicted or 0),
        failed=int(failed or 0),
        both=int(both or 0),
        lost=int(lost or 0),
        duplicated=int(duplicated),
        job_state=state,
    )


def wait_for_done(job_id: int, *, timeout: float = JOB_TIMEOUT) -> None:
    """Poll the database until the job is done."""

    def done() -> bool:
        with session_scope(read_only(get_engine())) as session:
            job = session.get(Job, job_id)
            return job is not None and job.state == DONE

    wait_until(done, timeout=timeout, what=f"job={job_id} to be done", interval=0.25)


def job_rows_written(job_id: int) -> int:
    """Predictions and failures written for the job so far."""
    with session_scope(read_only(get_engine())) as session:
        predictions = session.scalar(
            select(func.count()).where(Prediction.job_id == job_id)
        )
        failures = session.scalar(select(func.count()).where(Failure.job_id == job_id))
    return int(predictions or 0) + int(failures or 0)


def batch_attempts(job_id: int, url: str | None = None) -> dict[int, int]:
    """Attempts per batch of a job."""
    with session_scope(read_only(get_engine(url))) as session:
        rows = session.execute(
            select(Batch.id, Batch.attempts).where(Batch.job_id == job_id)
        ).tuples()
        return dict(rows.all())


# ------------------------------------------------------------- submitting


def submit_sources(*sources: Path | str, labels_from_dirs: bool = True) -> SubmitResult:
    """Submit folders or files the way ``imgq submit`` does, in this process."""
    from imgq.producer.paths import iter_candidates
    from imgq.producer.submit import submit

    reset_app()
    settings = get_settings()
    names = [str(source) for source in sources]
    candidates = iter_candidates(
        names, roots=settings.resolved_allowed_roots, labels_from_dirs=labels_from_dirs
    )
    return submit(candidates, source=" ".join(names), settings=settings)


def broker_client(url: str | None = None) -> redis.Redis:
    """A client of the broker the settings point at."""
    return redis.Redis.from_url(url or get_settings().resolved_broker_url)


def queued_messages(queue: str | None = None, url: str | None = None) -> int:
    """Messages waiting in a queue (the fresh queue by default)."""
    return int(broker_client(url).llen(queue or get_settings().fresh_queue))


@contextlib.contextmanager
def fresh_celery_app() -> Iterator[None]:
    """A Celery app built from this test's settings; its queues deleted after."""
    reset_app()
    try:
        yield
    finally:
        settings = get_settings()
        names = (settings.fresh_queue, settings.background_queue)
        keys = [*names, *(f"_kombu.binding.{name}" for name in names)]
        with contextlib.suppress(redis.RedisError):
            broker_client().delete(*keys)
        reset_app()


def batch_in_flight(job_id: int) -> int:
    """Wait until a batch of the job has written rows but not finished."""
    wait_until(lambda: job_rows_written(job_id) > 0, timeout=120, what="the first rows")
    with session_scope() as session:
        started = session.scalars(
            select(Batch.id).where(
                Batch.job_id == job_id,
                Batch.state == BATCH_QUEUED,
                Batch.attempts > 0,
            )
        ).all()
    assert len(started) == 1, f"expected one batch in flight, found {started}"
    return started[0]


def batch_state(batch_id: int) -> str:
    with session_scope() as session:
        state = session.scalar(select(Batch.state).where(Batch.id == batch_id))
    assert state is not None
    return state
