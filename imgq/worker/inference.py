"""Batched inference: decode in threads while the model runs the last batch.

The forward pass is one ``tf.function`` with a fixed input shape
``(batch_size, height, width, channels)``: it is traced once at warm-up and
never again, because a short last batch is padded to the full size. While it
runs, the thread pool decodes the next batch (Pillow releases the GIL while
it decodes), so the accelerator does not wait for the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from imgq.errors import ImageError
from imgq.models.preprocessing import DecodeLimits, preprocess_pixels, scale_pixels
from imgq.models.registry import LoadedModel

log = logging.getLogger(__name__)

# files decoded by one task of the decode pool
DECODE_GROUP = 32

# each file's pixels, or why it could not be read, and its decode seconds
Decoded = list[tuple[np.ndarray | ImageError, float]]


@dataclass
class BatchResult:
    """One forward batch: what was classified and what could not be read."""

    image_ids: list[int]
    probabilities: np.ndarray
    failures: list[tuple[int, str, str, str]]
    decode_ms: float
    predict_ms: float


def configure_devices(
    *, memory_growth: bool = True, mixed_precision: bool = False
) -> list[str]:
    """Turn on memory growth for every GPU TensorFlow sees; returns their names.

    Growth lets several processes share a GPU and keeps TensorFlow from
    taking all of its memory at start-up.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        if memory_growth:
            tf.config.experimental.set_memory_growth(gpu, True)
    if mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return [gpu.name for gpu in gpus]


class BatchClassifier:
    """A loaded model with a compiled, fixed-shape predict function."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        batch_size: int,
        decode_threads: int,
        limits: DecodeLimits,
        slow_seconds: float = 0.0,
    ) -> None:
        import tensorflow as tf

        self.loaded = loaded
        self.batch_size = batch_size
        self.limits = limits
        self.slow_seconds = slow_seconds
        self.input_shape = (batch_size, *loaded.spec.input_shape)
        model = loaded.model
        signature = [tf.TensorSpec(self.input_shape, tf.float32)]

        @tf.function(input_signature=signature, reduce_retracing=False)
        def forward(images: tf.Tensor) -> tf.Tensor:
            # float32 out, also when the model runs in mixed precision
            return tf.cast(model(images, training=False), tf.float32)

        self.forward = forward
        # One input buffer for every batch: a fresh 1-100 MB array per batch
        # costs page faults; predict() is synchronous, so reuse is safe.
        self._inputs = np.zeros(self.input_shape, dtype=np.float32)
        self._pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")

    @property
    def class_names(self) -> list[str]:
        return self.loaded.class_names

    def warm_up(self) -> float:
        """Trace and run the forward pass once; returns the milliseconds it took."""
        started = time.perf_counter()
        self.predict(np.zeros(self.input_shape, dtype=np.float32))
        return (time.perf_counter() - started) * 1000

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for a full batch of model inputs."""
        return np.asarray(self.forward(images))

    def classify(self, items: Sequence[tuple[int, str]]) -> Iterator[BatchResult]:
        """Classify ``(image_id, path)`` pairs, one BatchResult per forward batch."""
        batches = [
            items[start : start + self.batch_size]
            for start in range(0, len(items), self.batch_size)
        ]
        if not batches:
            return
        pending = self._decode_async(batches[0])
        for number, batch in enumerate(batches):
            decoded = [item for future in pending for item in future.result()]
            if number + 1 < len(batches):
                # start decoding the next batch before this one runs the model
                pending = self._decode_async(batches[number + 1])
            yield self._run(batch, decoded)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _decode_async(self, batch: Sequence[tuple[int, str]]) -> list[Future[Decoded]]:
        # a task per group of files, not per file: a future costs about as
        # much as decoding a small image
        return [
            self._pool.submit(
                self._decode_group,
                [path for _, path in batch[start : start + DECODE_GROUP]],
            )
            for start in range(0, len(batch), DECODE_GROUP)
        ]

    def _decode_group(self, paths: list[str]) -> Decoded:
        return [self._decode(path) for path in paths]

    def _decode(self, path: str) -> tuple[np.ndarray | ImageError, float]:
        started = time.perf_counter()
        try:
            array: np.ndarray | ImageError = preprocess_pixels(
                path, self.loaded.spec, self.limits
            )
        except ImageError as error:
            array = error
        return array, time.perf_counter() - started

    def _run(
        self,
        batch: Sequence[tuple[int, str]],
        decoded: Decoded,
    ) -> BatchResult:
        good_ids: list[int] = []
        failures: list[tuple[int, str, str, str]] = []
        inputs = self._inputs
        for (image_id, path), (array, _) in zip(batch, decoded, strict=True):
            if isinstance(array, ImageError):
                log.warning("image %d %s: %s", image_id, array.kind, array.message)
                failures.append((image_id, path, array.kind, array.message))
                continue
            inputs[len(good_ids)] = array
            good_ids.append(image_id)
        # the pixels were copied in as they are; one division scales them all
        scale_pixels(inputs[: len(good_ids)], out=inputs[: len(good_ids)])
        # padding rows: zeros, so a batch's answers never depend on the last one
        inputs[len(good_ids) :] = 0.0
        decode_ms = sum(seconds for _, seconds in decoded) * 1000

        started = time.perf_counter()
        probabilities = (
            self.predict(inputs)[: len(good_ids)]
            if good_ids
            else (np.zeros((0, len(self.loaded.class_names)), dtype=np.float32))
        )
        if self.slow_seconds:
            # lets tests hold a batch in flight at a known point
            time.sleep(self.slow_seconds)
        predict_ms = (time.perf_counter() - started) * 1000
        return BatchResult(good_ids, probabilities, failures, decode_ms, predict_ms)
