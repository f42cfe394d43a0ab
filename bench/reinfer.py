"""How long a re-inference of 10,000 stored images takes next to a fresh job.

    .venv/bin/python bench/reinfer.py                       # SQLite and PostgreSQL
    .venv/bin/python bench/reinfer.py --databases postgresql

Writes the digits with ``imgq export-digits --copies 6`` (10,782 PNGs), trains
a small CNN, and for each database:

(a) a fresh job: submit the folder, through Redis and one ``imgq worker``
    process, until every row is committed;
(b) registers the same model file as a second version and times
    ``reinfer`` for it: finding the missing images (the keyset queries alone),
    queueing them, and end to end until the job is done; then a second run,
    which finds nothing.

Both versions are warmed up on four other images first, so neither figure
includes a model load. Needs Redis on 127.0.0.1:6379 and, for PostgreSQL, a
server at IMGQ_BENCH_POSTGRES_URL (default: the local one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    REDIS_URL,
    configure,
    drop_postgres_database,
    fresh_postgres_database,
    start_worker,
    stop,
    submit_and_wait,
)


def export_digits(folder: Path, copies: int) -> int:
    """``imgq export-digits FOLDER --copies N``; the number of PNGs written."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "imgq",
            "export-digits",
            str(folder),
            "--copies",
            str(copies),
        ],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
    )
    return len(list(folder.rglob("*.png")))


def write_warm_up_images(folder: Path) -> None:
    """Four images no export contains: mid-grey squares of distinct shades."""
    folder.mkdir(parents=True, exist_ok=True)
    for shade in range(4):
        pixels = np.full((28, 28), 100 + shade, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"warm-{shade}.png")


def train_model(workdir: Path, epochs: int) -> Path:
    from imgq.models.datasets import load_digits_dataset
    from imgq.models.training import train

    result = train(
        load_digits_dataset(),
        architecture="cnn",
        output_dir=workdir / "training",
        epochs=epochs,
        patience=0,
    )
    path = workdir / "cnn.keras"
    result.model.save(path)
    return path


def register(model_path: Path, name: str) -> int:
    """Register the file as a new version; returns its number."""
    from imgq.db.engine import session_scope
    from imgq.models import registry
    from imgq.models.datasets import DIGITS_SPEC

    with session_scope() as session:
        return registry.register_file(
            session,
            model_path,
            name=name,
            architecture="cnn",
            class_names=[str(digit) for digit in range(10)],
            spec=DIGITS_SPEC,
            metrics={},
            data_fingerprint="bench",
        ).id


def run(workdir: Path, *, database_url: str, model_path: Path, name: str) -> None:
    """Time (a) and (b) on one database and print them."""
    from imgq.db.engine import session_scope
    from imgq.db.migrate import upgrade
    from imgq.models import registry
    from imgq.producer.embedded import wait_for_job
    from imgq.worker.reinfer import Selection, count_missing, reinfer

    queues = configure(workdir, database_url)
    upgrade()
    first = register(model_path, "bench-first")
    with session_scope() as session:
        registry.promote(session, first)
    worker = start_worker(workdir / f"worker-{name}.log")
    try:
        submit_and_wait(workdir / "warm", worker=worker, model=str(first))
        done, fresh_seconds = submit_and_wait(
            workdir / "digits", worker=worker, model=str(first)
        )
        print(
            f"(a) {name}: fresh job, {done:,} images in {fresh_seconds:.2f} s "
            f"({done / fresh_seconds:,.0f} images/s)"
        )

        second = register(model_path, "bench-second")
        submit_and_wait(workdir / "warm", worker=worker, model=str(second))
        chunk_size = int(os.environ.get("IMGQ_CHUNK_SIZE", "2048"))
        started = time.perf_counter()
        missing = count_missing(
            Selection(model_version_id=second), chunk_size=chunk_size
        )
        find_seconds = time.perf_counter() - started

        started = time.perf_counter()
        result = reinfer(model_reference=str(second))
        queue_seconds = time.perf_counter() - started
        counts = wait_for_job(result.job_id or 0, worker=worker, poll_seconds=0.05)
        reinfer_seconds = time.perf_counter() - started

        started = time.perf_counter()
        again = reinfer(model_reference=str(second))
        again_seconds = time.perf_counter() - started
    finally:
        stop(worker)
        redis.Redis.from_url(REDIS_URL).delete(*queues)
    print(
        f"(b) {name}: re-inference, {missing:,} missing found in {find_seconds:.3f} s; "
        f"queued in {queue_seconds:.2f} s; {counts.done:,} images done in "
        f"{reinfer_seconds:.2f} s ({counts.done / reinfer_seconds:,.0f} images/s)"
    )
    print(
        f"    {name}: re-inference / fresh job time = "
        f"{reinfer_seconds / fresh_seconds:.2f}; a second run queued "
        f"{again.queued} images (job {again.job_id}) in {again_seconds:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--copies",
        type=int,
        default=6,
        help="Copies of the 1,797 digits (6: 10,782 images).",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--databases", default="sqlite,postgresql")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="imgq-bench-reinfer-") as temporary:
        workdir = Path(temporary)
        configure(workdir, f"sqlite:///{workdir / 'setup.db'}")
        count = export_digits(workdir / "digits", arguments.copies)
        write_warm_up_images(workdir / "warm")
        print(f"imgq export-digits --copies {arguments.copies}: {count:,} PNG files")
        print(f"training the CNN for {arguments.epochs} epochs ...")
        model_path = train_model(workdir, arguments.epochs)

        for name in arguments.databases.split(","):
            if name == "sqlite":
                run(
                    workdir,
                    database_url=f"sqlite:///{workdir / 'bench.db'}",
                    model_path=model_path,
                    name=name,
                )
                continue
            url = fresh_postgres_database()
            try:
                run(workdir, database_url=url, model_path=model_path, name=name)
            finally:
                from imgq.db.engine import dispose_all

                dispose_all()
                drop_postgres_database(url)


if __name__ == "__main__":
    main()
