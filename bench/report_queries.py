"""Time the report's queries on a million predictions, SQLite and PostgreSQL.

    .venv/bin/python bench/report_queries.py
    .venv/bin/python bench/report_queries.py --only sqlite --repeat 3
    .venv/bin/python bench/report_queries.py --postgres-url postgresql://u@host/db

Fills a fresh database with 500,000 images, each answered by two model
versions (1,000,000 prediction rows): version 1 in ten jobs of 50,000 images,
version 2 in one re-inference job over all of them. Nine images in ten have a
true label; version 1 is right on 90 % of them, version 2 on 93 %. Right
answers are mostly confident (1 - 0.4 u^2), wrong ones spread evenly over
0.25 to 1.0, as a trained classifier's are. The rows are made by the database
itself (a recursive CTE on SQLite, generate_series on PostgreSQL), and the
answer tallies are then counted from them, as the workers would have kept
them.

Then it times each query the report and the result commands run, as the
median of ``--repeat`` runs after one warm-up, plus ``imgq results
--wrong-only --limit 25`` through the command line in this process and as a
new process (which includes Python's start-up and imports). The PostgreSQL
database is dropped and made again on every run (default: ``imgq_bench`` on
127.0.0.1); the SQLite file lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from imgq import config
from imgq.db import engine as db_engine
from imgq.db import tallies
from imgq.db.migrate import upgrade
from imgq.db.schema import Job, ModelAlias, ModelVersion
from imgq.report import diff, queries, stats
from imgq.report.plan import plan_report
from imgq.report.queries import ResultFilter, connect, resolve_scope

IMAGES = 500_000
JOBS = 10
CLASSES = [str(digit) for digit in range(10)]
START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/imgq_bench"

# uniform numbers in [0, 1) from the image number, the same on both databases
UNIFORM = "(((n * 2654435761 + {salt}) % 1000003) / 1000003.0)"
PERCENT = "((n * 69069 + {salt}) % 100)"
OTHER = "((n * 13 + {salt}) % 9)"


@dataclass(frozen=True)
class Timing:
    """One query's median time and the rows it returned."""

    name: str
    milliseconds: float
    rows: int


def sequence_sql(dialect: str, count: int) -> str:
    """A FROM clause of the numbers 1..count as column ``n``."""
    if dialect == "sqlite":
        return (
            f"(WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
            f"WHERE n < {count}) SELECT n FROM seq) AS numbers"
        )
    return f"generate_series(1, {count}) AS numbers(n)"


def fill(url: str, *, images: int) -> None:
    """Write the versions, jobs, images, memberships, predictions and failures."""
    engine = db_engine.get_engine(url)
    dialect = engine.dialect.name
    job_size = images // JOBS
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(ModelVersion), [_version_row(version) for version in (1, 2)]
        )
        connection.execute(
            sa.insert(ModelAlias),
            [{"alias": "production", "model_version_id": 1, "updated_at": START}],
        )
        connection.execute(
            sa.insert(Job),
            [_job_row(job, version=1, total=job_size) for job in range(1, JOBS + 1)]
            + [_job_row(JOBS + 1, version=2, total=images)],
        )
        for statement in _bulk_statements(dialect, images=images, job_size=job_size):
            connection.execute(sa.text(statement))
        # the counts workers would have kept while writing these answers
        tallies.recount(connection)
    print(f"  filled in {time.perf_counter() - started:.1f} s", flush=True)


def _version_row(version: int) -> dict[str, Any]:
    return {
        "id": version,
        "name": f"bench-v{version}",
        "architecture": "cnn",
        "path": "/models/bench.keras",
        "content_hash": "0" * 64,
        "class_names": CLASSES,
        "input_shape": [28, 28, 1],
        "preprocessing": {"height": 28, "width": 28, "channels": 1},
        "metrics": {},
        "data_fingerprint": "0" * 64,
        "imgq_version": "0.1.0",
        "created_at": START,
    }


def _job_row(job: int, *, version: int, total: int) -> dict[str, Any]:
    return {
        "id": job,
        "kind": "submit" if version == 1 else "reinfer",
        "model_version_id": version,
        "source": "bench",
        "state": "done",
        "queue": "bench",
        "total_images": total,
        "queued_images": total,
        "created_at": START,
    }


