"""A batch that keeps failing stops after IMGQ_MAX_ATTEMPTS with failure rows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import set_env
from sqlalchemy import select
from support import running_workers, wait_until, worker_env
from support_jobs import (
    batch_attempts,
    end_state,
    fresh_celery_app,
    submit_sources,
    wait_for_done,
    write_digits,
)

from imgq.db.engine import session_scope
from imgq.db.jobs import BATCH_FAILED
from imgq.db.schema import Batch, Failure, ModelVersion
from imgq.models import registry
from imgq.models.preprocessing import PreprocessSpec
from imgq.worker.tasks import KIND_BATCH_FAILED

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _celery_app() -> Iterator[None]:
    with fresh_celery_app():
        yield


def _failures(job_id: int) -> list[tuple[str, str]]:
    with session_scope() as session:
        return [
            (row.kind, row.message)
            for row in session.execute(
                select(Failure.kind, Failure.message).where(Failure.job_id == job_id)
            )
        ]


def _register_copy(model_version: int, folder: Path) -> int:
    """Register a copy of the production model's file as a new version."""
    with session_scope() as session:
        original = session.get(ModelVersion, model_version)
        assert original is not None
        copy = folder / "copy.keras"
        shutil.copy(original.path, copy)
        version = registry.register_file(
            session,
            copy,
            name="digits-cnn-copy",
            architecture=original.architecture,
            class_names=list(original.class_names),
            spec=PreprocessSpec.from_dict(original.preprocessing),
            metrics={},
            data_fingerprint=original.data_fingerprint,
        )
        return version.id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_whose_model_file_was_changed_fails_for_good_after_max_attempts(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_version = _register_copy(model_version, tmp_path)
    # the file is overwritten after it was registered and the worker started
    (tmp_path / "copy.keras").write_bytes(b"not the registered model")
    set_env(monkeypatch, model=copy_version, max_attempts=2, retry_backoff=0.2)
    write_digits(tmp_path / "images", 12)

    # the worker checks the production model, which is intact
    env = worker_env(model="production")
    with running_workers(tmp_path, ready=False, env=env) as (worker,):
        job_id = submit_sources(tmp_path / "images").job_id
        wait_for_done(job_id, timeout=120)
        worker.raise_if_exited()

    end_state(job_id).check()
    failures = _failures(job_id)
    assert len(failures) == 12
    assert {kind for kind, _ in failures} == {KIND_BATCH_FAILED}
    message = failures[0][1]
    assert message.startswith("gave up after 2 attempts: ModelIntegrityError")
    assert "changed or is corrupt" in message
    # two failed attempts, then the delivery that records the failures
    assert list(batch_attempts(job_id).values()) == [3]
    with session_scope() as session:
        assert session.scalars(select(Batch.state)).all() == [BATCH_FAILED]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_batch_that_kills_its_pool_process_every_time_is_given_up(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(
        monkeypatch,
        max_attempts=2,
        chunk_size=16,
        batch_size=4,
        slow_model_seconds=0.5,
    )
    write_digits(tmp_path / "images", 16)

    with running_workers(tmp_path, ready=False) as (worker,):
        job_id = submit_sources(tmp_path / "images").job_id
        for attempt in (1, 2):
            # strike as soon as the attempt starts, as a crashing decoder would
            wait_until(
                lambda: attempt in batch_attempts(job_id).values(),  # noqa: B023
                timeout=120,
                what=f"attempt {attempt}",
                interval=0.05,
            )
            worker.kill_child()
        wait_for_done(job_id, timeout=120)
        worker.raise_if_exited()

    end_state(job_id).check()
    assert list(batch_attempts(job_id).values()) == [3]
    kinds = {kind for kind, _ in _failures(job_id)}
    assert kinds <= {KIND_BATCH_FAILED}
    messages = {message for _, message in _failures(job_id)}
    assert messages <= {"gave up after 2 attempts: the worker died"}
