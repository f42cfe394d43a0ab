"""The Prometheus metrics of a worker, recorded in the process that runs batches.

With the prefork pool that process is a child of the worker. Each process
records into memory-mapped files in a folder of the data dir
(prometheus-client's multiprocess mode), and the worker's main process serves
their sum (:mod:`imgq.ops.worker`). This was chosen over an HTTP server in the
child: the main process outlives its children, so the endpoint stays up and
the counts stay whole when a pool process crashes or is replaced, and one port
serves any ``--concurrency``. The solo and threads pools record and serve in
one process through the same files.

Recording never fails a batch: an error writing a metric is logged and the
batch goes on. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, wraps
from pathlib import Path
from typing import ParamSpec, Protocol

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_METRIC = "imgq_ready"
MODEL_METRIC = "imgq_model_loaded"
# Whole batches: milliseconds on a GPU, seconds for large images on a CPU.
SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

P = ParamSpec("P")


class BatchOutcome(Protocol):
    """What a worker knows of one forward batch (an inference BatchResult)."""

    image_ids: list[int]
    failures: list[tuple[int, str, str, str]]
    decode_ms: float
    predict_ms: float


@dataclass(frozen=True)
class WorkerMetrics:
    """The metric objects of one process."""

    classified: Counter
    failed: Counter
    batch_size: Histogram
    decode_seconds: Histogram
    predict_seconds: Histogram
    write_seconds: Histogram
    model_loaded: Gauge
    ready: Gauge


@cache
def worker_metrics() -> WorkerMetrics:
    """This process's metrics, created on first use (after any fork)."""
    return WorkerMetrics(
        classified=Counter(
            "imgq_images_classified",
            "Images given a prediction.",
            registry=None,
        ),
        failed=Counter(
            "imgq_images_failed",
            "Images recorded as failures, by kind of failure.",
            ["kind"],
            registry=None,
        ),
        batch_size=Histogram(
            "imgq_batch_size_images",
            "Images per forward batch, failures included.",
            buckets=BATCH_BUCKETS,
            registry=None,
        ),
        decode_seconds=Histogram(
            "imgq_decode_seconds",
            "Decoding time of a batch's images, summed over the decode threads.",
            buckets=SECONDS_BUCKETS,
            registry=None,
        ),
        predict_seconds=Histogram(
            "imgq_predict_seconds",
            "Forward pass of one batch.",
            buckets=SECONDS_BUCKETS,
            registry=None,
        ),
        write_seconds=Histogram(
            "imgq_write_seconds",
            "Writing one batch's predictions and failures to the database.",
            buckets=SECONDS_BUCKETS,
            registry=None,
        ),
        model_loaded=Gauge(
            MODEL_METRIC,
            "1 for each model version loaded in a pool process.",
            ["model_version", "model_name"],
            multiprocess_mode="livemax",
            registry=None,
        ),
        ready=Gauge(
            READY_METRIC,
            "1 once every pool process has loaded and warmed up its model.",
            multiprocess_mode="livemin",
            registry=None,
        ),
    )


def _never_fails(record: Callable[P, None]) -> Callable[P, None]:
    @wraps(record)
    def recorded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except OSError as error:
            # a full disk must not fail the batch the metric describes
            log.warning("metric not recorded by %s: %s", record.__name__, error)

    return recorded


@_never_fails
def observe_batch(result: BatchOutcome, *, write_ms: float) -> None:
    """Count one written forward batch and its timings."""
    metrics = worker_metrics()
    metrics.classified.inc(len(result.image_ids))
    for _image_id, _path, kind, _message in result.failures:
        metrics.failed.labels(kind=kind).inc()
    metrics.batch_size.observe(len(result.image_ids) + len(result.failures))
    metrics.decode_seconds.observe(result.decode_ms / 1000)
    metrics.predict_seconds.observe(result.predict_ms / 1000)
    metrics.write_seconds.observe(write_ms / 1000)


@_never_fails
def count_failures(kind: str, count: int) -> None:
    """Count failures recorded outside a forward batch (a chunk given up)."""
    if count:
        worker_metrics().failed.labels(kind=kind).inc(count)


@_never_fails
def set_ready(ready: bool) -> None:
    """Mark this process ready (model loaded and warmed up) or not yet."""
    worker_metrics().ready.set(1 if ready else 0)


@_never_fails
def model_loaded(version_id: int, name: str, *, loaded: bool = True) -> None:
    """Show (or, with ``loaded=False``, stop showing) a model version as loaded."""
    gauge = worker_metrics().model_loaded
    gauge.labels(model_version=str(version_id), model_name=name).set(int(loaded))


def enable_multiprocess(folder: Path) -> None:
    """Record into files in ``folder`` from now on, here and in child processes."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROCESS_ENV] = str(folder)
    # prometheus-client picks its value class when first imported, which may
    # have happened before the folder was known.
    values.ValueClass = values.get_value_class()
    worker_metrics.cache_clear()


def multiprocess_folder() -> Path | None:
    """The folder this process records into, if any."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    return Path(folder) if folder else None


def forget_dead_processes(folder: Path) -> None:
    """Drop the live gauges (ready, models) of pool processes that have exited.

    Counters and histograms of a dead process stay: its work was done.
    """
    for path in folder.glob("gauge_live*_*.db"):
        pid = _pid_of(path)
        if pid is not None and not _is_alive(pid):
            mark_process_dead(pid, str(folder))


def live_gauge_samples(folder: Path, name: str) -> dict[int, list[Sample]]:
    """The samples of the live gauge ``name``, by process id."""
    samples: dict[int, list[Sample]] = {}
    for path in folder.glob("gauge_live*_*.db"):
        pid = _pid_of(path)
        if pid is None:
            continue
        try:
            merged = MultiProcessCollector.merge([str(path)], accumulate=False)
        except FileNotFoundError:
            continue  # its process exited since the glob
        for metric in merged:
            if metric.name == name:
                samples.setdefault(pid, []).extend(metric.samples)
    return samples


def _pid_of(path: Path) -> int | None:
    suffix = path.stem.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def _is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
