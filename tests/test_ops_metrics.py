"""A real worker after a real job: its metrics over HTTP, its log, its health."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import set_env
from ops_helpers import Samples, scrape, value
from sqlalchemy import func, select
from support import free_port
from worker_process import running_worker, wait_for_job, write_digits

from imgq.cli import main
from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.db.schema import Batch, Failure
from imgq.producer.paths import iter_candidates
from imgq.producer.submit import submit
from imgq.worker.app import reset_app

pytestmark = pytest.mark.slow

BATCH_SIZE = 16
TIMINGS = ("imgq_decode_seconds", "imgq_predict_seconds", "imgq_write_seconds")


def _submit_folder(folder: Path) -> int:
    reset_app()
    roots = get_settings().resolved_allowed_roots
    candidates = iter_candidates([str(folder)], roots=roots, labels_from_dirs=True)
    return submit(candidates, source=str(folder)).job_id


def _write_job_images(folder: Path) -> None:
    """100 digits, an empty file and a cut one."""
    digits = write_digits(folder, 100)
    (folder / "3" / "empty.png").write_bytes(b"")
    whole = digits[0][0].read_bytes()
    (folder / "5" / "cut.png").write_bytes(whole[: len(whole) // 2])


def _failures_by_kind(job_id: int) -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(
            select(Failure.kind, func.count())
            .where(Failure.job_id == job_id)
            .group_by(Failure.kind)
        ).tuples()
        return {kind: int(count) for kind, count in rows}


def _forward_batches(job_id: int) -> int:
    with session_scope() as session:
        sizes = session.scalars(select(Batch.image_count).where(Batch.job_id == job_id))
        return sum(math.ceil(size / BATCH_SIZE) for size in sizes)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_that_ran_a_job_serves_its_counts_logs_its_ids_and_is_healthy(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    set_env(monkeypatch, batch_size=BATCH_SIZE, chunk_size=40, metrics_port=port)
    folder = tmp_path / "images"
    _write_job_images(folder)
    job_id = _submit_folder(folder)

    log_path = tmp_path / "worker.log"
    with running_worker(log_path=log_path) as worker:
        counts = wait_for_job(job_id, worker=worker)
        samples = scrape(port)
        health = CliRunner().invoke(main, ["health"])
        main_pid = worker.pid
    metric_files = list((get_settings().data_dir / "metrics").rglob("*.db"))

    assert (counts.total, counts.done, counts.failed) == (102, 100, 2)
    _assert_metrics_match_job(samples, job_id=job_id, model_version=model_version)
    # recorded in the pool process, served by the main process
    recording_pids = {int(path.stem.rsplit("_", 1)[1]) for path in metric_files}
    assert recording_pids and main_pid not in recording_pids

    _assert_batch_lines_carry_ids(log_path.read_text().splitlines(), job_id=job_id)

    assert health.exit_code == 0, health.output
    assert [line.split(":")[0] for line in health.output.splitlines()] == [
        "redis",
        "database",
        "workers",
        "readiness",
    ]
    assert all(": ok" in line for line in health.output.splitlines())
    assert f"model {model_version} digits-cnn" in health.output


def _assert_metrics_match_job(
    samples: Samples, *, job_id: int, model_version: int
) -> None:
    assert value(samples, "imgq_images_classified_total") == 100
    failed = {
        dict(labels)["kind"]: count
        for (name, labels), count in samples.items()
        if name == "imgq_images_failed_total"
    }
    assert failed == _failures_by_kind(job_id) == {"not_an_image": 1, "truncated": 1}

    batches = _forward_batches(job_id)
    assert value(samples, "imgq_batch_size_images_count") == batches
    assert value(samples, "imgq_batch_size_images_sum") == 102
    assert value(samples, "imgq_batch_size_images_bucket", le="16.0") == batches
    for timing in TIMINGS:
        assert value(samples, f"{timing}_count") == batches
        assert (value(samples, f"{timing}_sum") or 0) > 0

    loaded = value(
        samples,
        "imgq_model_loaded",
        model_version=str(model_version),
        model_name="digits-cnn",
    )
    assert loaded == 1
    assert value(samples, "imgq_ready") == 1


def _assert_batch_lines_carry_ids(lines: list[str], *, job_id: int) -> None:
    line_format = re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) +"
        r"ForkPoolWorker-\d+ [\w.]+: "
    )
    pool_lines = [line for line in lines if "ForkPoolWorker-" in line]
    assert pool_lines and all(line_format.match(line) for line in pool_lines)

    about_batches = [
        line
        for line in pool_lines
        if "imgq.worker.tasks" in line
        or "succeeded in" in line
        or "not_an_image" in line
        or "truncated" in line
    ]
    # 8 forward batches, 3 chunks' "succeeded" lines, 2 bad files
    assert len(about_batches) >= 13
    ids = re.compile(rf"job={job_id} batch=\d+: ")
    assert all(ids.search(line) for line in about_batches), about_batches
    # Celery's own bracketed format is gone
    assert not any("/MainProcess]" in line for line in lines)
