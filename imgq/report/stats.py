"""Aggregates over results, computed by the database.

Three counts give everything: predictions counted by (predicted label, true
label), which holds the counts, the accuracy, the per-class figures and the
confusion matrix; confidences counted in 1000 buckets, which holds the
histogram and the quantiles (to within 0.001) without fetching a single
confidence; and failures counted by kind. For all the answers of a model
version the first two are read from the tallies the writers keep
(:mod:`imgq.db.tallies`); a narrower scope is counted by GROUP BY queries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    case,
    func,
    select,
)

from imgq.db import tallies
from imgq.db.portable import floor_bucket
from imgq.report.queries import (
    FAILURES,
    PREDICTIONS,
    Scope,
    prediction_conditions,
    scoped_predictions,
)

log = logging.getLogger(__name__)

HISTOGRAM_BUCKETS = 1000
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class ClassStats:
    """How one class fared: predicted as it, truly of it, and right."""

    label: str
    predicted: int
    predicted_labelled: int
    actual: int
    correct: int

    @property
    def recall(self) -> float | None:
        """Share of the images truly of this class that were predicted as it."""
        return self.correct / self.actual if self.actual else None

    @property
    def precision(self) -> float | None:
        """Share of the labelled images predicted as this class that are of it."""
        return (
            self.correct / self.predicted_labelled if self.predicted_labelled else None
        )


@dataclass(frozen=True)
class ConfidenceSummary:
    """The spread of confidences: extremes, mean, quantiles, a fine histogram."""

    count: int
    minimum: float | None
    maximum: float | None
    mean: float | None
    quantiles: dict[str, float]
    threshold: float
    below_threshold: int
    histogram: list[int] = field(repr=False)

    def coarse_histogram(self, bins: int = 40) -> list[int]:
        """The histogram summed into ``bins`` equal bins (a divisor of 1000)."""
        if HISTOGRAM_BUCKETS % bins:
            raise ValueError(f"{bins} does not divide {HISTOGRAM_BUCKETS}")
        counts = np.asarray(self.histogram, dtype=np.int64)
        return [int(value) for value in counts.reshape(bins, -1).sum(axis=1)]


@dataclass(frozen=True)
class Stats:
    """Counts, accuracy, per-class figures, confidences and failures of a scope."""

    model_version_id: int | None
    job_id: int | None
    total: int
    labelled: int
    correct: int
    classes: list[ClassStats]
    confusion: dict[tuple[str, str], int]
    confidence: ConfidenceSummary
    failures: dict[str, int]

    @property
    def accuracy(self) -> float | None:
        """Share of right answers among the images with a known true label."""
        return self.correct / self.labelled if self.labelled else None

    @property
    def class_names(self) -> list[str]:
        """Every class in order: the model's first, then labels seen besides."""
        return [entry.label for entry in self.classes]

    def confusion_matrix(self) -> np.ndarray:
        """Counts with true classes as rows and predicted classes as columns."""
        index = {name: position for position, name in enumerate(self.class_names)}
        matrix = np.zeros((len(index), len(index)), dtype=np.int64)
        for (true_label, label), count in self.confusion.items():
            matrix[index[true_label], index[label]] = count
        return matrix

    def to_json(self) -> dict[str, Any]:
        """Every figure as JSON-ready values."""
        return {
            "model_version_id": self.model_version_id,
            "job_id": self.job_id,
            "total": self.total,
            "labelled": self.labelled,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "classes": [
                {
                    "label": entry.label,
                    "predicted": entry.predicted,
                    "actual": entry.actual,
                    "correct": entry.correct,
                    "precision": entry.precision,
                    "recall": entry.recall,
                }
                for entry in self.classes
            ],
            "confusion": [
                {"true_label": true_label, "label": label, "count": count}
                for (true_label, label), count in sorted(self.confusion.items())
            ],
            "confidence": {
                "count": self.confidence.count,
                "min": self.confidence.minimum,
                "max": self.confidence.maximum,
                "mean": self.confidence.mean,
                "quantiles": self.confidence.quantiles,
                "low_threshold": self.confidence.threshold,
                "below_threshold": self.confidence.below_threshold,
                "histogram_40": self.confidence.coarse_histogram(40),
            },
            "failures": self.failures,
        }


def compute_stats(
    connection: Connection, scope: Scope, *, low_confidence: float
) -> Stats:
    """All figures of the scope, from the tallies or three aggregate queries."""
    pairs = label_pairs(connection, scope)
    confidence = confidence_summary(connection, scope, threshold=low_confidence)
    failures = failures_by_kind(connection, scope)
    log.debug("stats of %s: %d predictions", scope.filter, confidence.count)
    return _assemble(scope, pairs, confidence, failures)


