"""The answer tallies and the predictions' copy of the true label stay in step
with the rows they summarise, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from report_data import JOB_IMAGES, fill, model_version_row, store_predictions
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from support_tallies import assert_tallies_match_rows
from worker_process import write_png

from imgq.cli import main
from imgq.config import get_settings
from imgq.db import predictions, tallies
from imgq.db.engine import get_engine, session_scope
from imgq.db.migrate import downgrade, upgrade
from imgq.db.schema import Image, ModelAlias, ModelVersion, Prediction
from imgq.producer.paths import iter_candidates
from imgq.producer.submit import submit
from imgq.report.queries import (
    Order,
    ResultFilter,
    connect,
    resolve_scope,
    results_statement,
    with_filter,
    worst_wrong,
)
from imgq.report.stats import Tallied, compute_stats, tallied_scope

CLASSES = ["0", "1", "2"]


def _images(connection: sa.Connection, labels: list[str | None]) -> None:
    connection.execute(
        sa.insert(Image),
        [
            {
                "id": number,
                "content_hash": f"{number:064d}",
                "path": f"/images/{number}.png",
                "true_label": label,
                "size_bytes": 1,
            }
            for number, label in enumerate(labels, start=1)
        ],
    )


def _answer(image_id: int, label: str, confidence: float) -> dict[str, object]:
    return {
        "image_id": image_id,
        "model_version_id": 1,
        "label": label,
        "label_index": CLASSES.index(label),
        "confidence": confidence,
        "probabilities": [confidence],
    }


def _counted_now(url: str) -> tuple[dict[tuple[str, str | None], int], list[int]]:
    with get_engine(url).connect() as connection:
        return (
            tallies.label_counts(connection, model_version_id=1, job_id=None),
            tallies.confidence_counts(connection, model_version_id=1, job_id=None)[0],
        )


def _stale_copies(url: str) -> int:
    """Predictions whose copy of the true label differs from their image's."""
    with get_engine(url).connect() as connection:
        return int(
            connection.scalar(
                sa.select(sa.func.count())
                .select_from(Prediction)
                .join(Image, Image.id == Prediction.image_id)
                .where(Prediction.true_label.is_distinct_from(Image.true_label))
            )
        )


@pytest.fixture
def random_answers(migrated: str) -> str:
    """600 answers of version 1 with every kind of confidence, a third unlabelled."""
    generator = np.random.default_rng(11)
    count = 600
    truths: list[str | None] = [
        None if index % 3 == 0 else CLASSES[int(generator.integers(3))]
        for index in range(count)
    ]
    confidences = list(np.round(generator.uniform(0.3, 1.0, size=count), 4))
    # the edges: exactly 1.0, bucket boundaries, and around the threshold
    confidences[:6] = [1.0, 0.6, 0.6004, 0.6005, 0.5999, 0.001]
    with get_engine(migrated).begin() as connection:
        connection.execute(sa.insert(ModelVersion), [model_version_row(1, "m")])
        _images(connection, truths)
        store_predictions(
            connection,
            [
                _answer(number, CLASSES[int(generator.integers(3))], float(value))
                for number, value in enumerate(confidences, start=1)
            ],
        )
    return migrated


def test_whole_version_stats_from_the_tallies_equal_the_scan(
    random_answers: str,
) -> None:
    with connect() as connection:
        whole = resolve_scope(connection, ResultFilter(model="1"), default_model=None)
        # a filter that keeps every answer but makes the stats scan them
        scanned = resolve_scope(
            connection, ResultFilter(model="1", min_confidence=0.0), default_model=None
        )
        assert tallied_scope(whole) == Tallied(model_version_id=1, job_id=None)
        assert tallied_scope(scanned) is None
        for threshold in (0.6, 0.6005, 0.35):
            fast = compute_stats(connection, whole, low_confidence=threshold)
            slow = compute_stats(connection, scanned, low_confidence=threshold)

            assert fast.total == slow.total == 600
            assert fast.classes == slow.classes
            assert fast.confusion == slow.confusion
            assert fast.confidence.histogram == slow.confidence.histogram
            assert fast.confidence.below_threshold == slow.confidence.below_threshold
            assert fast.confidence.quantiles == slow.confidence.quantiles
            assert fast.confidence.minimum == slow.confidence.minimum == 0.001
            assert fast.confidence.maximum == slow.confidence.maximum == 1.0
            assert fast.confidence.mean == pytest.approx(slow.confidence.mean)


