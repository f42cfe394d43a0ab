"""Throughput of imgq's pipeline next to the bare model and the naive way.

    .venv/bin/python bench/pipeline.py                    # 10,000 images
    .venv/bin/python bench/pipeline.py --million-manifest # also producer memory
    .venv/bin/python bench/pipeline.py --photos 1000      # also 224x224 JPEGs

Prints, in one run on this machine:
(a) the bare compiled model on random tensors, images per second;
(b) end to end, submit to committed rows, through Redis and one worker
    process, on SQLite and on PostgreSQL;
(c) the naive way, one Celery task per image calling ``model.predict`` and
    inserting its row, on a few hundred of the files;
and the ratios b/a and b/c. With ``--photos N``, also (a) and (b) for N
224x224 RGB JPEG photos and an RGB ``cnn`` (untrained: speed, not answers,
is measured), batch 64, on SQLite. Needs Redis on 127.0.0.1:6379 and, for the
PostgreSQL run, a server at IMGQ_BENCH_POSTGRES_URL (default: the local one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402  (a sibling script module, found via HERE)
    configure,
    drop_postgres_database,
    fresh_postgres_database,
    start_worker,
    stop,
    submit_and_wait,
)

from imgq.models.datasets import DIGITS_SPEC  # noqa: E402
from imgq.models.preprocessing import PreprocessSpec  # noqa: E402

DIGITS = [str(digit) for digit in range(10)]
PHOTO_SIZE = 224
PHOTO_SPEC = PreprocessSpec(height=PHOTO_SIZE, width=PHOTO_SIZE, channels=3)
PHOTO_CLASSES = ["ok", "defective"]
PHOTO_BATCH = 64


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 28x28 digit PNGs (a digit, with one pixel made unique)."""
    from imgq.models.datasets import digit_images

    digits = [(np.asarray(image), label) for image, label in digit_images()]
    paths = []
    for number in range(count):
        pixels, label = digits[number % len(digits)]
        pixels = pixels.copy()
        # the copy number in a corner pixel makes every file's content distinct
        pixels[0, 0] = number // len(digits)
        path = folder / str(label) / f"{number:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def train_model(workdir: Path) -> Path:
    from imgq.models.datasets import load_digits_dataset
    from imgq.models.training import train

    result = train(
        load_digits_dataset(),
        architecture="cnn",
        output_dir=workdir / "training",
        epochs=5,
        patience=0,
    )
    path = workdir / "cnn.keras"
    result.model.save(path)
    return path


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 224x224 RGB JPEG photos: a lit part on a background."""
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:PHOTO_SIZE, 0:PHOTO_SIZE]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        centre = rng.integers(60, PHOTO_SIZE - 60, 2)
        distance = np.hypot(rows - centre[0], columns - centre[1])
        light = np.clip(255 - distance * rng.uniform(1.5, 3.0), 0, 255)
        colour = rng.uniform(0.4, 1.0, 3)
        pixels = light[:, :, np.newaxis] * colour + rng.normal(0, 8, (*light.shape, 3))
        path = folder / f"part-{number:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def photo_model(workdir: Path) -> Path:
    """The ``cnn`` architecture at 224x224x3 with two classes, untrained."""
    from imgq.models import architectures

    model = architectures.build(
        "cnn", input_shape=PHOTO_SPEC.input_shape, class_count=len(PHOTO_CLASSES)
    )
    path = workdir / "photo-cnn.keras"
    model.save(path)
    return path


def register_model(
    model_path: Path,
    spec: PreprocessSpec = DIGITS_SPEC,
    classes: Sequence[str] = DIGITS,
) -> None:
    from imgq.db.engine import session_scope
    from imgq.db.migrate import upgrade
    from imgq.models import registry

    upgrade()
    with session_scope() as session:
        version = registry.register_file(
            session,
            model_path,
            name="bench-cnn",
            architecture="cnn",
            class_names=list(classes),
            spec=spec,
            metrics={},
            data_fingerprint="bench",
        )
        registry.promote(session, version.id)


def bare_model(
    model_path: Path,
    batch_size: int,
    seconds: float,
    *,
    spec: PreprocessSpec = DIGITS_SPEC,
    classes: Sequence[str] = DIGITS,
) -> float:
    """Images per second of the compiled forward pass on random tensors."""
    import keras

    from imgq.models.preprocessing import DecodeLimits
    from imgq.models.registry import LoadedModel
    from imgq.worker.inference import BatchClassifier

    loaded = LoadedModel(
        version_id=0,
        name="bench",
        model=keras.saving.load_model(model_path, compile=False),
        spec=spec,
        class_names=list(classes),
    )
    classifier = BatchClassifier(
        loaded, batch_size=batch_size, decode_threads=1, limits=DecodeLimits()
    )
    classifier.warm_up()
    images = np.random.default_rng(0).random(classifier.input_shape, dtype=np.float32)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.predict(images)
        count += batch_size
    rate = count / (time.perf_counter() - started)
    classifier.close()
    return rate


def end_to_end(
    workdir: Path,
    database_url: str,
    model_path: Path,
    name: str,
    *,
    images: str = "images",
    photos: bool = False,
) -> float:
    """Images per second from submit to committed rows, one worker."""
    configure(workdir, database_url)
    if photos:
        register_model(model_path, PHOTO_SPEC, PHOTO_CLASSES)
    else:
        register_model(model_path)
    warm_up_folder = workdir / f"warm-{name}"
    (write_photos if photos else write_images)(warm_up_folder, 4)
    worker = start_worker(workdir / f"worker-{name}.log")
    try:
        # the first job waits for the worker's start and model warm-up
        submit_and_wait(warm_up_folder, worker=worker)
        done, seconds = submit_and_wait(workdir / images, worker=worker)
    finally:
        stop(worker)
    print(f"  {name}: {done} images in {seconds:.2f} s")
    return done / seconds


def naive(workdir: Path, model_path: Path, paths: list[Path]) -> float:
    """One Celery task per image calling model.predict, one INSERT each."""
    configure(workdir, f"sqlite:///{workdir / 'naive.db'}")
    register_model(model_path)
    queue = f"bench.naive.{uuid.uuid4().hex[:8]}"
    env = os.environ.copy() | {
        "NAIVE_MODEL": str(model_path),
        "NAIVE_QUEUE": queue,
        "PYTHONPATH": str(HERE),
    }
    log = open(workdir / "naive-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "naive_worker",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queue,
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=HERE,
    )
    os.environ["NAIVE_QUEUE"] = queue
    import naive_worker

    engine = sa.create_engine(os.environ["IMGQ_DATABASE_URL"])
    try:
        naive_worker.app.send_task("naive.predict", args=[str(paths[0])], queue=queue)
        _wait_rows(engine, 1, worker)
        started = time.perf_counter()
        for path in paths:
            naive_worker.app.send_task("naive.predict", args=[str(path)], queue=queue)
        _wait_rows(engine, len(paths) + 1, worker)
        seconds = time.perf_counter() - started
    finally:
        stop(worker)
    print(f"  naive: {len(paths)} images in {seconds:.2f} s")
    return len(paths) / seconds


def _wait_rows(engine: sa.Engine, count: int, worker: subprocess.Popen[bytes]) -> None:
    while True:
        with engine.connect() as connection:
            # the worker creates the table when it handles its first task
            if sa.inspect(connection).has_table("naive_results"):
                rows = connection.exec_driver_sql("SELECT count(*) FROM naive_results")
                if rows.scalar_one() >= count:
                    return
        if worker.poll() is not None:
            raise SystemExit("the naive worker died; see naive-worker.log")
        time.sleep(0.1)


def producer_memory(
    workdir: Path, paths: list[Path], lines: int
) -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of ``imgq submit`` on a manifest of ``lines``."""
    manifest = workdir / f"manifest-{lines}.csv"
    with open(manifest, "w") as file:
        file.write("path\n")
        for number in range(lines):
            file.write(f"{paths[number % len(paths)]}\n")
    # VmHWM, not ru_maxrss: ru_maxrss keeps the peak of the forked parent
    # (this process, TensorFlow loaded) across the exec
    program = (
        "import sys\n"
        "from imgq.cli import main\n"
        "try:\n"
        "    main(['submit', sys.argv[1]])\n"
        "except SystemExit:\n"
        "    pass\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "print(status.split()[0], file=sys.stderr)\n"
    )
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", program, str(manifest)],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_kib = int(finished.stderr.strip().splitlines()[-1])
    return peak_kib / 1024, time.perf_counter() - started