@dataclass(frozen=True)
class Tallied:
    """A scope that is all the answers of a version or all the results of a job."""

    model_version_id: int
    job_id: int | None


def tallied_scope(scope: Scope) -> Tallied | None:
    """The version or job whose tallies hold the scope's counts, else None.

    Such a scope is read from the tallies (:mod:`imgq.db.tallies`), a few
    hundred rows, instead of every prediction in it. A filter on anything but
    the job, or a job read with another version than its own, is counted.
    """
    result_filter = scope.filter
    narrowing = (
        result_filter.model if result_filter.job is not None else None,
        result_filter.label,
        result_filter.true_label,
        result_filter.min_confidence,
        result_filter.max_confidence,
        result_filter.since,
        result_filter.until,
    )
    if result_filter.wrong_only or any(value is not None for value in narrowing):
        return None
    if scope.model_version_id is None:
        return None
    return Tallied(model_version_id=scope.model_version_id, job_id=result_filter.job)


def label_pairs(
    connection: Connection, scope: Scope
) -> dict[tuple[str, str | None], int]:
    """Answers counted by (predicted label, true label or None)."""
    tallied = tallied_scope(scope)
    if tallied is not None:
        return tallies.label_counts(
            connection, model_version_id=tallied.model_version_id, job_id=tallied.job_id
        )
    statement = (
        select(PREDICTIONS.c.label, PREDICTIONS.c.true_label, func.count())
        .select_from(scoped_predictions(scope, with_images=False))
        .where(*prediction_conditions(scope))
        .group_by(PREDICTIONS.c.label, PREDICTIONS.c.true_label)
    )
    return {
        (label, true_label): int(count)
        for label, true_label, count in connection.execute(statement)
    }


@dataclass(frozen=True)
class Histogram:
    """Confidences counted in 1000 equal buckets, with what buckets lose."""

    counts: list[int]
    minimum: float | None
    maximum: float | None
    total: float
    below_threshold: int


def confidence_histogram_counts(
    connection: Connection, scope: Scope, *, threshold: float
) -> Histogram:
    """The scope's confidence histogram and how many are below ``threshold``."""
    tallied = tallied_scope(scope)
    if tallied is not None:
        return _tallied_histogram(connection, scope, tallied, threshold)
    bucket = floor_bucket(PREDICTIONS.c.confidence * HISTOGRAM_BUCKETS)
    below = func.sum(case((PREDICTIONS.c.confidence < threshold, 1), else_=0))
    statement = (
        select(
            bucket.label("bucket"),
            func.count(),
            func.min(PREDICTIONS.c.confidence),
            func.max(PREDICTIONS.c.confidence),
            func.sum(PREDICTIONS.c.confidence, type_=Float()),
            below,
        )
        .select_from(scoped_predictions(scope, with_images=False))
        .where(*prediction_conditions(scope))
        .group_by(bucket)
    )
    counts = [0] * HISTOGRAM_BUCKETS
    lows: list[float] = []
    highs: list[float] = []
    total = 0.0
    below_threshold = 0
    for index, count, low, high, summed, below_count in connection.execute(statement):
        # a confidence of exactly 1.0 belongs in the top bucket
        counts[min(max(int(index), 0), HISTOGRAM_BUCKETS - 1)] += int(count)
        lows.append(float(low))
        highs.append(float(high))
        total += float(summed)
        below_threshold += int(below_count)
    return Histogram(
        counts=counts,
        minimum=min(lows, default=None),
        maximum=max(highs, default=None),
        total=total,
        below_threshold=below_threshold,
    )


def _tallied_histogram(
    connection: Connection, scope: Scope, tallied: Tallied, threshold: float
) -> Histogram:
    counts, total = tallies.confidence_counts(
        connection, model_version_id=tallied.model_version_id, job_id=tallied.job_id
    )
    # Each extreme is the first answer of the scope in the (version,
    # confidence) index; a job's is near the start too, as its bucket is the
    # lowest (highest) one the tally has.
    source = scoped_predictions(scope, with_images=False)
    in_scope = PREDICTIONS.c.model_version_id == tallied.model_version_id
    extremes = [
        connection.scalar(
            select(PREDICTIONS.c.confidence)
            .select_from(source)
            .where(in_scope)
            .order_by(order)
            .limit(1)
        )
        for order in (PREDICTIONS.c.confidence, PREDICTIONS.c.confidence.desc())
    ]
    # Whole buckets below the threshold come from the tally; the answers in
    # the threshold's own bucket are counted in a short range of the index.
    threshold_bucket = tallies.confidence_bucket(threshold)
    in_bucket = floor_bucket(PREDICTIONS.c.confidence * HISTOGRAM_BUCKETS)
    partial = connection.scalar(
        select(func.count())
        .select_from(source)
        .where(
            in_scope,
            PREDICTIONS.c.confidence >= (threshold_bucket - 1) / HISTOGRAM_BUCKETS,
            PREDICTIONS.c.confidence < threshold,
            in_bucket >= threshold_bucket,
        )
    )
    minimum, maximum = (None if value is None else float(value) for value in extremes)
    return Histogram(
        counts=counts,
        minimum=minimum,
        maximum=maximum,
        total=total,
        below_threshold=sum(counts[:threshold_bucket]) + int(partial or 0),
    )


