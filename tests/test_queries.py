"""Result queries against known rows, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from report_data import (
    CLASSES,
    HOSTILE,
    JOB_IMAGES,
    ROWS,
    Known,
    answering_job,
    fill,
    model_version_row,
    prediction_time,
    store_predictions,
)

from imgq.db.engine import get_engine
from imgq.db.schema import Image, Job, JobImage, ModelVersion, Prediction
from imgq.errors import InputError, ModelError
from imgq.report.diff import diff_summary, iter_changes
from imgq.report.queries import (
    Order,
    ResultFilter,
    connect,
    iter_failures,
    iter_results,
    least_confident,
    parse_time,
    resolve_scope,
    samples_per_class,
    worst_wrong,
)
from imgq.report.stats import compute_stats, quantile_from_histogram


@pytest.fixture
def known(migrated: str, tmp_path: Path) -> Known:
    """The known rows of report_data in a fresh database."""
    return fill(migrated, tmp_path / "images")


def select_ids(result_filter: ResultFilter, order: Order = Order.IMAGE) -> list[int]:
    with connect() as connection:
        scope = resolve_scope(connection, result_filter, default_model=None)
        return [row.image_id for row in iter_results(connection, scope, order=order)]


def expected(
    version: int, *, images: range | None = None, **tests: object
) -> list[int]:
    """Image numbers answered by ``version`` that pass every test, in id order."""
    chosen = []
    for number, (true_label, *answers) in ROWS.items():
        label, confidence = answers[0:2] if version == 1 else answers[2:4]
        row = {
            "true_label": true_label,
            "label": label,
            "confidence": confidence,
            "created_at": prediction_time(number, version),
        }
        if images is not None and number not in images:
            continue
        if all(test(row) for test in tests.values()):  # type: ignore[operator]
            chosen.append(number)
    return chosen


def test_each_filter_selects_exactly_the_rows_it_names(known: Known) -> None:
    day_two = datetime(2026, 1, 2, tzinfo=UTC)
    cases: list[tuple[ResultFilter, list[int]]] = [
        (ResultFilter(model="1"), expected(1)),
        (ResultFilter(model="v2"), expected(2)),
        (ResultFilter(model="production"), expected(1)),
        (ResultFilter(model="candidate"), expected(2)),
        (ResultFilter(job=1), expected(1, images=JOB_IMAGES[1])),
        (ResultFilter(job=3), expected(2)),
        (ResultFilter(job=1, model="2"), expected(2, images=JOB_IMAGES[1])),
        (
            ResultFilter(model="1", label="0"),
            expected(1, test=lambda row: row["label"] == "0"),
        ),
        (
            ResultFilter(model="1", true_label="3"),
            expected(1, test=lambda row: row["true_label"] == "3"),
        ),
        (
            ResultFilter(model="1", min_confidence=0.6),
            expected(1, test=lambda row: row["confidence"] >= 0.6),
        ),
        (
            ResultFilter(model="1", max_confidence=0.6),
            expected(1, test=lambda row: row["confidence"] <= 0.6),
        ),
        (
            ResultFilter(model="2", min_confidence=0.5, max_confidence=0.7),
            expected(2, test=lambda row: 0.5 <= row["confidence"] <= 0.7),
        ),
        (
            ResultFilter(model="1", wrong_only=True),
            expected(
                1,
                test=lambda row: (
                    row["true_label"] is not None and row["label"] != row["true_label"]
                ),
            ),
        ),
        (
            ResultFilter(model="1", since=day_two),
            expected(1, test=lambda row: row["created_at"] >= day_two),
        ),
        (
            ResultFilter(model="1", until=day_two),
            expected(1, test=lambda row: row["created_at"] < day_two),
        ),
        (ResultFilter(model="1", limit=3), expected(1)[:3]),
        (ResultFilter(model="1", label="no such label"), []),
    ]
    for result_filter, wanted in cases:
        assert select_ids(result_filter) == wanted, result_filter


def test_no_model_and_no_job_lists_every_version(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(), default_model=None)
        rows = list(iter_results(connection, scope))
    assert len(rows) == 2 * len(ROWS)
    assert {row.model_version_id for row in rows} == {1, 2}


def test_job_results_include_images_answered_in_an_earlier_job(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(job=2), default_model=None)
        rows = list(iter_results(connection, scope))
    assert [row.image_id for row in rows] == list(JOB_IMAGES[2])
    assert {row.job_id for row in rows if row.image_id <= 12} == {1}
    assert {row.job_id for row in rows if row.image_id > 12} == {2}


def test_rows_carry_the_stored_values(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(model="1"), default_model=None)
        rows = {row.image_id: row for row in iter_results(connection, scope)}
    row = rows[2]
    assert (row.path, row.true_label, row.label) == (known.paths[2], "0", "1")
    assert row.confidence == pytest.approx(0.91)
    assert row.correct is False
    assert rows[9].correct is None
    assert rows[1].correct is True
    assert row.job_id == answering_job(2, 1)
    assert row.created_at == prediction_time(2, 1)


def test_orders_sort_by_confidence_with_images_breaking_ties(known: Known) -> None:
    by_confidence = sorted(ROWS, key=lambda number: (ROWS[number][2], number))
    assert select_ids(ResultFilter(model="1"), Order.CONFIDENCE) == by_confidence
    highest_first = sorted(ROWS, key=lambda number: (-ROWS[number][2], number))
    assert select_ids(ResultFilter(model="1"), Order.CONFIDENCE_DESC) == highest_first


def test_worst_wrong_puts_the_most_confident_mistake_first(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(job=1), default_model=None)
        wrong = worst_wrong(connection, scope, limit=25)
        unsure = least_confident(connection, scope, limit=3)
    assert [(row.image_id, row.confidence) for row in wrong] == [
        (2, 0.91),
        (8, 0.75),
        (12, 0.66),
        (5, 0.40),
    ]
    assert [row.image_id for row in unsure] == [7, 5, 10]


def test_samples_per_class_take_the_most_confident_of_each_class(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(model="1"), default_model=None)
        samples = samples_per_class(connection, scope, per_class=2)
    assert list(samples) == CLASSES
    assert {name: [row.image_id for row in rows] for name, rows in samples.items()} == {
        "0": [16, 1],
        "1": [2, 4],
        "2": [6, 13],
        "3": [5, 15],
    }


def test_failed_only_lists_the_failures_of_a_job_or_a_version(known: Known) -> None:
    with connect() as connection:
        by_job = resolve_scope(
            connection, ResultFilter(job=2, failed_only=True), default_model=None
        )
        by_model = resolve_scope(
            connection, ResultFilter(model="2", failed_only=True), default_model=None
        )
        job_rows = list(iter_failures(connection, by_job))
        model_rows = list(iter_failures(connection, by_model))
    assert [(row.kind, row.image_id) for row in job_rows] == [
        ("truncated", 17),
        ("not_an_image", None),
    ]
    assert job_rows[0].true_label == "2"
    assert [row.failure_id for row in model_rows] == [3]


def test_failed_only_refuses_the_filters_of_predictions() -> None:
    with pytest.raises(InputError, match="label"):
        ResultFilter(failed_only=True, label="3")
    with pytest.raises(InputError, match="wrong_only"):
        ResultFilter(failed_only=True, wrong_only=True)
    with pytest.raises(InputError, match="above"):
        ResultFilter(min_confidence=0.8, max_confidence=0.2)


def test_unknown_job_or_model_is_an_error_naming_it(known: Known) -> None:
    with connect() as connection:
        with pytest.raises(InputError, match="no job 99"):
            resolve_scope(connection, ResultFilter(job=99), default_model=None)
        with pytest.raises(ModelError, match="7"):
            resolve_scope(connection, ResultFilter(model="7"), default_model=None)


def test_stats_of_a_job_match_the_hand_counts(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(job=1), default_model=None)
        stats = compute_stats(connection, scope, low_confidence=0.6)
    # job 1, version 1: images 1-12; 9 and 10 have no true label;
    # 2, 5, 8 and 12 are wrong
    assert (stats.total, stats.labelled, stats.correct) == (12, 10, 6)
    assert stats.accuracy == pytest.approx(0.6)
    by_class = {entry.label: entry for entry in stats.classes}
    assert [by_class[name].predicted for name in CLASSES] == [4, 4, 2, 2]
    assert [by_class[name].actual for name in CLASSES] == [3, 3, 2, 2]
    assert [by_class[name].correct for name in CLASSES] == [2, 2, 1, 1]
    assert by_class["1"].precision == pytest.approx(2 / 3)
    assert by_class["0"].recall == pytest.approx(2 / 3)
    assert stats.confusion_matrix().tolist() == [
        [2, 1, 0, 0],
        [1, 2, 0, 0],
        [0, 0, 1, 1],
        [0, 0, 1, 1],
    ]
    # below 0.6: images 3 (0.55), 5 (0.40), 7 (0.30), 10 (0.45)
    assert stats.confidence.below_threshold == 4
    assert stats.confidence.minimum == pytest.approx(0.30)
    assert stats.confidence.maximum == pytest.approx(0.99)
    confidences = [ROWS[number][2] for number in JOB_IMAGES[1]]
    assert stats.confidence.mean == pytest.approx(float(np.mean(confidences)))
    assert stats.failures == {}


def test_stats_count_failures_by_kind(known: Known) -> None:
    with connect() as connection:
        job = resolve_scope(connection, ResultFilter(job=2), default_model=None)
        version = resolve_scope(connection, ResultFilter(model="1"), default_model=None)
        job_stats = compute_stats(connection, job, low_confidence=0.6)
        version_stats = compute_stats(connection, version, low_confidence=0.6)
    assert job_stats.failures == {"not_an_image": 1, "truncated": 1}
    assert version_stats.failures == {"not_an_image": 1, "truncated": 1}
    assert version_stats.total == len(ROWS)
    # a confidence of exactly 1.0 (image 16) lands in the top bucket
    assert version_stats.confidence.histogram[-1] == 1
    assert version_stats.confidence.maximum == 1.0


def test_quantiles_from_buckets_agree_with_numpy(migrated: str) -> None:
    generator = np.random.default_rng(7)
    confidences = np.round(generator.beta(5, 2, size=3000), 6)
    engine = get_engine(migrated)
    with engine.begin() as connection:
        connection.execute(sa.insert(ModelVersion), [model_version_row(1, "m")])
        connection.execute(
            sa.insert(Image),
            [
                {
                    "id": index + 1,
                    "content_hash": f"{index:064d}",
                    "path": f"/{index}.png",
                    "true_label": None,
                    "size_bytes": 1,
                }
                for index in range(len(confidences))
            ],
        )
        store_predictions(
            connection,
            [
                {
                    "id": index + 1,
                    "image_id": index + 1,
                    "model_version_id": 1,
                    "label": "0",
                    "label_index": 0,
                    "confidence": float(value),
                    "probabilities": [float(value)],
                    "batch_images": 1,
                    "decode_ms": 0.0,
                    "predict_ms": 0.0,
                }
                for index, value in enumerate(confidences)
            ],
        )
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(model="1"), default_model=None)
        stats = compute_stats(connection, scope, low_confidence=0.6)
    for name, q in (("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p95", 0.95)):
        assert stats.confidence.quantiles[name] == pytest.approx(
            float(np.quantile(confidences, q)), abs=0.002
        )
    assert stats.confidence.below_threshold == int((confidences < 0.6).sum())
    assert sum(stats.confidence.histogram) == len(confidences)


def test_quantile_of_an_empty_histogram_is_none() -> None:
    assert quantile_from_histogram([0] * 1000, 0.5, minimum=None, maximum=None) is None
    counts = [0] * 1000
    counts[500] = 4
    assert quantile_from_histogram(
        counts, 0.5, minimum=0.5001, maximum=0.5009
    ) == pytest.approx(0.5005, abs=0.001)


def test_diff_counts_each_pair_of_labels_and_lists_the_changes(known: Known) -> None:
    with connect() as connection:
        summary = diff_summary(connection, model_a=1, model_b=2)
        changes = list(iter_changes(connection, model_a=1, model_b=2))
        in_job = diff_summary(connection, model_a=1, model_b=2, job=2)
        limited = list(iter_changes(connection, model_a=1, model_b=2, limit=2))
    changed = [n for n, row in ROWS.items() if row[1] != row[3]]
    assert changed == [2, 4, 5, 8, 10, 16]
    assert [row.image_id for row in changes] == changed
    assert (summary.in_a, summary.in_b, summary.compared) == (16, 16, 16)
    assert summary.changed == 6
    assert sorted(summary.changed_pairs()) == [
        ("0", "2", 1),
        ("1", "0", 1),
        ("1", "2", 1),
        ("1", "3", 1),
        ("2", "3", 1),
        ("3", "2", 1),
    ]
    first = changes[0]
    assert (first.label_a, first.label_b, first.true_label) == ("1", "0", "0")
    assert first.confidence_a == pytest.approx(0.91)
    assert (in_job.compared, in_job.changed) == (8, 2)
    assert [row.image_id for row in limited] == [2, 4]


def test_diff_counts_images_only_one_version_answered(known: Known) -> None:
    engine = get_engine(known.url)
    with engine.begin() as connection:
        connection.execute(sa.delete(Prediction).where(Prediction.id == 12))
    with connect() as connection:
        summary = diff_summary(connection, model_a=1, model_b=2)
    assert (summary.in_a, summary.in_b, summary.compared) == (16, 15, 15)


def test_hostile_strings_are_stored_and_returned_literally(
    known: Known, tmp_path: Path
) -> None:
    hostile_path = str(tmp_path / HOSTILE)
    engine = get_engine(known.url)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Image),
            [
                {
                    "id": 50,
                    "content_hash": "9" * 64,
                    "path": hostile_path,
                    "true_label": HOSTILE,
                    "size_bytes": 1,
                }
            ],
        )
        connection.execute(sa.insert(JobImage), [{"job_id": 1, "image_id": 50}])
        store_predictions(
            connection,
            [
                {
                    "id": 500,
                    "image_id": 50,
                    "model_version_id": 1,
                    "job_id": 1,
                    "label": HOSTILE,
                    "label_index": 0,
                    "confidence": 0.5,
                    "probabilities": [0.5],
                    "batch_images": 1,
                    "decode_ms": 0.0,
                    "predict_ms": 0.0,
                }
            ],
        )
    with connect() as connection:
        for result_filter in (
            ResultFilter(job=1, label=HOSTILE),
            ResultFilter(job=1, true_label=HOSTILE),
        ):
            scope = resolve_scope(connection, result_filter, default_model=None)
            rows = list(iter_results(connection, scope))
            assert [(row.path, row.label, row.true_label) for row in rows] == [
                (hostile_path, HOSTILE, HOSTILE)
            ]
        with pytest.raises(ModelError):
            resolve_scope(connection, ResultFilter(model=HOSTILE), default_model=None)
        scope = resolve_scope(connection, ResultFilter(job=1), default_model=None)
        stats = compute_stats(connection, scope, low_confidence=0.6)
    assert stats.confusion[(HOSTILE, HOSTILE)] == 1
    tables = set(sa.inspect(engine).get_table_names())
    assert {"images", "predictions", "jobs"} <= tables
    with engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(Image)) == 18


def test_times_parse_as_iso_or_as_an_age() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_time("24h", now=now) == now - timedelta(hours=24)
    assert parse_time("7d", now=now) == now - timedelta(days=7)
    assert parse_time("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_time("2026-01-02T03:00:00+02:00") == datetime(
        2026, 1, 2, 1, tzinfo=UTC
    )
    with pytest.raises(InputError, match="age"):
        parse_time("yesterday")


def test_filters_round_trip_through_json() -> None:
    original = ResultFilter(
        job=3,
        model="production",
        wrong_only=True,
        since=datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert ResultFilter.from_json(original.to_json()) == original
    with pytest.raises(InputError, match="colour"):
        ResultFilter.from_json({"colour": "red"})


def test_a_job_of_another_version_scopes_to_that_version(known: Known) -> None:
    engine = get_engine(known.url)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Job),
            [
                {
                    "id": 9,
                    "kind": "submit",
                    "model_version_id": 2,
                    "source": "",
                    "state": "done",
                    "queue": "",
                    "total_images": 1,
                    "queued_images": 1,
                }
            ],
        )
        connection.execute(sa.insert(JobImage), [{"job_id": 9, "image_id": 4}])
    with connect() as connection:
        scope = resolve_scope(
            connection, ResultFilter(job=9), default_model="production"
        )
        rows = list(iter_results(connection, scope))
    assert scope.model_version_id == 2
    assert [(row.image_id, row.label) for row in rows] == [(4, "2")]


def test_version_wide_joins_read_in_image_order_on_sqlite_only() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from imgq.db.portable import version_condition
    from imgq.report.queries import PREDICTIONS

    condition = version_condition(PREDICTIONS.c.model_version_id, 3, whole_version=True)
    assert str(condition.compile(dialect=sqlite.dialect())).startswith(
        "+predictions.model_version_id ="
    )
    assert str(condition.compile(dialect=postgresql.dialect())).startswith(
        "predictions.model_version_id ="
    )
