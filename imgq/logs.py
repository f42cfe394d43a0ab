"""One log format for every imgq process: producer, worker, beat and CLI.

Lines about a job or a batch carry ``job=<id>`` and ``batch=<id>`` so that
``grep job=12`` follows one job through every process.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import TextIO

from imgq.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"

# "job=12 batch=34" while a task works on that job and batch.
_log_ids: ContextVar[str] = ContextVar("imgq_log_ids", default="")


def set_log_ids(*, job_id: int | None = None, batch_id: int | None = None) -> None:
    """Start this context's lines with ``job=<id> batch=<id>`` until cleared."""
    ids = [f"job={job_id}"] if job_id is not None else []
    ids += [f"batch={batch_id}"] if batch_id is not None else []
    _log_ids.set(" ".join(ids))


def clear_log_ids() -> None:
    """Stop adding ids to this context's lines."""
    _log_ids.set("")


class LogIdsFilter(logging.Filter):
    """Adds the ids of the job and batch in hand to the lines that lack them.

    Covers the lines of code that does not know the ids: an image that cannot
    be decoded, Celery's own "Task ... succeeded".
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _log_ids.get()
        message = str(record.msg)
        if ids and "job=" not in message and "batch=" not in message:
            record.msg = f"{ids}: {message}"
        return True


class StandardErrorHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    A plain StreamHandler keeps the stream it was created with, which breaks
    once a caller (a test runner, click's CliRunner) swaps and closes it.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str | int = "INFO") -> None:
    """Send imgq's logs to standard error in the one format; idempotent."""
    if isinstance(level, str):
        name = level.upper()
        level = logging.getLevelName(name)
        if not isinstance(level, int):
            raise ConfigError(f"unknown log level {name!r}")
    root = logging.getLogger()
    if not any(isinstance(handler, StandardErrorHandler) for handler in root.handlers):
        handler = StandardErrorHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(LogIdsFilter())
        root.addHandler(handler)
    root.setLevel(level)
    # TensorFlow and its friends are chatty at INFO, and Alembic announces its
    # dialect each time a command checks the schema.
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