def _bulk_statements(dialect: str, *, images: int, job_size: int) -> list[str]:
    """INSERT ... SELECT statements that make the rows inside the database."""
    as_text = "CAST((n * 7) % 10 AS TEXT)"
    content_hash = (
        "printf('%064d', n)" if dialect == "sqlite" else "lpad(n::text, 64, '0')"
    )
    job_of = f"(id - 1) / {job_size} + 1"
    kind = (
        "CASE id % 3 WHEN 0 THEN 'missing' WHEN 1 THEN 'truncated' "
        "ELSE 'not_an_image' END"
    )
    return [
        "INSERT INTO images (id, content_hash, path, true_label, size_bytes, "
        f"created_at) SELECT n, {content_hash}, '/data/line-3/' || n || '.png', "
        f"CASE WHEN n % 10 = 0 THEN NULL ELSE {as_text} END, 1000, "
        f"'2026-01-01 00:00:00' FROM {sequence_sql(dialect, images)}",
        f"INSERT INTO job_images (job_id, image_id) SELECT {job_of}, id FROM images",
        f"INSERT INTO job_images (job_id, image_id) SELECT {JOBS + 1}, id FROM images",
        _predictions_sql(
            dialect, version=1, accuracy=90, job_sql=f"(n - 1) / {job_size} + 1"
        ),
        _predictions_sql(dialect, version=2, accuracy=93, job_sql=str(JOBS + 1)),
        "INSERT INTO failures (job_id, image_id, model_version_id, path, kind, "
        f"message, attempts, created_at) SELECT {job_of}, id, 1, path, {kind}, "
        "'bench', 1, '2026-01-02 00:00:00' FROM images WHERE id % 1000 = 500",
    ]


def _predictions_sql(dialect: str, *, version: int, accuracy: int, job_sql: str) -> str:
    salt = version * 101
    uniform = UNIFORM.format(salt=salt)
    right = f"{PERCENT.format(salt=salt)} < {accuracy}"
    truth = "((n * 7) % 10)"
    # the image's true label, as the images statement writes it
    true_label = f"CASE WHEN n % 10 = 0 THEN NULL ELSE CAST({truth} AS TEXT) END"
    label_index = (
        f"CASE WHEN {right} THEN {truth} ELSE ({truth} + 1 + {OTHER.format(salt=salt)})"
        " % 10 END"
    )
    confidence = (
        f"CASE WHEN {right} THEN 1.0 - 0.4 * {uniform} * {uniform} "
        f"ELSE 0.25 + 0.75 * {uniform} END"
    )
    json_array = "json_array" if dialect == "sqlite" else "json_build_array"
    probabilities = (
        f"{json_array}("
        + ", ".join(
            f"CASE WHEN li = {index} THEN conf ELSE (1.0 - conf) / 9 END"
            for index in range(len(CLASSES))
        )
        + ")"
    )
    if dialect == "sqlite":
        created = (
            f"strftime('%Y-%m-%d %H:%M:%S', '2026-01-01', '+{(version - 1) * 10} days',"
            " '+' || n || ' seconds') || '.000000'"
        )
    else:
        created = (
            f"timestamptz '2026-01-01 00:00:00+00' + interval '{(version - 1) * 10} "
            "days' + n * interval '1 second'"
        )
    return (
        "INSERT INTO predictions (image_id, model_version_id, job_id, label, "
        "true_label, label_index, confidence, probabilities, batch_images, "
        f"decode_ms, predict_ms, created_at) SELECT n, {version}, {job_sql}, "
        f"CAST(li AS TEXT), {true_label}, li, conf, "
        f"{probabilities}, 512, 0.1, 0.2, {created} FROM (SELECT n, "
        f"{label_index} AS li, {confidence} AS conf FROM (SELECT id AS n FROM images) "
        "AS numbered) AS answers"
    )


def _analyze(engine: sa.Engine) -> None:
    if engine.dialect.name == "sqlite":
        # SQLite keeps no statistics until asked; 'PRAGMA optimize' is the
        # documented routine for long-lived databases
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        return
    # what autovacuum does soon after a bulk load
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as raw:
        raw.exec_driver_sql("VACUUM ANALYZE")


def measure(name: str, work: Callable[[], int], repeat: int) -> Timing:
    """The median wall time of ``work`` after a warm-up run."""
    rows = work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = work()
        times.append((time.perf_counter() - started) * 1000)
    return Timing(name=name, milliseconds=statistics.median(times), rows=rows)