def test_job_stats_from_the_tallies_equal_the_scan(
    migrated: str, tmp_path: Path
) -> None:
    # jobs 1 and 2 share images 9-12, answered once; job 3 is version 2
    fill(migrated, tmp_path / "images")
    assert_tallies_match_rows()
    with connect() as connection:
        for job in (1, 2, 3):
            whole = resolve_scope(connection, ResultFilter(job=job), default_model=None)
            scanned = resolve_scope(
                connection,
                ResultFilter(job=job, min_confidence=0.0),
                default_model=None,
            )
            assert tallied_scope(whole) is not None
            assert tallied_scope(scanned) is None
            fast = compute_stats(connection, whole, low_confidence=0.62)
            slow = compute_stats(connection, scanned, low_confidence=0.62)

            assert fast.total == slow.total == len(JOB_IMAGES[job])
            assert fast.classes == slow.classes
            assert fast.confusion == slow.confusion
            assert fast.confidence.histogram == slow.confidence.histogram
            assert fast.confidence.below_threshold == slow.confidence.below_threshold
            assert fast.confidence.minimum == slow.confidence.minimum
            assert fast.confidence.maximum == slow.confidence.maximum
            assert fast.confidence.mean == pytest.approx(slow.confidence.mean)


def test_an_answer_written_twice_is_counted_once(random_answers: str) -> None:
    before = _counted_now(random_answers)
    with session_scope() as session:
        written = predictions.record(session, [_answer(1, "2", 0.5)])

    assert written == 0
    assert _counted_now(random_answers) == before
    assert_tallies_match_rows()


def test_a_label_submitted_later_reaches_the_answers_and_their_counts(
    migrated: str, tmp_path: Path
) -> None:
    folder = tmp_path / "line"
    for value in range(3):
        write_png(folder / f"{value}.png", value=value * 40)
    with get_engine(migrated).begin() as connection:
        connection.execute(sa.insert(ModelVersion), [model_version_row(1, "m")])
        connection.execute(
            sa.insert(ModelAlias),
            [{"alias": "production", "model_version_id": 1}],
        )
    roots = get_settings().resolved_allowed_roots
    first = submit(iter_candidates([str(folder)], roots=roots), source="first")
    assert first.images == 3
    with session_scope() as session:
        ids = session.scalars(sa.select(Image.id).order_by(Image.path)).all()
        predictions.record(session, [_answer(image_id, "1", 0.9) for image_id in ids])
    assert _counted_now(migrated)[0] == {("1", None): 3}

    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nline/0.png,1\nline/1.png,2\n")
    second = submit(iter_candidates([str(manifest)], roots=roots), source="labels")

    assert second.queued == 0  # every image is answered already
    with session_scope() as session:
        copied = session.execute(
            sa.select(Image.path, Prediction.true_label)
            .join(Prediction, Prediction.image_id == Image.id)
            .order_by(Image.path)
        ).all()
    assert [(Path(path).name, label) for path, label in copied] == [
        ("0.png", "1"),
        ("1.png", "2"),
        ("2.png", None),
    ]
    counts = _counted_now(migrated)
    assert counts[0] == {("1", "1"): 1, ("1", "2"): 1, ("1", None): 1}
    kept = assert_tallies_match_rows()
    # the first job's answers moved; the second job counted its two at once
    assert kept["job_label_tallies"] == {
        (first.job_id, "1", "1"): 1,
        (first.job_id, "1", "2"): 1,
        (first.job_id, "1", ""): 1,
        (second.job_id, "1", "1"): 1,
        (second.job_id, "1", "2"): 1,
    }
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(model="1"), default_model=None)
        wrong = worst_wrong(connection, scope, limit=5)
    assert [(Path(row.path).name, row.true_label) for row in wrong] == [("1.png", "2")]


