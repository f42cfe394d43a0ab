"""Real ``imgq worker`` processes for end-to-end tests, and image files to feed them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from imgq.db.engine import session_scope
from imgq.db.jobs import DONE, JobCounts, job_counts
from imgq.db.schema import Job

WORKER_START_TIMEOUT = 120.0


def write_digits(
    folder: Path, count: int, *, offset: int = 0
) -> list[tuple[Path, int]]:
    """Write ``count`` digit PNGs into class subfolders; returns (path, label)."""
    from imgq.models.datasets import digit_images

    written = []
    for number, (image, label) in enumerate(digit_images()):
        if number < offset:
            continue
        if len(written) == count:
            break
        path = folder / str(label) / f"digit-{number:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        written.append((path, label))
    return written


def write_png(path: Path, size: tuple[int, int] = (28, 28), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


@contextmanager
def running_worker(
    *,
    pool: str = "prefork",
    log_path: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """An ``imgq worker`` subprocess with this process's IMGQ_* settings."""
    env = os.environ.copy() | (extra_env or {})
    output = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "imgq", "worker", "--pool", pool],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield worker
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        if log_path:
            output.close()  # type: ignore[union-attr]


def wait_for_job(
    job_id: int,
    *,
    worker: subprocess.Popen[bytes] | None = None,
    timeout: float = 180.0,
) -> JobCounts:
    """Poll until the job is done; fail loudly if the worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            job = session.get(Job, job_id)
            if job is not None and job.state == DONE:
                return job_counts(session, job_id)
        if worker is not None and worker.poll() is not None:
            raise AssertionError(f"worker exited with code {worker.returncode}")
        time.sleep(0.25)
    with session_scope() as session:
        raise AssertionError(
            f"job {job_id} not done in {timeout} s: {job_counts(session, job_id)}"
        )
