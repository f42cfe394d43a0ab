"""The reconciler re-queues what the broker lost: its rules, then beat driving it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import set_env
from sqlalchemy import select
from support import running_workers
from support_jobs import (
    broker_client,
    end_state,
    fresh_celery_app,
    queued_messages,
    submit_sources,
    wait_for_done,
    write_digits,
)

from imgq.cli import main
from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.db.jobs import BATCH_DONE, BATCH_QUEUED, BATCH_REQUEUED, DONE, QUEUED
from imgq.db.schema import Batch, Failure, Job, JobImage
from imgq.worker.app import make_celery
from imgq.worker.reconcile import reconcile
from imgq.worker.schedule import RECONCILE_ENTRY, RECONCILE_TASK

GRACE = 60.0


@pytest.fixture(autouse=True)
def _celery_app() -> Iterator[None]:
    with fresh_celery_app():
        yield


def _submit_and_lose_the_queue(folder: Path, count: int) -> int:
    """Submit ``count`` digits, then delete the queue key as a broker loss would."""
    write_digits(folder, count)
    result = submit_sources(folder)
    assert queued_messages() == len(result.batches)
    broker_client().delete(get_settings().fresh_queue)
    assert queued_messages() == 0
    return result.job_id


def _created_at(job_id: int) -> datetime:
    with session_scope() as session:
        created = session.scalar(select(Job.created_at).where(Job.id == job_id))
    assert created is not None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _batch_states(job_id: int) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Batch.state).where(Batch.job_id == job_id).order_by(Batch.id)
            )
        )


def test_reconciler_requeues_the_images_of_a_job_whose_messages_were_lost(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, chunk_size=16)
    job_id = _submit_and_lose_the_queue(tmp_path / "images", 40)
    created = _created_at(job_id)

    early = reconcile(grace=GRACE, now=created + timedelta(seconds=GRACE / 2))
    assert early.images_requeued == 0
    assert queued_messages() == 0

    later = created + timedelta(seconds=2 * GRACE)
    result = reconcile(grace=GRACE, now=later)
    assert (result.jobs_requeued, result.images_requeued) == (1, 40)
    assert queued_messages() == 3
    assert _batch_states(job_id) == [BATCH_REQUEUED] * 3 + [BATCH_QUEUED] * 3

    again = reconcile(grace=GRACE, now=later)
    assert again.images_requeued == 0, "fresh batches wait for their own grace"
    assert queued_messages() == 3


def test_reconciler_skips_images_with_a_result_and_closes_finished_jobs(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, chunk_size=16)
    job_id = _submit_and_lose_the_queue(tmp_path / "images", 20)
    with session_scope() as session:
        image_ids = list(
            session.scalars(select(JobImage.image_id).where(JobImage.job_id == job_id))
        )
        # a worker recorded failures for some images before the loss
        session.add_all(
            Failure(job_id=job_id, image_id=image_id, path="x", kind="k", message="m")
            for image_id in image_ids[:15]
        )
    now = _created_at(job_id) + timedelta(seconds=2 * GRACE)

    partial = reconcile(grace=GRACE, now=now)
    assert partial.images_requeued == 5
    with session_scope() as session:
        counts = session.scalars(
            select(Batch.image_count).where(Batch.job_id == job_id).order_by(Batch.id)
        ).all()
    # the requeued batches keep the 15 images they finished; 5 are new
    assert list(counts) == [15, 0, 5]

    with session_scope() as session:
        session.add_all(
            Failure(job_id=job_id, image_id=image_id, path="x", kind="k", message="m")
            for image_id in image_ids[15:]
        )
    later = now + timedelta(seconds=2 * GRACE)
    closing = reconcile(grace=GRACE, now=later)
    assert (closing.images_requeued, closing.jobs_closed) == (0, 1)
    assert _batch_states(job_id)[-1] == BATCH_DONE
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == DONE


def test_reconciler_leaves_a_job_that_is_making_progress_alone(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, chunk_size=16)
    job_id = _submit_and_lose_the_queue(tmp_path / "images", 20)
    now = _created_at(job_id) + timedelta(seconds=10 * GRACE)
    with session_scope() as session:
        image_id = session.scalars(
            select(JobImage.image_id).where(JobImage.job_id == job_id)
        ).first()
        # a worker wrote a row of this job a moment ago
        session.add(
            Failure(
                job_id=job_id,
                image_id=image_id,
                path="x",
                kind="k",
                message="m",
                created_at=now - timedelta(seconds=GRACE / 2),
            )
        )

    assert reconcile(grace=GRACE, now=now).images_requeued == 0
    later = now + timedelta(seconds=GRACE)
    assert reconcile(grace=GRACE, now=later).images_requeued == 19


def test_reconcile_command_reports_what_it_requeued(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, chunk_size=16)
    job_id = _submit_and_lose_the_queue(tmp_path / "images", 20)

    waiting = CliRunner().invoke(main, ["reconcile"])
    assert waiting.exit_code == 0, waiting.output
    assert "0 images" in waiting.output

    result = CliRunner().invoke(main, ["reconcile", "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert "20 images of 1 jobs re-queued in 2 batches" in result.output
    assert queued_messages() == 2
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == QUEUED


def test_beat_schedules_the_reconciler_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_env(monkeypatch, reconcile_interval=42)
    entry = make_celery(get_settings()).conf.beat_schedule[RECONCILE_ENTRY]
    assert entry["task"] == RECONCILE_TASK
    assert entry["schedule"] == 42.0
    assert entry["options"]["expires"] == 42.0


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_beat_and_a_worker_finish_a_job_whose_queue_redis_lost(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, chunk_size=16, reconcile_interval=1, reconcile_grace=2)
    job_id = _submit_and_lose_the_queue(tmp_path / "images", 40)

    beat_log = (tmp_path / "beat.log").open("wb")
    beat = subprocess.Popen(
        [sys.executable, "-m", "imgq", "beat"], stdout=beat_log, stderr=beat_log
    )
    try:
        with running_workers(tmp_path, ready=False):
            wait_for_done(job_id, timeout=120)
    finally:
        beat.terminate()
        beat.wait(30)
        beat_log.close()

    end_state(job_id).check()
    assert BATCH_REQUEUED in _batch_states(job_id)
