"""``imgq metrics``: what no single worker knows, for Prometheus.

One exporter per deployment reports the depth of the fresh and background
queues (Redis list lengths, or message files of the embedded queue), the jobs
still in progress and the images still waiting in queued batches. Every
scrape reads Redis and the database afresh; a source that cannot be read
shows as ``imgq_exporter_source_up{source=...} 0`` instead of an error page.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from imgq.config import Settings
from imgq.db.engine import get_engine, normalize_url, read_only, session_scope
from imgq.db.jobs import BATCH_QUEUED, DONE
from imgq.db.schema import Batch, Job
from imgq.ops.worker import serve
from imgq.worker.app import embedded_queue_folder

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 5.0
DATABASE_TIMEOUT_SECONDS = 5
# kombu keeps a Redis queue as one list per priority step: "name", "name\x06\x163" ...
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"


def redis_queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold the messages of the kombu queue ``queue``."""
    return [
        f"{queue}{KOMBU_PRIORITY_SEPARATOR}{step}" if step else queue
        for step in KOMBU_PRIORITY_STEPS
    ]


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in the fresh and the background queue."""
    queues = (settings.fresh_queue, settings.background_queue)
    url = settings.resolved_broker_url
    if url.startswith("filesystem://"):
        folder = embedded_queue_folder(settings)
        return {queue: _message_files(folder, queue) for queue in queues}
    client = redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        depths = {}
        for queue in queues:
            with client.pipeline(transaction=False) as pipe:
                for key in redis_queue_keys(queue):
                    pipe.llen(key)
                depths[queue] = sum(int(length) for length in pipe.execute())
        return depths
    finally:
        client.close()


def _message_files(folder: Path, queue: str) -> int:
    # kombu's filesystem transport names a message "<time>_<uuid>.<queue>.msg"
    suffix = f"{queue}.msg"
    return sum(1 for path in folder.iterdir() if path.name.partition(".")[2] == suffix)


def database_engine(settings: Settings) -> Engine:
    """The engine the exporter reads with; it gives up connecting quickly."""
    url = normalize_url(settings.resolved_database_url)
    if make_url(url).get_backend_name() == "postgresql":
        # a scrape must not wait minutes for a database host that is gone
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=1,
            max_overflow=1,
            connect_args={"connect_timeout": DATABASE_TIMEOUT_SECONDS},
        )
    return read_only(get_engine(url))


def job_backlog(engine: Engine) -> tuple[dict[str, int], dict[str, int]]:
    """(jobs not done, images in queued batches), each by the job's queue."""
    with session_scope(engine) as session:
        jobs = session.execute(
            select(Job.queue, func.count()).where(Job.state != DONE).group_by(Job.queue)
        ).tuples()
        jobs_by_queue = {queue: int(count) for queue, count in jobs}
        images = session.execute(
            select(Job.queue, func.coalesce(func.sum(Batch.image_count), 0))
            .join(Job, Job.id == Batch.job_id)
            .where(Batch.state == BATCH_QUEUED)
            .group_by(Job.queue)
        ).tuples()
        images_by_queue = {queue: int(count) for queue, count in images}
    return jobs_by_queue, images_by_queue


class ClusterCollector(Collector):
    """Queue depth and job backlog, read at every scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = database_engine(settings)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "imgq_exporter_source_up",
            "1 if the exporter could read the source at this scrape.",
            labels=["source"],
        )
        yield from self._queues(up)
        yield from self._backlog(up)
        yield up

    def _queues(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        try:
            depths = queue_depths(self.settings)
        except (RedisError, OSError) as error:
            log.warning("queue depth not read: %s", error)
            up.add_metric(["broker"], 0)
            return
        up.add_metric(["broker"], 1)
        depth = GaugeMetricFamily(
            "imgq_queue_messages",
            "Messages (chunks of image ids) waiting in a queue.",
            labels=["queue"],
        )
        for queue, count in depths.items():
            depth.add_metric([queue], count)
        yield depth

    def _backlog(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        try:
            jobs, images = job_backlog(self.engine)
        except SQLAlchemyError as error:
            log.warning("job backlog not read: %s", error)
            up.add_metric(["database"], 0)
            return
        up.add_metric(["database"], 1)
        queues = {self.settings.fresh_queue, self.settings.background_queue}
        queues |= set(jobs) | set(images)
        jobs_family = GaugeMetricFamily(
            "imgq_jobs_in_progress", "Jobs not done yet.", labels=["queue"]
        )
        images_family = GaugeMetricFamily(
            "imgq_images_pending",
            "Images in batches that no worker has finished yet.",
            labels=["queue"],
        )
        for queue in sorted(queues):
            jobs_family.add_metric([queue], jobs.get(queue, 0))
            images_family.add_metric([queue], images.get(queue, 0))
        yield jobs_family
        yield images_family


def cluster_registry(settings: Settings) -> CollectorRegistry:
    """A registry holding only the exporter's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(settings))
    return registry


def run_exporter(settings: Settings, *, port: int, host: str) -> None:
    """Serve the exporter until SIGTERM or Ctrl-C."""

    def stop(signal_number: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    serve(cluster_registry(settings), port=port, host=host)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    log.info("metrics exporter stopped")
