"""Re-inference selects exactly the images a model version has not answered.

The database is filled with known rows (versions, images, predictions,
failures, jobs) and the messages are read back from the real Redis queue.
No worker runs here; see test_reinfer_worker.py for that.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import set_env
from reinfer_rows import (
    add_images,
    add_job,
    add_predictions,
    add_version,
    complete,
    delete_queues,
    job_count,
    queued_image_ids,
    queued_messages,
    set_production,
)
from sqlalchemy import select

from imgq.cli import main
from imgq.config import Settings
from imgq.db.engine import session_scope
from imgq.db.jobs import DONE, QUEUED
from imgq.db.schema import Batch, Failure, Job, JobImage, ModelAlias
from imgq.errors import InputError
from imgq.worker.app import reset_app
from imgq.worker.reinfer import (
    KIND_REINFER,
    Selection,
    iter_missing,
    missing_statement,
    parse_since,
    reinfer,
    reinfer_task,
)

DAY_ONE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clean_queues(isolated_settings: Settings) -> Iterator[None]:
    """A Celery app for this test's queue names; its Redis keys removed after."""
    reset_app()
    yield
    reset_app()
    delete_queues(isolated_settings)


@pytest.fixture
def versions(migrated: str) -> tuple[int, int]:
    """Two versions, the first one production."""
    first, second = add_version("first"), add_version("second")
    set_production(first)
    return first, second


# ---------------------------------------------------------------- tests


