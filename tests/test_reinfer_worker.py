"""Re-inference through a real ``imgq worker`` process and the real Redis.

A fresh job is served before a backlog of re-inference, and a new version is
promoted, re-run over every stored image, compared and rolled back.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import set_env
from reinfer_rows import delete_queues
from sqlalchemy import func, select

from imgq.cli import main
from imgq.config import Settings, get_settings
from imgq.db.engine import session_scope
from imgq.db.jobs import DONE
from imgq.db.schema import Batch, Image, Job, ModelAlias, Prediction
from imgq.producer.paths import iter_candidates
from imgq.producer.submit import submit
from imgq.worker.app import reset_app
from imgq.worker.reinfer import KIND_REINFER, reinfer

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 150.0


@pytest.fixture(autouse=True)
def clean_queues(isolated_settings: Settings) -> Iterator[None]:
    reset_app()
    yield
    reset_app()
    delete_queues(isolated_settings)


def write_digits(folder: Path, count: int, *, first: int = 0) -> list[Path]:
    """``count`` distinct digit PNGs in class subfolders, from digit ``first`` on."""
    from imgq.models.datasets import digit_images

    paths = []
    for number, (image, label) in enumerate(digit_images()):
        if number < first:
            continue
        if len(paths) == count:
            break
        path = folder / str(label) / f"digit-{number:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        paths.append(path)
    return paths


def store_images(paths: list[Path]) -> list[int]:
    """Image rows for files, as an earlier submission would have left them."""
    with session_scope() as session:
        images = [
            Image(
                content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
                path=str(path),
                true_label=path.parent.name,
            )
            for path in paths
        ]
        session.add_all(images)
        session.flush()
        return [image.id for image in images]


@contextmanager
def running_worker(log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``imgq worker --pool solo`` on this test's database and queues."""
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "imgq", "worker", "--pool", "solo"],
            env=os.environ.copy(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield worker
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def wait_done(job_id: int, worker: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait for the job to be done; fail with the worker's log if it is not."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        with session_scope() as session:
            if session.scalar(select(Job.state).where(Job.id == job_id)) == DONE:
                return
        if worker.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"job {job_id} not done; worker log:\n{log_path.read_text()[-4000:]}")


def finished_times(job_id: int) -> list[float]:
    with session_scope() as session:
        moments = session.scalars(
            select(Batch.finished_at).where(Batch.job_id == job_id)
        ).all()
    assert all(moment is not None for moment in moments)
    return sorted(moment.timestamp() for moment in moments if moment is not None)


def prediction_count(version_id: int) -> int:
    with session_scope() as session:
        statement = select(func.count()).where(
            Prediction.model_version_id == version_id
        )
        return int(session.scalar(statement) or 0)


# The order is the broker's doing, the same whatever the database.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_fresh_job_is_served_before_a_backlog_of_reinference(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, chunk_size=20, batch_size=32)
    store_images(write_digits(tmp_path / "stored", 160))
    backlog = reinfer()
    fresh_folder = tmp_path / "fresh"
    write_digits(fresh_folder, 20, first=400)
    settings = get_settings()
    fresh = submit(
        iter_candidates([str(fresh_folder)], roots=settings.resolved_allowed_roots),
        source="line camera",
    )
    log_path = tmp_path / "worker.log"

    with running_worker(log_path) as worker:
        wait_done(fresh.job_id, worker, log_path)
        wait_done(backlog.job_id or 0, worker, log_path)

    assert backlog.queued == 160 and len(backlog.batches) == 8
    assert fresh.queued == 20 and len(fresh.batches) == 1
    fresh_done = finished_times(fresh.job_id)[0]
    background = finished_times(backlog.job_id or 0)
    later = [moment for moment in background if moment > fresh_done]
    assert len(later) >= 7, (fresh_done, background)
    with session_scope() as session:
        last_fresh = session.scalar(
            select(func.max(Prediction.created_at)).where(
                Prediction.job_id == fresh.job_id
            )
        )
        background_after = session.scalar(
            select(func.count()).where(
                Prediction.job_id == backlog.job_id,
                Prediction.created_at > last_fresh,
            )
        )
    assert (background_after or 0) >= 140


# The queries behind it run on both databases in test_reinfer.py; with the
# test above, a worker runs re-inference on each of them.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_promote_reinfer_diff_and_roll_back(
    model_version: int,
    digits_model_file: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imgq.models import registry

    set_env(monkeypatch, chunk_size=25, batch_size=32)
    folder = tmp_path / "line"
    write_digits(folder, 50)
    with session_scope() as session:
        # the same weights as a new version: the answers must not change
        second = registry.register_file(
            session,
            Path(str(digits_model_file["path"])),
            name="digits-cnn-again",
            architecture="cnn",
            class_names=digits_model_file["class_names"],  # type: ignore[arg-type]
            spec=digits_model_file["spec"],  # type: ignore[arg-type]
            metrics={},
            data_fingerprint=str(digits_model_file["fingerprint"]),
        ).id
    runner = CliRunner()
    log_path = tmp_path / "worker.log"

    with running_worker(log_path) as worker:
        first_run = submit(
            iter_candidates(
                [str(folder)],
                roots=get_settings().resolved_allowed_roots,
                labels_from_dirs=True,
            ),
            source="line",
        )
        wait_done(first_run.job_id, worker, log_path)
        promoted = runner.invoke(main, ["models", "promote", str(second), "--reinfer"])
        with session_scope() as session:
            reinfer_job = session.scalar(select(Job.id).where(Job.kind == KIND_REINFER))
        assert reinfer_job is not None, promoted.output
        wait_done(reinfer_job, worker, log_path)
        status = runner.invoke(main, ["status", str(reinfer_job)])
        diff = runner.invoke(
            main, ["diff", str(model_version), str(second), "--format", "json"]
        )

        started = time.perf_counter()
        rolled_back = runner.invoke(
            main, ["models", "promote", str(model_version), "--reinfer"]
        )
        rollback_seconds = time.perf_counter() - started
        again = runner.invoke(main, ["reinfer", "--model", str(second)])

    assert f"job {reinfer_job}: 50 images queued in 2 batches" in promoted.stdout
    assert f"job {reinfer_job}: done; 50 images, 50 classified" in status.stdout
    assert prediction_count(model_version) == prediction_count(second) == 50
    summary = json.loads(diff.stdout)
    assert (summary["compared"], summary["changed"]) == (50, 0)
    low = summary["low_confidence"]
    assert low["a"] == low["b"]

    assert f"model version {model_version}: nothing to re-infer" in rolled_back.stdout
    assert f"model version {second}: nothing to re-infer" in again.stdout
    assert rollback_seconds < 10
    with session_scope() as session:
        alias = session.get(ModelAlias, "production")
        assert alias is not None and alias.model_version_id == model_version
        kinds = session.scalars(select(Job.kind).order_by(Job.id)).all()
    assert kinds == ["submit", KIND_REINFER]