def query_cases(low: float) -> list[tuple[str, Callable[[sa.Connection], int]]]:
    """(name, function of a connection returning a row count) per query."""

    def scope(connection: sa.Connection, **values: Any) -> queries.Scope:
        return resolve_scope(connection, ResultFilter(**values), default_model=None)

    def listing(**values: Any) -> Callable[[sa.Connection], int]:
        return lambda connection: sum(
            1 for _ in queries.iter_results(connection, scope(connection, **values))
        )

    return [
        (
            "results --wrong-only --limit 25 (all versions)",
            listing(wrong_only=True, limit=25),
        ),
        (
            "results --model 1 --wrong-only --limit 25",
            listing(model="1", wrong_only=True, limit=25),
        ),
        (
            "results --job 3 --wrong-only --limit 25",
            listing(job=3, wrong_only=True, limit=25),
        ),
        ("results --job 3 --label 7 --limit 25", listing(job=3, label="7", limit=25)),
        (
            "results --model 1 --max-confidence 0.3 --limit 25",
            listing(model="1", max_confidence=0.3, limit=25),
        ),
        (
            "worst wrong, model 1, 25",
            lambda c: len(queries.worst_wrong(c, scope(c, model="1"), limit=25)),
        ),
        (
            "worst wrong, job 3, 25",
            lambda c: len(queries.worst_wrong(c, scope(c, job=3), limit=25)),
        ),
        (
            "least confident, model 1, 25",
            lambda c: len(queries.least_confident(c, scope(c, model="1"), limit=25)),
        ),
        (
            "least confident, job 3, 25",
            lambda c: len(queries.least_confident(c, scope(c, job=3), limit=25)),
        ),
        (
            "samples per class, model 1, 2 x 10",
            lambda c: sum(
                map(
                    len,
                    queries.samples_per_class(
                        c, scope(c, model="1"), per_class=2
                    ).values(),
                )
            ),
        ),
        (
            "samples per class, job 3, 2 x 10",
            lambda c: sum(
                map(
                    len,
                    queries.samples_per_class(c, scope(c, job=3), per_class=2).values(),
                )
            ),
        ),
        (
            "label pairs (confusion), model 1",
            lambda c: len(stats.label_pairs(c, scope(c, model="1"))),
        ),
        (
            "label pairs (confusion), job 3",
            lambda c: len(stats.label_pairs(c, scope(c, job=3))),
        ),
        (
            "confidence histogram, model 1",
            lambda c: sum(
                stats.confidence_histogram_counts(
                    c, scope(c, model="1"), threshold=low
                ).counts
            ),
        ),
        (
            "confidence histogram, job 3",
            lambda c: sum(
                stats.confidence_histogram_counts(
                    c, scope(c, job=3), threshold=low
                ).counts
            ),
        ),
        (
            "failures by kind, job 3",
            lambda c: len(stats.failures_by_kind(c, scope(c, job=3))),
        ),
        (
            "stats (all three), model 1",
            lambda c: (
                stats.compute_stats(c, scope(c, model="1"), low_confidence=low).total
            ),
        ),
        (
            "stats (all three), job 3",
            lambda c: stats.compute_stats(c, scope(c, job=3), low_confidence=low).total,
        ),
        (
            "diff 1 2: counts",
            lambda c: diff.diff_summary(c, model_a=1, model_b=2).compared,
        ),
        (
            "diff 1 2 --job 3: counts",
            lambda c: diff.diff_summary(c, model_a=1, model_b=2, job=3).compared,
        ),
        (
            "diff 1 2: first 25 changed",
            lambda c: sum(
                1 for _ in diff.iter_changes(c, model_a=1, model_b=2, limit=25)
            ),
        ),
        (
            "results --job 3 --failed-only",
            lambda c: sum(
                1 for _ in queries.iter_failures(c, scope(c, job=3, failed_only=True))
            ),
        ),
        (
            "report plan (every query), job 3",
            lambda c: len(
                plan_report(
                    c, scope(c, job=3), rows=5, columns=5, low_confidence=low
                ).grids
            ),
        ),
        (
            "report plan (every query), model 1",
            lambda c: len(
                plan_report(
                    c, scope(c, model="1"), rows=5, columns=5, low_confidence=low
                ).grids
            ),
        ),
    ]