def test_reinfer_queues_exactly_the_images_without_an_answer_from_the_version(
    versions: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = versions
    set_env(monkeypatch, chunk_size=4)
    images = add_images(10)
    add_predictions(first, images)
    add_predictions(second, images[:3])
    with session_scope() as session:
        session.add(
            Failure(
                job_id=add_job(second, [images[3]], open_batch=False),
                image_id=images[3],
                model_version_id=second,
                path="/images/3.png",
                kind="corrupt",
                message="truncated",
            )
        )
    settings = Settings.from_env()

    result = reinfer(model_reference=str(second))

    assert result.queued == 6
    assert queued_image_ids(settings.background_queue) == images[4:]
    assert queued_messages(settings.fresh_queue) == []
    messages = queued_messages(settings.background_queue)
    assert {kwargs["model_version_id"] for _, kwargs in messages} == {second}
    assert {kwargs["job_id"] for _, kwargs in messages} == {result.job_id}
    with session_scope() as session:
        job = session.get(Job, result.job_id)
        assert job is not None
        assert (job.kind, job.state, job.queue) == (
            KIND_REINFER,
            QUEUED,
            settings.background_queue,
        )
        assert job.total_images == job.queued_images == 6
        counts = session.scalars(
            select(Batch.image_count)
            .where(Batch.job_id == result.job_id)
            .order_by(Batch.id)
        ).all()
        assert counts == [4, 2]
        members = session.scalars(
            select(JobImage.image_id).where(JobImage.job_id == result.job_id)
        ).all()
        assert sorted(members) == images[4:]


def test_the_production_version_is_the_default(versions: tuple[int, int]) -> None:
    first, _ = versions
    images = add_images(3)

    result = reinfer()

    assert result.model_version_id == first
    assert result.queued == 3
    assert queued_image_ids(Settings.from_env().background_queue) == images


def test_pages_are_keyset_queries_of_at_most_chunk_size_ids(
    versions: tuple[int, int],
) -> None:
    first, _ = versions
    images = add_images(10)
    add_predictions(first, images[5:6])
    selection = Selection(model_version_id=first)

    pages = list(iter_missing(selection, chunk_size=3))

    assert pages == [images[0:3], images[3:5] + images[6:7], images[7:10]]
    sql = str(missing_statement(selection, after_id=images[2], limit=3))
    assert "LIMIT" in sql
    assert "NOT (EXISTS" in sql


def test_a_second_run_queues_nothing_and_creates_no_job(
    versions: tuple[int, int],
) -> None:
    add_images(5)
    background = Settings.from_env().background_queue
    started = reinfer()
    messages = len(queued_messages(background))

    while_open = reinfer()
    complete(started.job_id or 0)
    after_done = reinfer()

    assert started.queued == 5
    assert while_open.job_id is None and while_open.queued == 0
    assert after_done.job_id is None and after_done.queued == 0
    assert job_count() == 1
    assert len(queued_messages(background)) == messages
    with session_scope() as session:
        assert session.scalar(select(Job.state).where(Job.id == started.job_id)) == DONE


def test_images_of_an_open_job_of_the_same_version_are_not_queued_again(
    versions: tuple[int, int],
) -> None:
    first, second = versions
    images = add_images(6)
    add_job(first, images[:2], open_batch=True)
    add_job(first, images[2:4], open_batch=False)
    add_job(second, images[4:], open_batch=True)

    result = reinfer(model_reference=str(first))

    # the closed job's and the other version's images are still missing
    assert queued_image_ids(Settings.from_env().background_queue) == images[2:]
    assert result.queued == 4


def test_job_and_since_narrow_the_selection(versions: tuple[int, int]) -> None:
    first, _ = versions
    old = add_images(4, created_at=DAY_ONE)
    new = add_images(3, created_at=DAY_ONE + timedelta(days=2))
    job = add_job(first, [old[0], new[0]], open_batch=False)
    background = Settings.from_env().background_queue

    of_job = reinfer(job_id=job)
    of_job_ids = queued_image_ids(background)
    complete(of_job.job_id or 0)
    recent = reinfer(since=parse_since("2024-05-02"))

    assert of_job_ids == [old[0], new[0]]
    assert recent.queued == 2
    assert queued_image_ids(background)[2:] == new[1:]
    with session_scope() as session:
        source = session.scalar(select(Job.source).where(Job.id == recent.job_id))
    assert source is not None and "since 2024-05-02T00:00:00+00:00" in source


def test_retry_failed_queues_the_images_that_failed_with_the_version(
    versions: tuple[int, int],
) -> None:
    first, _ = versions
    images = add_images(3)
    add_predictions(first, images[:1])
    with session_scope() as session:
        session.add(
            Failure(
                job_id=add_job(first, images[1:2], open_batch=False),
                image_id=images[1],
                model_version_id=first,
                path="/images/1.png",
                kind="missing",
                message="no such file",
            )
        )

    plain = reinfer()
    complete(plain.job_id or 0)
    retried = reinfer(retry_failed=True)

    assert plain.queued == 1
    assert retried.queued == 1
    assert queued_image_ids(Settings.from_env().background_queue) == images[2:0:-1]


def test_an_unknown_job_or_date_is_an_input_error(versions: tuple[int, int]) -> None:
    with pytest.raises(InputError, match="no job 999"):
        reinfer(job_id=999)
    with pytest.raises(InputError, match="not a date"):
        parse_since("last tuesday")
    assert parse_since("2024-05-01T14:00:00+02:00") == datetime(
        2024, 5, 1, 12, tzinfo=UTC
    )


def test_the_task_does_what_the_command_does(versions: tuple[int, int]) -> None:
    _, second = versions
    add_images(4)

    outcome = reinfer_task.apply(kwargs={"model": str(second), "since": "2024-01-01"})

    assert outcome.get()["queued"] == 4
    assert outcome.get()["model_version_id"] == second
    assert reinfer_task.apply(kwargs={"model": str(second)}).get()["job_id"] is None


def test_the_command_prints_the_job_and_status_follows_it(
    versions: tuple[int, int],
) -> None:
    add_images(5)
    runner = CliRunner()

    queued = runner.invoke(main, ["reinfer"])
    again = runner.invoke(main, ["reinfer"])
    job_id = int(queued.stdout.split()[1].rstrip(":"))
    status = runner.invoke(main, ["status", str(job_id)])

    assert queued.exit_code == 0, queued.output
    assert "5 images queued in 1 batches for model version" in queued.output
    assert "nothing to re-infer" in again.output
    assert f"job {job_id}: queued; 5 images, 0 classified" in status.output


def test_rolling_back_finds_nothing_to_do_for_the_old_version(
    migrated: str, tmp_path: Path
) -> None:
    old = add_version("old", folder=tmp_path)
    new = add_version("new", folder=tmp_path)
    set_production(old)
    images = add_images(4)
    add_predictions(old, images)
    runner = CliRunner()

    promoted = runner.invoke(main, ["models", "promote", str(new), "--reinfer"])
    with session_scope() as session:
        reinfer_job = session.scalar(select(Job.id).where(Job.kind == KIND_REINFER))
    complete(reinfer_job or 0)
    rolled_back = runner.invoke(main, ["models", "promote", str(old), "--reinfer"])

    assert promoted.exit_code == 0, promoted.output
    assert f"job {reinfer_job}: 4 images queued" in promoted.output
    assert rolled_back.exit_code == 0, rolled_back.output
    assert f"model version {old}: nothing to re-infer" in rolled_back.output
    assert job_count() == 1
    with session_scope() as session:
        alias = session.get(ModelAlias, "production")
        assert alias is not None and alias.model_version_id == old


def test_diff_shows_how_the_share_of_low_confidence_answers_moved(
    versions: tuple[int, int],
) -> None:
    first, second = versions
    images = add_images(4)
    add_predictions(first, images, confidence=0.9)
    add_predictions(second, images[:2], label="0", confidence=0.5)
    add_predictions(second, images[2:], confidence=0.95)

    shown = CliRunner().invoke(main, ["diff", str(first), str(second)])
    document = CliRunner().invoke(
        main, ["diff", str(first), str(second), "--format", "json"]
    )

    assert shown.exit_code == 0, shown.output
    assert "confidence below 0.6" in shown.stdout
    assert "0.0%" in shown.stdout and "50.0%" in shown.stdout
    summary = json.loads(document.stdout)
    assert summary["compared"] == 4 and summary["changed"] == 2
    assert summary["low_confidence"] == {"threshold": 0.6, "a": 0, "b": 2}
