"""One log format for every imgq process: producer, worker, beat and CLI.

Lines about a job or a batch carry ``job=<id>`` and ``batch=<id>`` so that
``grep job=12`` follows one job through every process.
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    """Send imgq's logs to standard error in the one format; idempotent."""
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    if not any(getattr(handler, "_imgq", False) for handler in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._imgq = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # TensorFlow and its friends are chatty at INFO.
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
