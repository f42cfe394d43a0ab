"""``imgq metrics``: queue depth and backlog against the real Redis and databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import set_env
from ops_helpers import (
    Samples,
    empty_test_queues,
    parse,
    register_model_row,
    scrape,
    value,
    wait_for,
)
from prometheus_client import generate_latest
from support import free_port
from worker_process import write_digits

from imgq.config import get_settings
from imgq.db.migrate import upgrade
from imgq.ops.exporter import cluster_registry, queue_depths
from imgq.producer.paths import iter_candidates
from imgq.producer.submit import submit
from imgq.worker.app import reset_app


def _submit(folder: Path, *, background: bool = False) -> int:
    settings = get_settings()
    reset_app()
    candidates = iter_candidates(
        [str(folder)], roots=settings.resolved_allowed_roots, labels_from_dirs=True
    )
    queue = settings.background_queue if background else settings.fresh_queue
    return submit(candidates, source=str(folder), queue=queue).job_id


@pytest.fixture
def test_queues_emptied() -> Iterator[None]:
    """Delete what the test left in its queues on the shared Redis."""
    yield
    empty_test_queues()


def test_exporter_serves_the_depth_of_each_redis_queue_and_the_backlog(
    migrated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    test_queues_emptied: None,
) -> None:
    set_env(monkeypatch, chunk_size=2)
    register_model_row()
    write_digits(tmp_path / "fresh", 5)
    write_digits(tmp_path / "background", 4, offset=100)
    _submit(tmp_path / "fresh")
    _submit(tmp_path / "background", background=True)
    settings = get_settings()

    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "imgq", "metrics", "--port", str(port)],
        env=os.environ.copy(),
        stderr=subprocess.PIPE,
    )
    try:
        samples = wait_for(
            lambda: _scrape_or_none(port), timeout=30, what="the exporter's endpoint"
        )
    finally:
        exporter.send_signal(signal.SIGTERM)
        exporter.wait(10)

    fresh, background = settings.fresh_queue, settings.background_queue
    assert value(samples, "imgq_queue_messages", queue=fresh) == 3
    assert value(samples, "imgq_queue_messages", queue=background) == 2
    assert value(samples, "imgq_jobs_in_progress", queue=fresh) == 1
    assert value(samples, "imgq_jobs_in_progress", queue=background) == 1
    assert value(samples, "imgq_images_pending", queue=fresh) == 5
    assert value(samples, "imgq_images_pending", queue=background) == 4
    assert value(samples, "imgq_exporter_source_up", source="broker") == 1
    assert value(samples, "imgq_exporter_source_up", source="database") == 1
    assert exporter.returncode == 0


def _scrape_or_none(port: int) -> Samples | None:
    try:
        return scrape(port, timeout=2)
    except OSError:
        return None


def test_exporter_counts_the_message_files_of_the_embedded_queue(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(sqlite_url)
    set_env(monkeypatch, chunk_size=2, broker_url="filesystem://")
    register_model_row()
    write_digits(tmp_path / "images", 5)
    _submit(tmp_path / "images")

    depths = queue_depths(get_settings())

    assert depths == {get_settings().fresh_queue: 3, get_settings().background_queue: 0}


def test_exporter_marks_a_source_it_cannot_read_as_down(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(sqlite_url)
    set_env(monkeypatch, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    register_model_row()

    samples = parse(generate_latest(cluster_registry(get_settings())).decode())

    assert value(samples, "imgq_exporter_source_up", source="broker") == 0
    assert value(samples, "imgq_exporter_source_up", source="database") == 1
    assert not any(name == "imgq_queue_messages" for name, _ in samples)
    fresh = get_settings().fresh_queue
    assert value(samples, "imgq_jobs_in_progress", queue=fresh) == 0


def test_exporter_marks_a_database_it_cannot_reach_as_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql+psycopg://imgq:secret@127.0.0.1:{free_port()}/imgq"
    set_env(monkeypatch, database_url=url)

    samples = parse(generate_latest(cluster_registry(get_settings())).decode())

    assert value(samples, "imgq_exporter_source_up", source="database") == 0
    assert value(samples, "imgq_exporter_source_up", source="broker") == 1
    assert value(samples, "imgq_queue_messages", queue=get_settings().fresh_queue) == 0
    assert not any(name == "imgq_jobs_in_progress" for name, _ in samples)
