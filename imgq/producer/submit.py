"""Recording a job, registering its images and queueing chunks of image ids.

The producer works in chunks of ``chunk_size`` paths: it hashes the files of
a chunk in threads, upserts the images by content hash (the same bytes are
one image, whatever their path), links them to the job, and queues the ones
that have no prediction from the job's model version yet. Memory depends on
the chunk size, not on the number of paths.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imgq.config import Settings, get_settings
from imgq.db import bulk, predictions
from imgq.db.engine import session_scope
from imgq.db.jobs import QUEUED, SUBMITTING, finish_if_complete
from imgq.db.schema import Batch, Failure, Image, Job, JobImage, Prediction
from imgq.errors import InputError, QueueError
from imgq.models import registry
from imgq.models.preprocessing import KIND_MISSING, KIND_UNREADABLE
from imgq.producer.paths import Candidate
from imgq.worker.app import CLASSIFY_TASK, get_app

log = logging.getLogger(__name__)

KIND_REFUSED = "refused"
HASH_THREADS = 8
# files hashed per thread task
HASH_GROUP = 64


@dataclass
class SubmitResult:
    """What one submission did."""

    job_id: int
    model_version_id: int
    paths: int = 0
    images: int = 0
    queued: int = 0
    already_done: int = 0
    refused: int = 0
    unreadable: int = 0
    batches: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Hashed:
    candidate: Candidate
    content_hash: str | None = None
    size: int = 0
    failure_kind: str | None = None
    failure_message: str | None = None


def create_job(
    session: Session, *, model_version_id: int, source: str, kind: str, queue: str
) -> Job:
    """A new job in state ``submitting``; flushed, so it has its id."""
    job = Job(
        kind=kind,
        model_version_id=model_version_id,
        source=source[:2000],
        state=SUBMITTING,
        queue=queue,
    )
    session.add(job)
    session.flush()
    return job


def submit(
    candidates: Iterable[Candidate],
    *,
    source: str,
    model_reference: str | None = None,
    queue: str | None = None,
    settings: Settings | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SubmitResult:
    """Register every candidate path as part of a new job and queue its images."""
    settings = settings or get_settings()
    queue = queue or settings.fresh_queue
    # a refused or unreadable source raises here, before there is a job
    chunks = _chunks(candidates, settings.chunk_size)
    first = next(chunks, [])
    with session_scope() as session:
        version = registry.resolve(session, model_reference or settings.model)
        job = create_job(
            session,
            model_version_id=version.id,
            source=source,
            kind="submit",
            queue=queue,
        )
        result = SubmitResult(job_id=job.id, model_version_id=version.id)
    log.info("job=%d: submitting to model version %d", result.job_id, version.id)

    try:
        with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="hash") as pool:
            for chunk in chain([first] if first else [], chunks):
                hashed = _hash_files(pool, chunk)
                _register_chunk(hashed, result=result, queue=queue, settings=settings)
                if on_progress:
                    on_progress(len(chunk))
    except InputError:
        # a later source was refused: the job keeps what came before it
        close_submission(
            result.job_id,
            total=result.images + result.refused + result.unreadable,
            queued=result.queued,
        )
        raise

    close_submission(
        result.job_id,
        total=result.images + result.refused + result.unreadable,
        queued=result.queued,
    )
    log.info(
        "job=%d: %d paths, %d images, %d queued, %d already done, %d refused, "
        "%d unreadable",
        result.job_id,
        result.paths,
        result.images,
        result.queued,
        result.already_done,
        result.refused,
        result.unreadable,
    )
    return result


def close_submission(job_id: int, *, total: int, queued: int) -> None:
    """Move the job from submitting to queued, or to done if nothing is left."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.total_images = total
        job.queued_images = queued
        job.state = QUEUED
    with session_scope() as session:
        finish_if_complete(session, job_id)


