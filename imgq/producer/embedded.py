"""``imgq run``: submit, work and wait on one machine with no server.

The queue is kombu's filesystem transport in the data folder and the
database is SQLite; the worker is a real ``imgq worker`` process running the
same task code as a Redis deployment.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

from imgq import config
from imgq.db.engine import session_scope
from imgq.db.jobs import DONE, JobCounts, job_counts, job_progress
from imgq.db.migrate import upgrade
from imgq.db.schema import Job
from imgq.errors import ImgqError
from imgq.producer.paths import Candidate
from imgq.producer.submit import SubmitResult, submit
from imgq.worker.app import reset_app

log = logging.getLogger(__name__)

EMBEDDED_BROKER = "filesystem://"
WORKER_STOP_SECONDS = 60.0


def use_embedded_queue() -> config.Settings:
    """Point this process, and the workers it starts, at the embedded queue."""
    os.environ["IMGQ_BROKER_URL"] = EMBEDDED_BROKER
    config.get_settings.cache_clear()
    reset_app()
    return config.get_settings()


def start_worker() -> subprocess.Popen[bytes]:
    """An ``imgq worker`` process on the embedded queue, in one process."""
    command = [sys.executable, "-m", "imgq", "worker", "--pool", "solo", "--quiet"]
    return subprocess.Popen(command, env=os.environ.copy())


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown: the worker finishes its batch, then exits."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def wait_for_job(
    job_id: int,
    *,
    worker: subprocess.Popen[bytes] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> JobCounts:
    """Block until the job is done; ``on_progress(finished, total)`` each poll."""
    started = time.monotonic()
    while True:
        with session_scope() as session:
            finished, total = job_progress(session, job_id)
            job = session.get(Job, job_id)
            state = job.state if job else DONE
        if on_progress:
            on_progress(finished, total)
        if state == DONE:
            with session_scope() as session:
                return job_counts(session, job_id)
        if worker is not None and worker.poll() is not None:
            raise ImgqError(f"the worker exited with code {worker.returncode}")
        if timeout is not None and time.monotonic() - started > timeout:
            raise ImgqError(f"job={job_id} not done after {timeout:.0f} s")
        time.sleep(poll_seconds)


def run_embedded(
    candidates: Iterable[Candidate],
    *,
    source: str,
    model_reference: str | None = None,
    on_submit_progress: Callable[[int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[SubmitResult, JobCounts]:
    """Submit ``candidates``, classify them with a local worker, and wait."""
    use_embedded_queue()
    upgrade()
    worker = start_worker()
    try:
        result = submit(
            candidates,
            source=source,
            model_reference=model_reference,
            on_progress=on_submit_progress,
        )
        counts = wait_for_job(result.job_id, worker=worker, on_progress=on_progress)
    finally:
        stop_worker(worker)
    return result, counts