def run_backend(url: str, *, repeat: int, images: int, reuse: bool) -> list[Timing]:
    """Fill the database at ``url`` (unless reused) and time every case on it."""
    os.environ["IMGQ_DATABASE_URL"] = url
    config.get_settings.cache_clear()
    upgrade(url)
    if not reuse:
        fill(url, images=images)
    _analyze(db_engine.get_engine(url))
    low = config.get_settings().low_confidence
    engine = db_engine.get_engine(url)
    timings = []
    for name, case in query_cases(low):

        def work(case: Callable[[sa.Connection], int] = case) -> int:
            with connect(engine) as connection:
                return case(connection)

        timings.append(measure(name, work, repeat))
        print(f"  {timings[-1].milliseconds:9.1f} ms  {name}", flush=True)
    timings.extend(cli_timings(repeat))
    return timings


def cli_timings(repeat: int) -> list[Timing]:
    """``imgq results --wrong-only --limit 25`` in this process and as a new one."""
    from imgq.cli import main

    arguments = ["results", "--wrong-only", "--limit", "25"]

    def in_process() -> int:
        result = CliRunner().invoke(main, arguments, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return len(result.stdout.splitlines()) - 1

    def new_process() -> int:
        completed = subprocess.run(
            [sys.executable, "-m", "imgq", "--log-level", "WARNING", *arguments],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ.copy(),
        )
        return len(completed.stdout.splitlines()) - 1

    timings = [
        measure(
            "imgq results --wrong-only --limit 25 (CLI, in process)", in_process, repeat
        ),
        measure(
            "imgq results --wrong-only --limit 25 (CLI, new process)",
            new_process,
            max(1, repeat // 2),
        ),
    ]
    for timing in timings:
        print(f"  {timing.milliseconds:9.1f} ms  {timing.name}", flush=True)
    return timings


def fresh_postgres(url: str) -> str:
    """Drop and create the database named in ``url``; returns the URL."""
    target = sa.engine.make_url(db_engine.normalize_url(url))
    admin = sa.create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        name = target.database
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return target.render_as_string(hide_password=False)


def print_table(results: dict[str, list[Timing]]) -> None:
    """Milliseconds per query and backend, with the rows each returned."""
    backends = list(results)
    names = [timing.name for timing in next(iter(results.values()))]
    width = max(len(name) for name in names)
    header = f"{'query':<{width}}" + "".join(f"  {b:>10}" for b in backends) + "  rows"
    print()
    print(header)
    print("-" * len(header))
    for index, name in enumerate(names):
        cells = "".join(
            f"  {results[backend][index].milliseconds:>10.1f}" for backend in backends
        )
        rows = results[backends[0]][index].rows
        print(f"{name:<{width}}{cells}  {rows}")
    print("\nmilliseconds, median of the runs after a warm-up; goal: under 100 each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="database to drop, create and fill (default: %(default)s)",
    )
    parser.add_argument(
        "--sqlite-path",
        default=None,
        help="SQLite file (default: one in a temporary folder)",
    )
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs per query after the warm-up"
    )
    parser.add_argument(
        "--images",
        type=int,
        default=IMAGES,
        help="images, two predictions each (default: %(default)s)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the rows an earlier run left (with --sqlite-path) instead of "
        "making them again",
    )
    arguments = parser.parse_args()

    results: dict[str, list[Timing]] = {}
    with tempfile.TemporaryDirectory(prefix="imgq-bench-") as folder:
        os.environ["IMGQ_DATA_DIR"] = folder
        os.environ["IMGQ_LOG_LEVEL"] = "WARNING"
        if arguments.only in (None, "sqlite"):
            path = Path(arguments.sqlite_path or Path(folder) / "bench.db")
            if not arguments.reuse:
                path.unlink(missing_ok=True)
            print(f"sqlite: {path}", flush=True)
            results["sqlite"] = run_backend(
                f"sqlite:///{path}",
                repeat=arguments.repeat,
                images=arguments.images,
                reuse=arguments.reuse,
            )
            db_engine.dispose_all()
        if arguments.only in (None, "postgresql"):
            url = (
                db_engine.normalize_url(arguments.postgres_url)
                if arguments.reuse
                else fresh_postgres(arguments.postgres_url)
            )
            print(
                f"postgresql: {sa.engine.make_url(url).render_as_string()}", flush=True
            )
            results["postgresql"] = run_backend(
                url,
                repeat=arguments.repeat,
                images=arguments.images,
                reuse=arguments.reuse,
            )
            db_engine.dispose_all()
    print_table(results)


if __name__ == "__main__":
    main()
