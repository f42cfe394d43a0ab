"""Helpers of the operations tests: free ports, scrapes, a private Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis
from prometheus_client.parser import text_string_to_metric_families
from support import RedisServer

from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.db.schema import ModelAlias, ModelVersion
from imgq.models.registry import file_sha256
from imgq.ops.exporter import redis_queue_keys
from imgq.ops.health import PartHealth, check_all

T = TypeVar("T")

# A stand-in for TensorFlow whose import never finishes: a pool process that
# imports it never loads its model, so its worker stays "not ready".
HELD_TENSORFLOW = '''"""Never finishes importing: stands in for TensorFlow."""
import time

while True:
    time.sleep(1)
'''

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# imgq.logs.LOG_FORMAT, as a pattern
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) +"
    r"(?P<process>\S+) (?P<logger>[\w.]+): (?P<message>.*)$"
)


def scrape(port: int, *, timeout: float = 5.0) -> Samples:
    """GET /metrics on 127.0.0.1:port, parsed into {(name, labels): value}."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return parse(text)


def parse(text: str) -> Samples:
    """The samples of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of one sample, or None when the endpoint does not show it."""
    return samples.get((name, frozenset(labels.items())))


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.25
) -> T:
    """Call ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(every)
    raise AssertionError(f"{what} not seen within {timeout} s")


def wait_for_health(
    accept: Callable[[dict[str, PartHealth]], bool], *, timeout: float, what: str
) -> dict[str, PartHealth]:
    """Check health until ``accept`` likes the parts; returns them by name."""

    def probe() -> dict[str, PartHealth] | None:
        parts = {part.part: part for part in check_all(get_settings(), timeout=1.0)}
        return parts if accept(parts) else None

    return wait_for(probe, timeout=timeout, what=what, every=0.5)


@contextmanager
def held_worker(
    folder: Path, *, arguments: tuple[str, ...] = ("worker",), log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``imgq ARGUMENTS`` whose pool processes never load their model.

    Killed at the end: a warm shutdown would wait for the model forever.
    """
    package = folder / "tensorflow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(HELD_TENSORFLOW)
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "imgq", *arguments],
            env=os.environ.copy() | {"PYTHONPATH": str(folder)},
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
        try:
            yield worker
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def register_model_row(*, folder: Path | None = None) -> int:
    """A model version row, promoted to production, for tests that run no model.

    With ``folder``, its file is an empty file there: it passes the worker's
    hash check, though it is no model.
    """
    path = folder / "row-only.keras" if folder else None
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    with session_scope() as session:
        version = ModelVersion(
            name="row-only",
            architecture="cnn",
            path=str(path or "/nonexistent/model.keras"),
            content_hash=file_sha256(path) if path else "0" * 64,
            class_names=[str(digit) for digit in range(10)],
            input_shape=[28, 28, 1],
            preprocessing={},
            metrics={},
            data_fingerprint="none",
            imgq_version="test",
        )
        session.add(version)
        session.flush()
        session.add(ModelAlias(alias="production", model_version_id=version.id))
        return version.id


def log_lines(text: str) -> list[re.Match[str]]:
    """The lines of ``text`` in imgq's log format."""
    return [match for line in text.splitlines() if (match := LOG_LINE.match(line))]


def empty_test_queues() -> None:
    """Delete the messages a test left in its queues on the shared Redis."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.resolved_broker_url)
    for queue in (settings.fresh_queue, settings.background_queue):
        client.delete(*redis_queue_keys(queue))
    client.close()


@contextmanager
def private_redis(folder: Path, *, password: str = "s3cret") -> Iterator[RedisServer]:
    """Start a redis-server with a password on a free port, for this block."""
    server = RedisServer(folder, password=password).start()
    try:
        yield server
    finally:
        server.stop()