def photos(workdir: Path, count: int) -> None:
    """The bare model and end to end (SQLite) on 224x224 RGB JPEG photos."""
    print(f"writing {count} 224x224 JPEG photos ...")
    write_photos(workdir / "photos", count)
    model_path = photo_model(workdir)
    bare = bare_model(
        model_path,
        PHOTO_BATCH,
        seconds=10.0,
        spec=PHOTO_SPEC,
        classes=PHOTO_CLASSES,
    )
    print(f"(a) photos, bare compiled model, batch {PHOTO_BATCH}: {bare:,.1f} images/s")
    os.environ["IMGQ_BATCH_SIZE"] = str(PHOTO_BATCH)
    url = f"sqlite:///{workdir / 'photos.db'}"
    rate = end_to_end(workdir, url, model_path, "photos", images="photos", photos=True)
    print(
        f"(b) photos, end to end, sqlite: {rate:,.1f} images/s, b/a = {rate / bare:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--naive-images", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--photos",
        type=int,
        default=0,
        metavar="N",
        help="Also run N 224x224 JPEG photos through an RGB CNN (SQLite, batch 64).",
    )
    parser.add_argument(
        "--million-manifest",
        action="store_true",
        help="Also measure the producer's memory on 1,000,000 lines.",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="Work in this folder and leave its files, databases and worker logs.",
    )
    arguments = parser.parse_args()
    os.environ["IMGQ_BATCH_SIZE"] = str(arguments.batch_size)

    with tempfile.TemporaryDirectory(prefix="imgq-bench-") as temporary:
        workdir = arguments.keep or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        configure(workdir, f"sqlite:///{workdir / 'setup.db'}")
        print(f"writing {arguments.images} PNG files ...")
        paths = write_images(workdir / "images", arguments.images)
        print("training the CNN for 5 epochs ...")
        model_path = train_model(workdir)

        bare = bare_model(model_path, arguments.batch_size, seconds=5.0)
        print(
            f"(a) bare compiled model, batch {arguments.batch_size}: "
            f"{bare:,.0f} images/s"
        )

        rates = {}
        for name in arguments.databases.split(","):
            if name == "sqlite":
                url = f"sqlite:///{workdir / 'bench.db'}"
                rates[name] = end_to_end(workdir, url, model_path, name)
            else:
                url = fresh_postgres_database()
                try:
                    rates[name] = end_to_end(workdir, url, model_path, name)
                finally:
                    drop_postgres_database(url)
            print(
                f"(b) end to end through Redis, one worker, {name}: "
                f"{rates[name]:,.0f} images/s"
            )

        slow = naive(workdir, model_path, paths[: arguments.naive_images])
        print(f"(c) naive, one task per image: {slow:,.1f} images/s")
        for name, rate in rates.items():
            print(f"    {name}: b/a = {rate / bare:.2f}   b/c = {rate / slow:,.0f}")

        if arguments.photos:
            photos(workdir, arguments.photos)

        if arguments.million_manifest:
            configure(workdir, f"sqlite:///{workdir / 'bench.db'}")
            for lines in (10_000, 1_000_000):
                peak, seconds = producer_memory(workdir, paths, lines)
                print(
                    f"producer, manifest of {lines:,} lines: peak RSS "
                    f"{peak:,.0f} MiB, {seconds:.1f} s"
                )


if __name__ == "__main__":
    main()
