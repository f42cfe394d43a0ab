"""``imgq worker``: a Celery worker set up for one GPU (or the CPU)."""

from __future__ import annotations

import logging
import os
import socket

import click

from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.db.migrate import require_current

log = logging.getLogger(__name__)


@click.command("worker")
@click.option(
    "--gpu",
    type=int,
    default=None,
    help="Index of the GPU this worker uses (sets CUDA_VISIBLE_DEVICES); "
    "run one worker per GPU. Default: the IMGQ_GPU setting.",
)
@click.option(
    "--queues",
    default=None,
    help="Comma-separated queues, polled in this order "
    "(default: the fresh queue, then the background queue).",
)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Pool processes; keep 1 per GPU, the model fills it.",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
    help="prefork runs batches in a child process: a crash there loses "
    "no message and the worker lives on.",
)
@click.option(
    "--name", default=None, help="Worker node name (default: imgq-gpuN@host)."
)
@click.option("--quiet", is_flag=True, help="Leave out Celery's start-up banner.")
def worker_command(
    gpu: int | None,
    queues: str | None,
    concurrency: int,
    pool: str,
    name: str | None,
    quiet: bool,
) -> None:
    """Start a worker that classifies queued batches and stores the results.

    It checks the database schema and the production model's file before it
    starts, and refuses to start (exit code 5) if the model is missing or
    corrupt, so a supervisor does not restart it in a loop. The model loads in
    the pool process after the fork and is warmed up before the first batch.
    """
    from imgq.models import registry
    from imgq.ops.worker import start_worker_ops
    from imgq.worker.app import get_app

    settings = get_settings()
    gpu = settings.gpu if gpu is None else gpu
    if gpu >= 0:
        # must be set before TensorFlow is imported anywhere in this process tree
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    require_current()
    with session_scope() as session:
        version = registry.resolve(session, settings.model)
        registry.verify_file(version)
    log.info("model version %d %r checked", version.id, version.name)

    queue_list = queues or f"{settings.fresh_queue},{settings.background_queue}"
    node = (
        name or f"imgq-{'gpu' + str(gpu) if gpu >= 0 else 'cpu'}@{socket.gethostname()}"
    )
    # before the pool forks: its processes record metrics into this folder
    start_worker_ops(settings, node=node)
    get_app().worker_main(
        (["--quiet"] if quiet else [])
        + [
            "worker",
            "--queues",
            queue_list,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--hostname",
            node,
            "--loglevel",
            settings.log_level,
            "--without-gossip",
            "--without-mingle",
        ]
    )


commands = [worker_command]
