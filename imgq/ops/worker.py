"""What a worker's main process serves: its metrics and its readiness.

``imgq worker`` calls :func:`start_worker_ops` before Celery forks the pool:
the pool processes then record into the worker's metrics folder
(:mod:`imgq.ops.metrics`), and the main process serves the folder's sum on
``metrics_port``. Readiness is a Celery remote-control command,
``imgq_ready``, answered by the main process from the ``imgq_ready`` gauges
its pool processes write: no extra port, and ``imgq health`` asks every
worker at once through the broker it already knows.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.worker.control import control_command
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from imgq.config import Settings
from imgq.errors import ConfigError
from imgq.ops.metrics import (
    MODEL_METRIC,
    READY_METRIC,
    enable_multiprocess,
    forget_dead_processes,
    live_gauge_samples,
    multiprocess_folder,
)

log = logging.getLogger(__name__)

READY_COMMAND = "imgq_ready"


@dataclass(frozen=True)
class Readiness:
    """How many pool processes of a worker have their model warmed up."""

    processes: int
    ready_processes: int
    models: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.processes > 0 and self.ready_processes == self.processes


def metrics_folder(settings: Settings, node: str) -> Path:
    """Where the worker ``node`` keeps its metric files.

    One folder per worker name, which Celery needs unique anyway: workers
    sharing a data dir (a volume) each keep their own.
    """
    return settings.data_dir.resolve() / "metrics" / node


def start_worker_ops(settings: Settings, *, node: str) -> Path:
    """Prepare the worker's metrics folder and serve it if ``metrics_port`` is set.

    Runs in the worker's main process, before the pool processes fork.
    """
    folder = metrics_folder(settings, node)
    # files of an earlier run of this worker would be added to this run's
    shutil.rmtree(folder, ignore_errors=True)
    enable_multiprocess(folder)
    if settings.metrics_port:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkerCollector(folder))
        serve(registry, port=settings.metrics_port)
    return folder


def serve(registry: CollectorRegistry, *, port: int, host: str = "0.0.0.0") -> None:
    """Serve ``registry`` for Prometheus on ``host:port`` from a daemon thread."""
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {error}") from error
    log.info("metrics for Prometheus on http://%s:%d/metrics", host, port)


class WorkerCollector(Collector):
    """The sum of a worker's metric files, without its exited processes' gauges."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files = MultiProcessCollector(None, path=str(folder))

    def collect(self) -> Iterator[Metric]:
        forget_dead_processes(self.folder)
        ready_seen = False
        for metric in self._files.collect():
            ready_seen = ready_seen or metric.name == READY_METRIC
            yield metric
        if not ready_seen:
            # no pool process has started yet
            yield GaugeMetricFamily(
                READY_METRIC, "1 once every pool process has warmed up.", value=0
            )


def readiness(folder: Path) -> Readiness:
    """Read the readiness of a worker's pool processes from its metrics folder."""
    forget_dead_processes(folder)
    ready = live_gauge_samples(folder, READY_METRIC)
    models = {
        f"{sample.labels['model_version']} {sample.labels['model_name']}"
        for samples in live_gauge_samples(folder, MODEL_METRIC).values()
        for sample in samples
        if sample.value >= 1
    }
    return Readiness(
        processes=len(ready),
        ready_processes=sum(
            1 for samples in ready.values() if all(s.value >= 1 for s in samples)
        ),
        models=tuple(sorted(models)),
    )


@control_command()
def imgq_ready(state: Any) -> dict[str, Any]:
    """Whether the pool processes of this worker have warmed up their model."""
    task_consumer = state.consumer.task_consumer
    queues = [queue.name for queue in getattr(task_consumer, "queues", None) or []]
    folder = multiprocess_folder()
    if folder is None:
        return {"ready": False, "queues": queues, "reason": "not an 'imgq worker'"}
    found = readiness(folder)
    return {
        "ready": found.ready,
        "processes": found.processes,
        "ready_processes": found.ready_processes,
        "models": list(found.models),
        "queues": queues,
    }