def confidence_summary(
    connection: Connection, scope: Scope, *, threshold: float
) -> ConfidenceSummary:
    """Extremes, mean and quantiles of the confidences, from the histogram."""
    histogram = confidence_histogram_counts(connection, scope, threshold=threshold)
    counts, minimum, maximum = histogram.counts, histogram.minimum, histogram.maximum
    count = sum(counts)
    quantiles = {
        f"p{round(q * 100):02d}": quantile_from_histogram(
            counts, q, minimum=minimum, maximum=maximum
        )
        for q in QUANTILES
    }
    return ConfidenceSummary(
        count=count,
        minimum=minimum,
        maximum=maximum,
        mean=histogram.total / count if count else None,
        quantiles={
            name: value for name, value in quantiles.items() if value is not None
        },
        threshold=threshold,
        below_threshold=histogram.below_threshold,
        histogram=counts,
    )


def quantile_from_histogram(
    counts: list[int], q: float, *, minimum: float | None, maximum: float | None
) -> float | None:
    """The q-quantile, interpolated linearly inside its bucket; None if empty."""
    total = sum(counts)
    if not total or minimum is None or maximum is None:
        return None
    cumulative = np.cumsum(counts)
    target = q * total
    bucket = int(np.searchsorted(cumulative, target, side="left"))
    bucket = min(bucket, len(counts) - 1)
    before = int(cumulative[bucket - 1]) if bucket else 0
    inside = counts[bucket]
    fraction = (target - before) / inside if inside else 0.0
    value = (bucket + fraction) / len(counts)
    return float(min(max(value, minimum), maximum))


def failures_by_kind(connection: Connection, scope: Scope) -> dict[str, int]:
    """Failures counted by kind: of the job, else of the model version."""
    conditions: list[ColumnElement[bool]] = []
    result_filter = scope.filter
    if result_filter.job is not None:
        conditions.append(FAILURES.c.job_id == result_filter.job)
    elif scope.model_version_id is not None:
        conditions.append(FAILURES.c.model_version_id == scope.model_version_id)
    if result_filter.since is not None:
        conditions.append(FAILURES.c.created_at >= result_filter.since)
    if result_filter.until is not None:
        conditions.append(FAILURES.c.created_at < result_filter.until)
    statement = (
        select(FAILURES.c.kind, func.count())
        .where(*conditions)
        .group_by(FAILURES.c.kind)
        .order_by(FAILURES.c.kind)
    )
    return {kind: int(count) for kind, count in connection.execute(statement)}


def _assemble(
    scope: Scope,
    pairs: dict[tuple[str, str | None], int],
    confidence: ConfidenceSummary,
    failures: dict[str, int],
) -> Stats:
    seen = {label for label, _ in pairs} | {truth for _, truth in pairs if truth}
    names = list(scope.class_names) + sorted(seen - set(scope.class_names))
    predicted = dict.fromkeys(names, 0)
    predicted_labelled = dict.fromkeys(names, 0)
    actual = dict.fromkeys(names, 0)
    correct = dict.fromkeys(names, 0)
    confusion: dict[tuple[str, str], int] = {}
    for (label, true_label), count in pairs.items():
        predicted[label] += count
        if true_label is None:
            continue
        predicted_labelled[label] += count
        actual[true_label] += count
        confusion[(true_label, label)] = count
        if label == true_label:
            correct[label] += count
    classes = [
        ClassStats(
            label=name,
            predicted=predicted[name],
            predicted_labelled=predicted_labelled[name],
            actual=actual[name],
            correct=correct[name],
        )
        for name in names
    ]
    return Stats(
        model_version_id=scope.model_version_id,
        job_id=scope.filter.job,
        total=sum(predicted.values()),
        labelled=sum(actual.values()),
        correct=sum(correct.values()),
        classes=classes,
        confusion=confusion,
        confidence=confidence,
        failures=failures,
    )
