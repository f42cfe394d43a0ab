"""The Celery application and every setting that makes delivery safe.

- Late acknowledgement with reject-on-worker-lost: a batch whose process dies
  is delivered again, never dropped. The work is idempotent, so a second
  delivery adds no rows.
- Prefetch of one: a worker holds no message it is not working on, so a
  crash returns at most one chunk to the queue.
- JSON only: a pickled message is refused, never deserialised.
- Redis' visibility timeout sits above the longest batch, so an unacknowledged
  chunk is not handed to a second worker while the first still runs it.
- Queue order "priority": a worker polls the fresh queue before the background
  queue on every fetch, so a production line is served before a re-inference.
- Beat sends the re-inference task on ``IMGQ_REINFER_SCHEDULE``; it and the
  chunks it queues are routed to the background queue.

The app is built lazily from the settings, so tests and ``imgq run`` can
point it at another broker before anything connects.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun
from kombu import Queue

from imgq.config import Settings, get_settings
from imgq.logs import clear_log_ids, configure_logging, set_log_ids
from imgq.worker.schedule import BEAT_SCHEDULE_FILE, REINFER_TASK, beat_schedule

TASK_MODULES = [
    "imgq.worker.tasks",
    "imgq.worker.reinfer",
    "imgq.worker.reconcile",
    "imgq.report.tasks",
]
CLASSIFY_TASK = "imgq.classify_chunk"
# A pool process loads and warms up its model before it reports for work;
# Celery's default of 4 s kills every replacement of a crashed one in a loop.
POOL_PROCESS_START_SECONDS = 300.0


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    if settings.resolved_broker_url.startswith("filesystem://"):
        folder = embedded_queue_folder(settings)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder.parent / "control"),
        }
    return {
        "visibility_timeout": settings.visibility_timeout,
        "queue_order_strategy": "priority",
        # Look for messages of dead workers a few times per visibility timeout.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 10,
    }


def embedded_queue_folder(settings: Settings) -> Path:
    folder = settings.data_dir.resolve() / "queue" / "messages"
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / "control").mkdir(parents=True, exist_ok=True)
    return folder


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``."""
    app = Celery("imgq", broker=settings.resolved_broker_url, include=TASK_MODULES)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_proc_alive_timeout=POOL_PROCESS_START_SECONDS,
        # A batch whose broker connection drops runs to its end; kombu has put
        # its message back, and the second run skips the rows already written.
        # Cancelling it instead would kill the pool process and its model.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue=settings.fresh_queue,
        task_queues=(
            Queue(settings.fresh_queue, routing_key=settings.fresh_queue),
            Queue(settings.background_queue, routing_key=settings.background_queue),
        ),
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        enable_utc=True,
        # Re-inference is background work: the task and the chunks it queues.
        task_routes={
            REINFER_TASK: {
                "queue": settings.background_queue,
                "routing_key": settings.background_queue,
            }
        },
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.data_dir / BEAT_SCHEDULE_FILE),
    )
    return app


@cache
def get_app() -> Celery:
    """The process-wide Celery app for the settings in force."""
    return make_celery(get_settings())


def reset_app() -> None:
    """Forget the app, so that the next get_app() reads the settings again."""
    get_app.cache_clear()


@setup_logging.connect
def _log_in_imgq_format(**_: Any) -> None:
    """Celery's worker and beat log in imgq's one format, at IMGQ_LOG_LEVEL."""
    configure_logging(get_settings().log_level)


@task_prerun.connect
def _log_task_ids(kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    kwargs = kwargs or {}
    set_log_ids(job_id=kwargs.get("job_id"), batch_id=kwargs.get("batch_id"))


@task_postrun.connect
def _forget_task_ids(**_: Any) -> None:
    clear_log_ids()
