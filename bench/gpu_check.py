"""One short run that checks imgq's GPU path on a machine with an NVIDIA GPU.

    .venv/bin/python bench/gpu_check.py [--seconds 10] [--mixed-precision]

It prints: the devices TensorFlow sees and whether memory growth took; where
the forward pass's ops were placed; the bare compiled forward pass of a larger
RGB model (the ``cnn`` architecture at 128x128x3, batch 256) in images per
second; and the worker's batch path (JPEG decoding in threads overlapped with
the forward pass) on generated photos. It runs on a CPU too, and says so, so
the script itself is tested where there is no GPU. Exit code 0 means every
check ran; 2 means ``--require-gpu`` was given and no GPU was found.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_SIZE = 128
CLASS_COUNT = 2


def write_photos(folder: Path, count: int) -> list[tuple[int, str]]:
    """``count`` random 256x256 RGB JPEGs, as (id, path) pairs."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for number in range(count):
        pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        path = folder / f"part-{number:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        items.append((number, str(path)))
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--photos", type=int, default=2048)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--require-gpu", action="store_true")
    arguments = parser.parse_args()

    import keras
    import tensorflow as tf

    from imgq.models import architectures
    from imgq.models.preprocessing import DecodeLimits, PreprocessSpec
    from imgq.models.registry import LoadedModel
    from imgq.worker.inference import BatchClassifier, configure_devices

    gpus = configure_devices(mixed_precision=arguments.mixed_precision)
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}")
    print(f"built with CUDA: {tf.test.is_built_with_cuda()}")
    print(f"GPUs: {gpus or 'none'}")
    for gpu in tf.config.list_physical_devices("GPU"):
        growth = tf.config.experimental.get_memory_growth(gpu)
        details = tf.config.experimental.get_device_details(gpu)
        print(f"  {gpu.name}: memory growth {growth}, {details}")
    if not gpus:
        print("no GPU: the checks below run on the CPU")
        if arguments.require_gpu:
            return 2

    spec = PreprocessSpec(height=IMAGE_SIZE, width=IMAGE_SIZE, channels=3)
    model = architectures.build(
        "cnn", input_shape=spec.input_shape, class_count=CLASS_COUNT
    )
    print(
        f"model: cnn at {spec.input_shape}, {model.count_params():,} parameters, "
        f"policy {keras.mixed_precision.global_policy().name}"
    )
    loaded = LoadedModel(
        version_id=0,
        name="gpu-check",
        model=model,
        spec=spec,
        class_names=["ok", "defective"],
    )
    classifier = BatchClassifier(
        loaded,
        batch_size=arguments.batch_size,
        decode_threads=max(2, (os.cpu_count() or 2) - 1),
        limits=DecodeLimits(),
    )
    print(f"warm-up (trace and first run): {classifier.warm_up():.0f} ms")

    tf.debugging.set_log_device_placement(True)
    probe = classifier.forward(tf.zeros(classifier.input_shape))
    tf.debugging.set_log_device_placement(False)
    print(f"forward output on: {probe.device}")
    if gpus and "GPU" not in probe.device:
        print("ERROR: a GPU is present but the forward pass ran elsewhere")
        return 1

    images = tf.random.uniform(classifier.input_shape)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < arguments.seconds:
        classifier.forward(images).numpy()
        count += arguments.batch_size
    bare = count / (time.perf_counter() - started)
    print(f"bare forward, batch {arguments.batch_size}: {bare:,.0f} images/s")

    with tempfile.TemporaryDirectory() as folder:
        items = write_photos(Path(folder), arguments.photos)
        started = time.perf_counter()
        classified = failed = 0
        for result in classifier.classify(items):
            classified += len(result.image_ids)
            failed += len(result.failures)
        seconds = time.perf_counter() - started
    print(
        f"worker batch path (decode 256x256 JPEG + resize + forward): "
        f"{classified / seconds:,.0f} images/s, {failed} failed"
    )
    print(f"  ratio to the bare forward: {classified / seconds / bare:.2f}")
    if gpus:
        memory = tf.config.experimental.get_memory_info("GPU:0")
        print(
            f"GPU memory: current {memory['current'] / 2**20:,.0f} MiB, "
            f"peak {memory['peak'] / 2**20:,.0f} MiB"
        )
    classifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
