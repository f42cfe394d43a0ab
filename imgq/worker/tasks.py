"""The classify task: one chunk of image ids in, one row per image out.

Delivery is at least once (late acks, reject on worker lost), so the task is
idempotent: images that already have a prediction from the model version are
skipped, and every write is ``INSERT ... ON CONFLICT DO NOTHING`` on the
unique (image, model version) key. Each start of a chunk counts as an
attempt in its batch row; a chunk that has started ``max_attempts`` times
without finishing (a file that crashes the decoder, a model that runs out of
memory) gets failure rows instead of another try.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from imgq.config import get_settings
from imgq.db import bulk, predictions
from imgq.db.engine import session_scope
from imgq.db.jobs import BATCH_DONE, BATCH_FAILED, close_batch
from imgq.db.schema import Batch, Failure, Image, Prediction
from imgq.ops import metrics
from imgq.worker import runtime
from imgq.worker.app import CLASSIFY_TASK
from imgq.worker.inference import BatchResult

log = logging.getLogger(__name__)

KIND_BATCH_FAILED = "batch_failed"
DATABASE_ERRORS = (OperationalError, DBAPIError)


def retry_delay(retries: int) -> float:
    """Exponential backoff from the settings: 2, 4, 8 ... seconds, capped."""
    settings = get_settings()
    return float(min(settings.retry_backoff_max, settings.retry_backoff * 2**retries))


@shared_task(bind=True, name=CLASSIFY_TASK, max_retries=None, acks_late=True)
def classify_chunk(
    self: Task,
    *,
    job_id: int,
    batch_id: int,
    model_version_id: int,
    image_ids: list[int],
) -> dict[str, int]:
    """Classify the images of one batch and store one row per image."""
    settings = get_settings()
    try:
        attempt = _start_attempt(batch_id)
    except DATABASE_ERRORS as error:
        raise _retry_database(self, job_id, batch_id, error) from error

    if attempt > settings.max_attempts:
        return _give_up(job_id, batch_id, model_version_id, image_ids)
    try:
        counts = _classify(job_id, batch_id, model_version_id, image_ids)
    except DATABASE_ERRORS as error:
        raise _retry_database(self, job_id, batch_id, error) from error
    except Retry:
        raise
    except Exception as error:
        log.exception("job=%d batch=%d: attempt %d failed", job_id, batch_id, attempt)
        _record_error(batch_id, error)
        raise self.retry(countdown=retry_delay(attempt - 1), exc=error) from error
    return counts


def _retry_database(self: Task, job_id: int, batch_id: int, error: Exception) -> Retry:
    retries = self.request.retries
    delay = retry_delay(retries)
    log.warning(
        "job=%d batch=%d: database unavailable (%s); retry %d in %.0f s",
        job_id,
        batch_id,
        type(error).__name__,
        retries + 1,
        delay,
    )
    return self.retry(countdown=delay, exc=error)


def _start_attempt(batch_id: int) -> int:
    with session_scope() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(attempts=Batch.attempts + 1)
        )
        attempts = session.scalar(select(Batch.attempts).where(Batch.id == batch_id))
    return int(attempts or 1)


def _record_error(batch_id: int, error: Exception) -> None:
    try:
        with session_scope() as session:
            session.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(last_error=f"{type(error).__name__}: {error}"[:4000])
            )
    except DATABASE_ERRORS:
        log.warning("batch=%d: could not record its error", batch_id)


def _classify(
    job_id: int, batch_id: int, model_version_id: int, image_ids: list[int]
) -> dict[str, int]:
    classifier = runtime.classifier_for(model_version_id)
    items = _items_without_prediction(model_version_id, image_ids)
    answered = set(image_ids) - {image_id for image_id, _ in items}
    if answered:
        # answered for another job meanwhile: still one of this job's results
        with session_scope() as session:
            predictions.lock_images(session, list(answered), nowait=True)
            predictions.tally_memberships(
                session, model_version_id=model_version_id, image_ids=list(answered)
            )
    predicted = failed = 0
    # One write in flight while the model runs the next batch; waiting for it
    # before the next submit keeps memory bounded and surfaces its errors.
    with ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        in_flight: Future[None] | None = None
        for result in classifier.classify(items):
            if in_flight is not None:
                in_flight.result()
            in_flight = writer.submit(
                _write_and_log,
                result,
                job_id=job_id,
                batch_id=batch_id,
                model_version_id=model_version_id,
                class_names=classifier.class_names,
            )
            predicted += len(result.image_ids)
            failed += len(result.failures)
        if in_flight is not None:
            in_flight.result()

    close_batch(job_id, batch_id, BATCH_DONE)
    skipped = len(image_ids) - len(items)
    return {"predicted": predicted, "failed": failed, "skipped": skipped}


def _write_and_log(
    result: BatchResult,
    *,
    job_id: int,
    batch_id: int,
    model_version_id: int,
    class_names: list[str],
) -> None:
    started = time.perf_counter()
    _write(
        result,
        job_id=job_id,
        batch_id=batch_id,
        model_version_id=model_version_id,
        class_names=class_names,
    )
    write_ms = (time.perf_counter() - started) * 1000
    log.info(
        "job=%d batch=%d: %d images, %d failed, decode %.1f ms, predict %.1f ms, "
        "write %.1f ms",
        job_id,
        batch_id,
        len(result.image_ids) + len(result.failures),
        len(result.failures),
        result.decode_ms,
        result.predict_ms,
        write_ms,
    )
    metrics.observe_batch(result, write_ms=write_ms)


def _items_without_prediction(
    model_version_id: int, image_ids: list[int]
) -> list[tuple[int, str]]:
    """(id, path) of the images still to classify, in the message's order."""
    with session_scope() as session:
        done = set(
            session.scalars(
                select(Prediction.image_id).where(
                    Prediction.model_version_id == model_version_id,
                    Prediction.image_id.in_(image_ids),
                )
            )
        )
        paths = dict(
            session.execute(select(Image.id, Image.path).where(Image.id.in_(image_ids)))
            .tuples()
            .all()
        )
    return [
        (image_id, paths[image_id])
        for image_id in dict.fromkeys(image_ids)
        if image_id not in done and image_id in paths
    ]


