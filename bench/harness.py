"""What the benchmarks share: pointing imgq at a scratch folder, worker
processes, a fresh PostgreSQL database, and timing one job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

POSTGRES_URL = os.environ.get(
    "IMGQ_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("IMGQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def configure(workdir: Path, database_url: str) -> tuple[str, str]:
    """Point imgq here and in its workers at ``workdir``; returns the queues."""
    from imgq import config
    from imgq.worker.app import reset_app

    suffix = uuid.uuid4().hex[:8]
    queues = (f"bench.fresh.{suffix}", f"bench.background.{suffix}")
    os.environ.update(
        IMGQ_DATA_DIR=str(workdir / "data"),
        IMGQ_DATABASE_URL=database_url,
        IMGQ_ALLOWED_ROOTS=str(workdir),
        IMGQ_BROKER_URL=REDIS_URL,
        IMGQ_FRESH_QUEUE=queues[0],
        IMGQ_BACKGROUND_QUEUE=queues[1],
        IMGQ_LOG_LEVEL="WARNING",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    config.get_settings.cache_clear()
    reset_app()
    return queues


def start_worker(log_path: Path) -> subprocess.Popen[bytes]:
    """An ``imgq worker`` with this process's settings, logging to ``log_path``.

    The worker logs at INFO: its line per batch (decode, predict and write
    milliseconds) is what explains a figure.
    """
    log = open(log_path, "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "imgq", "worker"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy() | {"IMGQ_LOG_LEVEL": "INFO"},
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, or a kill after a minute."""
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def submit_and_wait(
    folder: Path, *, worker: subprocess.Popen[bytes], model: str | None = None
) -> tuple[int, float]:
    """Submit a folder as a fresh job; (images classified, seconds to done)."""
    from imgq.config import get_settings
    from imgq.producer.embedded import wait_for_job
    from imgq.producer.paths import iter_candidates
    from imgq.producer.submit import submit

    started = time.perf_counter()
    candidates = iter_candidates(
        [str(folder)], roots=get_settings().resolved_allowed_roots
    )
    result = submit(candidates, source=str(folder), model_reference=model)
    counts = wait_for_job(result.job_id, worker=worker, poll_seconds=0.05)
    return counts.done, time.perf_counter() - started


def fresh_postgres_database() -> str:
    """The URL of a new, empty database on the benchmark's PostgreSQL server."""
    name = f"imgq_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return (
        sa.engine.make_url(POSTGRES_URL)
        .set(database=name)
        .render_as_string(hide_password=False)
    )


def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`fresh_postgres_database`."""
    from imgq.db.engine import dispose_all

    dispose_all()
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()
