"""Workers killed mid-batch, by signal 9 or warm shutdown: nothing lost or doubled.

Each test holds batches in flight with ``IMGQ_SLOW_MODEL_SECONDS`` (a sleep
after every forward pass), waits until the first rows of a batch are
written, and only then strikes, so the batch is caught half done.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import set_env
from support import WorkerProcess, running_workers, wait_until, worker_env
from support_jobs import (
    batch_attempts,
    batch_in_flight,
    batch_state,
    end_state,
    fresh_celery_app,
    submit_sources,
    wait_for_done,
    write_digits,
)

from imgq.db.jobs import BATCH_DONE, BATCH_QUEUED

pytestmark = pytest.mark.slow

# 16 images a chunk, 4 a forward pass held 0.5 s: a chunk lasts about 2 s.
CHUNKED = {"chunk_size": 16, "batch_size": 4, "slow_model_seconds": 0.5}


@pytest.fixture(autouse=True)
def _celery_app() -> Iterator[None]:
    with fresh_celery_app():
        yield


def test_kill_9_of_the_pool_process_redelivers_its_batch_without_duplicates(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, **CHUNKED)
    write_digits(tmp_path / "images", 48)

    with running_workers(tmp_path, ready=False) as (worker,):
        job_id = submit_sources(tmp_path / "images").job_id
        killed_batch = batch_in_flight(job_id)
        worker.kill_child()
        wait_for_done(job_id)
        worker.raise_if_exited()

    end_state(job_id).check()
    attempts = batch_attempts(job_id)
    assert attempts.pop(killed_batch) == 2, "the killed batch runs exactly once more"
    assert set(attempts.values()) == {1}
    assert "WorkerLostError" in worker.log()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_kill_9_of_a_whole_worker_hands_its_batch_to_another_after_the_timeout(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, **CHUNKED, visibility_timeout=6)
    write_digits(tmp_path / "images", 16)

    with running_workers(tmp_path, 2) as workers:
        job_id = submit_sources(tmp_path / "images").job_id
        killed_batch = batch_in_flight(job_id)
        victim = wait_until(
            lambda: next(
                (w for w in workers if f"batch={killed_batch}" in w.log()), None
            ),
            timeout=10,
            what="the worker running the batch",
        )
        survivor = next(w for w in workers if w is not victim)
        victim.kill_all()
        assert batch_state(killed_batch) == BATCH_QUEUED

        wait_for_done(job_id, timeout=60)
        survivor.raise_if_exited()

    end_state(job_id).check()
    assert batch_attempts(job_id) == {killed_batch: 2}
    assert f"batch={killed_batch}" in survivor.log()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigterm_during_a_batch_lets_it_finish_and_leaves_the_rest_queued(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, **CHUNKED)
    write_digits(tmp_path / "images", 32)

    first = WorkerProcess(tmp_path / "first.log", env=worker_env()).start()
    try:
        job_id = submit_sources(tmp_path / "images").job_id
        batch_id = batch_in_flight(job_id)
        first.terminate()
        # the second worker boots while the first shuts down
        with running_workers(tmp_path, ready=False) as (second,):
            assert first.wait(timeout=60) == 0, first.log()
            assert batch_state(batch_id) == BATCH_DONE
            wait_for_done(job_id)
    finally:
        first.stop()

    end_state(job_id).check()
    attempts = batch_attempts(job_id)
    assert set(attempts.values()) == {1}, "the shutdown batch was not run again"
    (other,) = set(attempts) - {batch_id}
    assert f"batch={other}" not in first.log()
    assert f"batch={other}" in second.log()