def test_recount_repairs_labels_changed_by_hand(random_answers: str) -> None:
    engine = get_engine(random_answers)
    with engine.begin() as connection:
        connection.execute(sa.update(Image).values(true_label="0"))
    assert _stale_copies(random_answers) > 0

    result = CliRunner().invoke(main, ["db", "recount"])

    assert result.exit_code == 0, result.output
    assert "took their image's true label" in result.output
    assert _stale_copies(random_answers) == 0
    labels, _ = _counted_now(random_answers)
    assert set(true_label for _, true_label in labels) == {"0"}
    assert sum(labels.values()) == 600


def test_the_migration_copies_labels_and_counts_the_answers_already_stored(
    migrated: str,
) -> None:
    downgrade(migrated, "0003")
    engine = get_engine(migrated)
    with engine.begin() as connection:
        connection.execute(sa.insert(ModelVersion), [model_version_row(1, "m")])
        _images(connection, ["0", None, "2"])
        columns = "image_id, model_version_id, label, label_index, confidence"
        rest = "probabilities, batch_images, decode_ms, predict_ms, created_at"
        connection.execute(
            sa.text(
                f"INSERT INTO predictions ({columns}, {rest}) VALUES "
                "(1, 1, '0', 0, 1.0, '[]', 1, 0, 0, CURRENT_TIMESTAMP), "
                "(2, 1, '1', 1, 0.25, '[]', 1, 0, 0, CURRENT_TIMESTAMP), "
                "(3, 1, '1', 1, 0.7005, '[]', 1, 0, 0, CURRENT_TIMESTAMP)"
            )
        )

    upgrade(migrated)

    labels, buckets = _counted_now(migrated)
    assert labels == {("0", "0"): 1, ("1", None): 1, ("1", "2"): 1}
    assert {index: count for index, count in enumerate(buckets) if count} == {
        250: 1,
        700: 1,
        999: 1,
    }
    assert_tallies_match_rows()


def test_worst_wrong_of_a_version_reads_the_index_of_wrong_answers(
    random_answers: str,
) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(model="1"), default_model=None)
        rows = worst_wrong(connection, scope, limit=5)
    with get_engine(random_answers).connect() as connection:
        statement = results_statement(
            with_filter(scope, wrong_only=True, limit=5), order=Order.CONFIDENCE_DESC
        )
        compiled = statement.compile(
            dialect=connection.dialect, compile_kwargs={"literal_binds": True}
        )
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
            plan = connection.exec_driver_sql(f"EXPLAIN {compiled}").scalars().all()
        else:
            plan = [
                row[-1]
                for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            ]

    assert any("ix_predictions_wrong_confidence" in line for line in plan), plan
    confidences = [row.confidence for row in rows]
    assert len(rows) == 5 and confidences == sorted(confidences, reverse=True)
    assert all(
        row.true_label is not None and row.label != row.true_label for row in rows
    )


# row locks are PostgreSQL's; on SQLite a writer holds the one write lock
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_does_not_wait_while_a_submission_changes_a_label(
    random_answers: str,
) -> None:
    engine = get_engine(random_answers)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Image),
            [
                {
                    "id": 700,
                    "content_hash": "7" * 64,
                    "path": "/700.png",
                    "size_bytes": 1,
                }
            ],
        )
    with engine.connect() as submission:
        submission.begin()
        submission.execute(
            sa.update(Image).where(Image.id == 700).values(true_label="1")
        )
        with Session(engine) as worker, pytest.raises(OperationalError) as caught:
            predictions.record(worker, [_answer(700, "2", 0.8)])
        submission.rollback()

    assert "could not obtain lock" in str(caught.value)
    with session_scope() as session:
        assert predictions.record(session, [_answer(700, "2", 0.8)]) == 1
