"""Known rows for the re-inference tests, and the messages waiting in Redis."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from conftest import REDIS_URL
from sqlalchemy import func, select, update

from imgq.config import Settings
from imgq.db import predictions
from imgq.db.engine import session_scope
from imgq.db.jobs import BATCH_DONE, QUEUED, finish_if_complete
from imgq.db.schema import (
    Batch,
    Image,
    Job,
    JobImage,
    ModelAlias,
    ModelVersion,
)
from imgq.models.registry import file_sha256
from imgq.worker.app import CLASSIFY_TASK

DAY_ONE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def queued_messages(queue: str) -> list[tuple[str, dict[str, Any]]]:
    """(task name, kwargs) of every message waiting on a Redis queue, oldest first."""
    client = redis.Redis.from_url(REDIS_URL)
    messages = []
    # kombu pushes on the left and pops on the right
    for raw in reversed(client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        _args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        messages.append((envelope["headers"]["task"], kwargs))
    return messages


def queued_image_ids(queue: str) -> list[int]:
    """The image ids of the classify messages on ``queue``, in queue order."""
    return [
        image_id
        for task, kwargs in queued_messages(queue)
        if task == CLASSIFY_TASK
        for image_id in kwargs["image_ids"]
    ]


def add_version(name: str, *, folder: Path | None = None) -> int:
    """A model version row; with ``folder``, backed by a small file with its hash."""
    path = Path("/nonexistent") / f"{name}.keras"
    if folder is not None:
        path = folder / f"{name}.keras"
        path.write_bytes(name.encode())
    with session_scope() as session:
        version = ModelVersion(
            name=name,
            architecture="cnn",
            path=str(path),
            content_hash=file_sha256(path) if folder else "0" * 64,
            class_names=["0", "1"],
            input_shape=[28, 28, 1],
            preprocessing={},
            metrics={},
            data_fingerprint="test",
            imgq_version="test",
        )
        session.add(version)
        session.flush()
        return version.id


def set_production(version_id: int) -> None:
    with session_scope() as session:
        alias = session.get(ModelAlias, "production")
        if alias is None:
            session.add(ModelAlias(alias="production", model_version_id=version_id))
        else:
            alias.model_version_id = version_id


def add_images(count: int, *, created_at: datetime = DAY_ONE) -> list[int]:
    """``count`` image rows; their ids in order."""
    with session_scope() as session:
        first = session.scalar(select(func.count()).select_from(Image)) or 0
        images = [
            Image(
                content_hash=f"hash-{first + number}",
                path=f"/images/{first + number}.png",
                created_at=created_at,
            )
            for number in range(count)
        ]
        session.add_all(images)
        session.flush()
        return [image.id for image in images]


def add_predictions(
    version_id: int, image_ids: list[int], *, label: str = "1", confidence: float = 0.9
) -> None:
    with session_scope() as session:
        predictions.record(
            session,
            [
                {
                    "image_id": image_id,
                    "model_version_id": version_id,
                    "label": label,
                    "label_index": int(label),
                    "confidence": confidence,
                    "probabilities": [1 - confidence, confidence],
                }
                for image_id in image_ids
            ],
        )


def add_job(version_id: int, image_ids: list[int], *, open_batch: bool) -> int:
    """A submitted job of ``image_ids``; ``open_batch`` leaves one batch queued."""
    with session_scope() as session:
        job = Job(kind="submit", model_version_id=version_id, state=QUEUED)
        session.add(job)
        session.flush()
        session.add_all(JobImage(job_id=job.id, image_id=i) for i in image_ids)
        state = "queued" if open_batch else BATCH_DONE
        session.add(Batch(job_id=job.id, image_count=len(image_ids), state=state))
        return job.id


def complete(job_id: int) -> None:
    """What the worker does: an answer for every image, batches done, job closed."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        members = list(
            session.scalars(select(JobImage.image_id).where(JobImage.job_id == job_id))
        )
        version_id = job.model_version_id
    add_predictions(version_id, members)
    with session_scope() as session:
        session.execute(
            update(Batch).where(Batch.job_id == job_id).values(state=BATCH_DONE)
        )
    with session_scope() as session:
        finish_if_complete(session, job_id)


def job_count() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def delete_queues(settings: Settings) -> None:
    """Remove the Redis keys of the test's fresh and background queues."""
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(settings.fresh_queue, settings.background_queue)
