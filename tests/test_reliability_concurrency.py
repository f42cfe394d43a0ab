"""Several workers on one database: no "database is locked", no duplicate rows.

Two jobs of the same images are queued before any worker runs, so every
image is classified by two batches racing each other to write its row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import set_env
from sqlalchemy import func, select
from support import LOCKED_MESSAGE, running_workers
from support_jobs import (
    batch_attempts,
    end_state,
    fresh_celery_app,
    submit_sources,
    wait_for_done,
    write_digits,
)
from support_tallies import assert_tallies_match_rows

from imgq.db.engine import session_scope
from imgq.db.schema import Prediction

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _celery_app() -> Iterator[None]:
    with fresh_celery_app():
        yield


@pytest.mark.parametrize(
    ("database_url", "workers"),
    [("sqlite", 2), ("postgresql", 4)],
    indirect=["database_url"],
)
def test_workers_racing_on_one_database_write_each_row_once(
    model_version: int,
    workers: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 24 batches of about 1 s: every worker is up before the queue is empty
    set_env(monkeypatch, chunk_size=8, batch_size=4, slow_model_seconds=0.5)
    write_digits(tmp_path / "images", 96)
    first = submit_sources(tmp_path / "images")
    second = submit_sources(tmp_path / "images")
    # the second job found no prediction yet: it queued every image again
    assert second.queued == first.queued == 96

    with running_workers(tmp_path, workers) as running:
        wait_for_done(first.job_id, timeout=180)
        wait_for_done(second.job_id, timeout=180)

    for job_id in (first.job_id, second.job_id):
        end_state(job_id).check()
        # the visibility timeout is above the longest batch: none ran twice
        assert set(batch_attempts(job_id).values()) == {1}
    with session_scope() as session:
        rows = session.scalar(select(func.count()).select_from(Prediction))
        pairs = session.scalar(
            select(func.count()).select_from(
                select(Prediction.image_id, Prediction.model_version_id)
                .distinct()
                .subquery()
            )
        )
    assert rows == pairs == 96
    # both jobs count every answer once, whichever worker wrote it
    kept = assert_tallies_match_rows()
    assert len(kept["job_images.tallied"]) == 2 * 96
    logs = [worker.log() for worker in running]
    assert sum("batch=" in log for log in logs) >= 2, "the workers did not race"
    assert not any(LOCKED_MESSAGE in log for log in logs)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_batch_longer_than_the_visibility_timeout_still_writes_each_row_once(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # misconfigured on purpose: a 4 s batch under a 2 s visibility timeout
    set_env(
        monkeypatch,
        chunk_size=16,
        batch_size=4,
        slow_model_seconds=1.0,
        visibility_timeout=2,
    )
    write_digits(tmp_path / "images", 16)

    with running_workers(tmp_path, 2) as running:
        job_id = submit_sources(tmp_path / "images").job_id
        wait_for_done(job_id, timeout=120)

    end_state(job_id).check()
    (attempts,) = batch_attempts(job_id).values()
    assert attempts >= 2, "Redis handed the running batch out again"
    assert sum("batch=" in worker.log() for worker in running) == 2
