"""What a worker process holds: its loaded models, ready for inference.

TensorFlow is not fork-safe, so nothing here runs in the parent process:
models load in each pool process after the fork (``worker_process_init``),
or on the first task in pools that do not fork.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from celery.signals import worker_process_init

from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.models import registry
from imgq.models.preprocessing import DecodeLimits
from imgq.ops import metrics
from imgq.worker.inference import BatchClassifier, configure_devices

log = logging.getLogger(__name__)

# Two versions fit side by side: the production one and the one a
# re-inference is running while it is promoted.
MODELS_KEPT = 2

_classifiers: OrderedDict[int, BatchClassifier] = OrderedDict()
_lock = threading.Lock()
_devices_configured = False
ready = threading.Event()


def decode_limits() -> DecodeLimits:
    settings = get_settings()
    return DecodeLimits(
        allowed_formats=settings.allowed_formats,
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_image_bytes,
    )


def _configure_devices_once() -> None:
    global _devices_configured
    if not _devices_configured:
        settings = get_settings()
        gpus = configure_devices(mixed_precision=settings.mixed_precision)
        log.info("devices: %s", ", ".join(gpus) or "CPU only")
        _devices_configured = True


def classifier_for(model_version_id: int) -> BatchClassifier:
    """The warmed-up classifier of a model version, loaded once per process."""
    with _lock:
        classifier = _classifiers.get(model_version_id)
        if classifier is not None:
            _classifiers.move_to_end(model_version_id)
            return classifier
        _configure_devices_once()
        settings = get_settings()
        with session_scope() as session:
            version = registry.resolve(session, model_version_id)
        loaded = registry.load(version)
        classifier = BatchClassifier(
            loaded,
            batch_size=settings.batch_size,
            decode_threads=settings.resolved_decode_threads,
            limits=decode_limits(),
            slow_seconds=settings.slow_model_seconds,
        )
        warm_ms = classifier.warm_up()
        log.info(
            "model version %d %r loaded and warmed up in %.0f ms (batch %d)",
            version.id,
            version.name,
            warm_ms,
            settings.batch_size,
        )
        _classifiers[model_version_id] = classifier
        metrics.model_loaded(version.id, version.name)
        while len(_classifiers) > MODELS_KEPT:
            _, evicted = _classifiers.popitem(last=False)
            evicted.close()
            metrics.model_loaded(
                evicted.loaded.version_id, evicted.loaded.name, loaded=False
            )
        return classifier


def preload(reference: str) -> int:
    """Load and warm up the model ``reference``; marks the process ready."""
    with session_scope() as session:
        version_id = registry.resolve(session, reference).id
    classifier_for(version_id)
    ready.set()
    metrics.set_ready(True)
    return version_id


@worker_process_init.connect
def _load_after_fork(**_: object) -> None:
    # not ready until the model is warm: readiness checks see this process
    metrics.set_ready(False)
    reference = get_settings().model
    try:
        preload(reference)
    except Exception:
        # the task loads it again and reports the error with the batch
        log.exception("could not preload model %r", reference)
