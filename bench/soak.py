"""Soak: thousands of images, a few percent bad, workers killed, Redis restarted.

    .venv/bin/python bench/soak.py [--images 4000] [--bad-percent 3] [--workers 2]
        [--kill-every 4] [--minutes 8] [--database-url URL] [--keep]

Everything runs in a temporary folder: a private ``redis-server`` whose
append-only file is fsynced on every write, SQLite (or ``--database-url``, an
empty database), a digits CNN trained for a few epochs and ``imgq worker``
processes. Every few seconds one worker is killed with signal 9, either its
pool process or the whole worker, which is then started again; once, Redis
is killed with signal 9 and started again on its append-only file. If the
job stalls with the queue empty, the reconciler re-queues what the broker
lost. At the end it prints the images submitted, predicted, failed, lost and
duplicated; the exit code is 0 when none is lost or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BAD_KINDS = ("text", "truncated_jpeg", "corrupt_png", "zero_bytes", "bomb")


@dataclass
class Chaos:
    """What the soak did to the system."""

    pool_kills: int = 0
    worker_kills: int = 0
    redis_restarts: int = 0
    reconciled_images: int = 0
    log: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """redis-server with appendonly and fsync always; waits until it answers."""
    import redis

    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *("--logfile", str(folder / "redis.log")),
        ]
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                return server
        time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def imgq(*arguments: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "imgq", *arguments],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start_worker(
    number: int, folder: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    log = (folder / f"worker-{number}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "imgq", "worker", "--name", f"soak-{number}@%h"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def pool_processes(worker: subprocess.Popen[bytes]) -> list[int]:
    path = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
    with contextlib.suppress(FileNotFoundError):
        return [int(pid) for pid in path.read_text().split()]
    return []


def write_images(folder: Path, good: int, bad: int) -> int:
    """Distinct digit PNGs and ``bad`` broken files; returns the files written."""
    from imgq.models.datasets import digit_images

    digits = list(digit_images())
    for number in range(good):
        image, label = digits[number % len(digits)]
        path = folder / str(label) / f"digit-{number:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        info = PngInfo()
        info.add_text("soak", str(number))
        image.save(path, pnginfo=info)
    broken = folder / "broken"
    broken.mkdir()
    for number in range(bad):
        write_bad(broken, number, BAD_KINDS[number % len(BAD_KINDS)], digits)
    return good + bad


def write_bad(
    folder: Path, number: int, kind: str, digits: list[tuple[Image.Image, int]]
) -> None:
    """One broken file; each is distinct, but every empty file is one image."""
    image, _ = digits[number % len(digits)]
    if kind == "text":
        (folder / f"note-{number}.png").write_text(f"not an image, note {number}\n")
    elif kind == "truncated_jpeg":
        path = folder / f"cut-{number}.jpg"
        image.resize((112, 112)).save(path, quality=90 - number % 20)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "corrupt_png":
        path = folder / f"corrupt-{number}.png"
        image.save(path)
        content = bytearray(path.read_bytes())
        content[45:65] = bytes((number + offset) % 256 for offset in range(20))
        path.write_bytes(bytes(content))
    elif kind == "zero_bytes":
        (folder / f"empty-{number}.png").write_bytes(b"")
    else:
        side = 12_000 + number
        Image.new("1", (side, side)).save(folder / f"bomb-{number}.png")


class Soak:
    """The system under test and the faults done to it."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.redis_port = free_port()
        self.chaos = Chaos()
        suffix = uuid.uuid4().hex[:8]
        database = args.database_url or f"sqlite:///{folder / 'imgq.db'}"
        self.settings = {
            "IMGQ_DATA_DIR": str(folder / "data"),
            "IMGQ_DATABASE_URL": database,
            "IMGQ_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "IMGQ_ALLOWED_ROOTS": str(folder),
            "IMGQ_FRESH_QUEUE": f"soak.fresh.{suffix}",
            "IMGQ_BACKGROUND_QUEUE": f"soak.background.{suffix}",
            "IMGQ_CHUNK_SIZE": "64",
            "IMGQ_BATCH_SIZE": "16",
            "IMGQ_SLOW_MODEL_SECONDS": str(args.slow),
            "IMGQ_VISIBILITY_TIMEOUT": "15",
            "IMGQ_LOG_LEVEL": "INFO",
        }
        os.environ.update(self.settings)
        self.env = dict(os.environ)
        self.redis = start_redis(folder, self.redis_port)
        self.workers: list[subprocess.Popen[bytes]] = []

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.chaos.log.append(line)

    def prepare(self) -> int:
        self.say("training a digits CNN and writing images")
        imgq("db", "upgrade", env=self.env)
        imgq("train", "--epochs", "3", "--patience", "0", "--promote", env=self.env)
        bad = round(self.args.images * self.args.bad_percent / 100)
        return write_images(self.folder / "images", self.args.images, bad)

    def submit(self) -> int:
        from imgq.config import get_settings
        from imgq.producer.paths import iter_candidates
        from imgq.producer.submit import submit
        from imgq.worker.app import reset_app

        get_settings.cache_clear()
        reset_app()
        settings = get_settings()
        candidates = iter_candidates(
            [str(self.folder / "images")], roots=settings.resolved_allowed_roots
        )
        result = submit(candidates, source="soak", settings=settings)
        self.say(
            f"job {result.job_id}: {result.queued} images queued in "
            f"{len(result.batches)} batches"
        )
        return result.job_id

    def run(self, job_id: int) -> None:
        """Kill workers at random until the job is done; restart Redis once."""
        from imgq.db.engine import session_scope
        from imgq.db.jobs import DONE, job_progress
        from imgq.db.schema import Job
        from imgq.worker.reconcile import reconcile

        self.workers = [
            start_worker(number, self.folder, self.env)
            for number in range(self.args.workers)
        ]
        deadline = time.monotonic() + self.args.minutes * 60
        next_kill = time.monotonic() + 15  # let the first workers load their model
        last_progress, last_change = -1, time.monotonic()
        redis_restarted = False
        while time.monotonic() < deadline:
            with session_scope() as session:
                finished, total = job_progress(session, job_id)
                job = session.get(Job, job_id)
                done = job is not None and job.state == DONE
            if done:
                self.say(f"job done: {finished}/{total}")
                return
            if finished != last_progress:
                self.say(f"progress {finished}/{total}")
                last_progress, last_change = finished, time.monotonic()
            if not redis_restarted and finished >= total // 3:
                self.restart_redis()
                redis_restarted = True
            if time.monotonic() >= next_kill and finished < total * 0.9:
                self.kill_one()
                next_kill = time.monotonic() + self.args.kill_every * random.uniform(
                    0.5, 1.5
                )
            if time.monotonic() - last_change > 60:
                # nothing moved for a minute: the last line of defence
                result = reconcile(grace=45)
                self.chaos.reconciled_images += result.images_requeued
                self.say(f"reconciler re-queued {result.images_requeued} images")
                last_change = time.monotonic()
            time.sleep(1)
        self.say("deadline reached before the job was done")

    def kill_one(self) -> None:
        number = random.randrange(len(self.workers))
        worker = self.workers[number]
        children = pool_processes(worker)
        if children and random.random() < 0.5:
            os.kill(children[0], signal.SIGKILL)
            self.chaos.pool_kills += 1
            self.say(f"kill -9 pool process {children[0]} of worker {number}")
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        self.chaos.worker_kills += 1
        self.workers[number] = start_worker(number, self.folder, self.env)
        self.say(f"kill -9 worker {number} (main and pool), started again")

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.wait()
        self.say("kill -9 redis-server")
        time.sleep(2)
        self.redis = start_redis(self.folder, self.redis_port)
        self.chaos.redis_restarts += 1
        self.say("redis-server started again on its append-only file")

    def stop(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        self.redis.kill()
        self.redis.wait()


def figures(job_id: int) -> dict[str, int]:
    """Submitted, predicted, failed, lost and duplicated images of the job."""
    from sqlalchemy import func, select

    from imgq.db.engine import session_scope
    from imgq.db.jobs import job_counts
    from imgq.db.schema import Batch, Failure, Job, JobImage, Prediction

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        members = select(JobImage.image_id).where(JobImage.job_id == job_id)
        predictions = select(Prediction.image_id).where(
            Prediction.model_version_id == job.model_version_id,
            Prediction.image_id.in_(members),
        )
        failures = select(Failure.image_id).where(
            Failure.job_id == job_id, Failure.image_id.in_(members)
        )
        count = session.scalar
        submitted = count(select(func.count()).select_from(members.subquery()))
        prediction_rows = count(
            select(func.count()).select_from(predictions.subquery())
        )
        predicted = count(
            select(func.count(func.distinct(Prediction.image_id))).where(
                Prediction.model_version_id == job.model_version_id,
                Prediction.image_id.in_(members),
            )
        )
        failure_rows = count(select(func.count()).select_from(failures.subquery()))
        failed = count(
            select(func.count(func.distinct(Failure.image_id))).where(
                Failure.job_id == job_id, Failure.image_id.in_(members)
            )
        )
        lost = count(
            select(func.count()).where(
                JobImage.job_id == job_id,
                JobImage.image_id.not_in(predictions),
                JobImage.image_id.not_in(failures),
            )
        )
        attempts = Counter(
            session.scalars(select(Batch.attempts).where(Batch.job_id == job_id))
        )
        kinds = {
            kind: number
            for kind, number in session.execute(
                select(Failure.kind, func.count())
                .where(Failure.job_id == job_id)
                .group_by(Failure.kind)
            )
        }
        counts = job_counts(session, job_id)
    print(f"batch attempts: {dict(sorted(attempts.items()))}")
    print(f"failures by kind: {kinds}")
    print(f"job state: {counts.state}")
    return {
        "submitted": int(submitted or 0),
        "predicted": int(predicted or 0),
        "failed": int(failed or 0),
        "lost": int(lost or 0),
        "duplicated": int(
            (prediction_rows or 0)
            - (predicted or 0)
            + (failure_rows or 0)
            - (failed or 0)
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="good digit images")
    parser.add_argument("--bad-percent", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds")
    parser.add_argument(
        "--slow",
        type=float,
        default=0.1,
        help="IMGQ_SLOW_MODEL_SECONDS: hold each forward batch",
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="give up after")
    parser.add_argument("--database-url", default="", help="an empty database")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the folder")
    args = parser.parse_args()
    random.seed(args.seed)

    folder = Path(tempfile.mkdtemp(prefix="imgq-soak-"))
    soak = Soak(args, folder)
    started = time.monotonic()
    try:
        files = soak.prepare()
        job_id = soak.submit()
        soak.run(job_id)
    finally:
        soak.stop()
    result = figures(job_id)
    chaos = soak.chaos
    print(
        f"files written: {files}; pool processes killed: {chaos.pool_kills}; "
        f"whole workers killed: {chaos.worker_kills}; redis restarts: "
        f"{chaos.redis_restarts}; re-queued by the reconciler: "
        f"{chaos.reconciled_images}; {time.monotonic() - started:.0f} s"
    )
    print(" ".join(f"{name}={value}" for name, value in result.items()))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept {folder}")
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