def _write(
    result: BatchResult,
    *,
    job_id: int,
    batch_id: int,
    model_version_id: int,
    class_names: list[str],
) -> None:
    """One transaction per forward batch: its predictions and its failures."""
    now = datetime.now(UTC)
    batch_images = len(result.image_ids) + len(result.failures)
    label_indexes = result.probabilities.argmax(axis=1)
    confidences = result.probabilities.max(axis=1)
    prediction_rows: list[dict[str, Any]] = [
        {
            "image_id": image_id,
            "model_version_id": model_version_id,
            "job_id": job_id,
            "batch_id": batch_id,
            "label": class_names[int(label_index)],
            "label_index": int(label_index),
            "confidence": float(confidence),
            "probabilities": [round(float(p), 6) for p in probabilities],
            "batch_images": batch_images,
            "decode_ms": result.decode_ms,
            "predict_ms": result.predict_ms,
            "created_at": now,
        }
        for image_id, label_index, confidence, probabilities in zip(
            result.image_ids,
            label_indexes,
            confidences,
            result.probabilities,
            strict=True,
        )
    ]
    failures = [
        {
            "job_id": job_id,
            "image_id": image_id,
            "model_version_id": model_version_id,
            "path": path,
            "kind": kind,
            "message": message,
            "attempts": 1,
            "created_at": now,
        }
        for image_id, path, kind, message in result.failures
    ]
    with session_scope() as session:
        predictions.record(session, prediction_rows)
        bulk.insert_ignoring_duplicates(session, Failure, failures)


def _give_up(
    job_id: int, batch_id: int, model_version_id: int, image_ids: list[int]
) -> dict[str, int]:
    """Record a failure for every image of the batch still without a prediction."""
    settings = get_settings()
    items = _items_without_prediction(model_version_id, image_ids)
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        reason = (batch.last_error if batch else None) or "the worker died"
        message = f"gave up after {settings.max_attempts} attempts: {reason}"
        bulk.insert_ignoring_duplicates(
            session,
            Failure,
            [
                {
                    "job_id": job_id,
                    "image_id": image_id,
                    "model_version_id": model_version_id,
                    "path": path,
                    "kind": KIND_BATCH_FAILED,
                    "message": message,
                    "attempts": settings.max_attempts,
                }
                for image_id, path in items
            ],
        )
    close_batch(job_id, batch_id, BATCH_FAILED)
    log.error("job=%d batch=%d: %s (%d images)", job_id, batch_id, message, len(items))
    metrics.count_failures(KIND_BATCH_FAILED, len(items))
    return {"predicted": 0, "failed": len(items), "skipped": 0}