def _chunks(items: Iterable[Candidate], size: int) -> Iterator[list[Candidate]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _hash_files(pool: ThreadPoolExecutor, chunk: list[Candidate]) -> list[_Hashed]:
    """The files of ``chunk`` hashed in the pool's threads, in order."""
    # one task per group, not per file: for small files a future per file
    # costs more than hashing the file
    groups = [
        chunk[start : start + HASH_GROUP] for start in range(0, len(chunk), HASH_GROUP)
    ]
    hashed: list[_Hashed] = []
    for group in pool.map(_hash_group, groups):
        hashed.extend(group)
    return hashed


def _hash_group(candidates: list[Candidate]) -> list[_Hashed]:
    return [_hash_file(candidate) for candidate in candidates]


def _hash_file(candidate: Candidate) -> _Hashed:
    if candidate.refused:
        return _Hashed(
            candidate, failure_kind=KIND_REFUSED, failure_message=candidate.refused
        )
    digest = hashlib.sha256()
    try:
        with open(candidate.path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return _Hashed(
            candidate,
            failure_kind=KIND_MISSING,
            failure_message=f"no such file: {candidate.path}",
        )
    except OSError as error:
        return _Hashed(
            candidate,
            failure_kind=KIND_UNREADABLE,
            failure_message=f"cannot read {candidate.path}: {error}",
        )
    return _Hashed(candidate, content_hash=digest.hexdigest(), size=size)


def _register_chunk(
    hashed: list[_Hashed], *, result: SubmitResult, queue: str, settings: Settings
) -> None:
    result.paths += len(hashed)
    readable: dict[str, _Hashed] = {}
    failures: list[dict[str, Any]] = []
    for item in hashed:
        if item.content_hash is None:
            failures.append(_path_failure(item, result))
            if item.failure_kind == KIND_REFUSED:
                log.warning("job=%d: refused %s", result.job_id, item.failure_message)
                result.refused += 1
            else:
                log.warning("job=%d: %s", result.job_id, item.failure_message)
                result.unreadable += 1
        else:
            # the same content twice in a chunk is one image; the last path wins
            readable[item.content_hash] = item

    with session_scope() as session:
        image_ids = _upsert_images(session, list(readable.values()))
        bulk.insert_ignoring_duplicates(
            session,
            JobImage,
            [{"job_id": result.job_id, "image_id": image_id} for image_id in image_ids],
        )
        bulk.insert_ignoring_duplicates(session, Failure, failures)
        # images answered before are results of this job at once
        predictions.tally_memberships(
            session,
            model_version_id=result.model_version_id,
            image_ids=image_ids,
            job_id=result.job_id,
        )
        todo = _without_prediction(session, image_ids, result.model_version_id)
        batch_ids = enqueue_rows(
            session,
            job_id=result.job_id,
            image_ids=todo,
            chunk_size=settings.chunk_size,
        )
    result.images += len(image_ids)
    result.queued += len(todo)
    result.already_done += len(image_ids) - len(todo)
    result.batches.extend(batch_ids)
    send_batches(
        batch_ids,
        job_id=result.job_id,
        model_version_id=result.model_version_id,
        image_ids=todo,
        chunk_size=settings.chunk_size,
        queue=queue,
    )


def _path_failure(item: _Hashed, result: SubmitResult) -> dict[str, Any]:
    return {
        "job_id": result.job_id,
        "image_id": None,
        "model_version_id": result.model_version_id,
        "path": item.candidate.path,
        "kind": item.failure_kind,
        "message": item.failure_message,
        "attempts": 0,
    }


def _upsert_images(session: Session, items: list[_Hashed]) -> list[int]:
    """Image ids for ``items``, creating the images that are new."""
    if not items:
        return []
    rows = [
        {
            "content_hash": item.content_hash,
            "path": item.candidate.path,
            "true_label": item.candidate.true_label,
            "size_bytes": item.size,
        }
        for item in items
    ]
    bulk.upsert(
        session,
        Image,
        rows,
        key=["content_hash"],
        update={
            # the newest path is the one most likely to still exist
            "path": lambda excluded: excluded.path,
            "true_label": lambda excluded: _coalesce(
                excluded.true_label, Image.true_label
            ),
        },
    )
    hashes = [item.content_hash for item in items if item.content_hash]
    found = dict(
        session.execute(
            select(Image.content_hash, Image.id).where(Image.content_hash.in_(hashes))
        )
        .tuples()
        .all()
    )
    # a label given now may be new to images answered before
    predictions.follow_true_labels(
        session,
        [
            found[item.content_hash]
            for item in items
            if item.content_hash and item.candidate.true_label is not None
        ],
    )
    return [found[content_hash] for content_hash in hashes]


def _coalesce(first: Any, second: Any) -> Any:
    return func.coalesce(first, second)


def _without_prediction(
    session: Session, image_ids: list[int], model_version_id: int
) -> list[int]:
    if not image_ids:
        return []
    done = set(
        session.scalars(
            select(Prediction.image_id).where(
                Prediction.model_version_id == model_version_id,
                Prediction.image_id.in_(image_ids),
            )
        )
    )
    return [image_id for image_id in image_ids if image_id not in done]


def enqueue_rows(
    session: Session, *, job_id: int, image_ids: list[int], chunk_size: int
) -> list[int]:
    """Batch rows for ``image_ids`` in chunks; flushed, so they have ids."""
    batches = [
        Batch(job_id=job_id, image_count=len(image_ids[start : start + chunk_size]))
        for start in range(0, len(image_ids), chunk_size)
    ]
    session.add_all(batches)
    session.flush()
    return [batch.id for batch in batches]


def send_batches(
    batch_ids: list[int],
    *,
    job_id: int,
    model_version_id: int,
    image_ids: list[int],
    chunk_size: int,
    queue: str,
) -> None:
    """Send one message per batch; call after the batch rows are committed."""
    app = get_app()
    try:
        with app.producer_or_acquire() as producer:
            for number, batch_id in enumerate(batch_ids):
                chunk = image_ids[number * chunk_size : (number + 1) * chunk_size]
                app.send_task(
                    CLASSIFY_TASK,
                    kwargs={
                        "job_id": job_id,
                        "batch_id": batch_id,
                        "model_version_id": model_version_id,
                        "image_ids": chunk,
                    },
                    queue=queue,
                    routing_key=queue,
                    producer=producer,
                )
    except Exception as error:
        # kombu raises its own and the socket library's errors here
        raise QueueError(
            f"job={job_id}: cannot queue batches on {app.conf.broker_url}: {error}; "
            "the job's images stay registered and 'imgq reconcile' re-queues them"
        ) from error
