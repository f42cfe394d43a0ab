"""One log format for every imgq process: producer, worker, beat and CLI.

Lines about a job or a batch carry ``job=<id>`` and ``batch=<id>`` so that
``grep job=12`` follows one job through every process.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from imgq.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


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
        root.addHandler(handler)
    root.setLevel(level)
    # TensorFlow and its friends are chatty at INFO.
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
