"""Aggregates over results, computed by the database.

Three GROUP BY queries give everything: predictions counted by (predicted
label, true label), which holds the counts, the accuracy, the per-class
figures and the confusion matrix; confidences counted in 1000 buckets, which
holds the histogram and the quantiles (to within 0.001) without fetching a
single confidence; and failures counted by kind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
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

from imgq.report.portable import floor_bucket
from imgq.report.queries import (
    FAILURES,
    IMAGES,
    PREDICTIONS,
    Scope,
    needs_images,
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
    """All figures of the scope, from three aggregate queries."""
    pairs = label_pairs(connection, scope, low_confidence=low_confidence)
    confidence = confidence_summary(connection, scope, threshold=low_confidence)
    confidence = replace(
        confidence, below_threshold=sum(below for _, below in pairs.values())
    )
    failures = failures_by_kind(connection, scope)
    log.debug("stats of %s: %d predictions", scope.filter, confidence.count)
    return _assemble(scope, pairs, confidence, failures)


def label_pairs(
    connection: Connection, scope: Scope, *, low_confidence: float
) -> dict[tuple[str, str | None], tuple[int, int]]:
    """(count, count below ``low_confidence``) by (predicted label, true label)."""
    below = func.sum(case((PREDICTIONS.c.confidence < low_confidence, 1), else_=0))
    statement = (
        select(PREDICTIONS.c.label, IMAGES.c.true_label, func.count(), below)
        .select_from(scoped_predictions(scope))
        .where(*prediction_conditions(scope, image_order=True))
        .group_by(PREDICTIONS.c.label, IMAGES.c.true_label)
    )
    return {
        (label, true_label): (int(count), int(below_count or 0))
        for label, true_label, count, below_count in connection.execute(statement)
    }


def confidence_histogram_counts(
    connection: Connection, scope: Scope
) -> tuple[list[int], float | None, float | None, float]:
    """Counts in 1000 equal confidence buckets, with the minimum, maximum and sum."""
    bucket = floor_bucket(PREDICTIONS.c.confidence * HISTOGRAM_BUCKETS)
    source = scoped_predictions(scope, with_images=needs_images(scope.filter))
    statement = (
        select(
            bucket.label("bucket"),
            func.count(),
            func.min(PREDICTIONS.c.confidence),
            func.max(PREDICTIONS.c.confidence),
            func.sum(PREDICTIONS.c.confidence, type_=Float()),
        )
        .select_from(source)
        .where(*prediction_conditions(scope))
        .group_by(bucket)
    )
    counts = [0] * HISTOGRAM_BUCKETS
    lows: list[float] = []
    highs: list[float] = []
    total = 0.0
    for index, count, low, high, summed in connection.execute(statement):
        # a confidence of exactly 1.0 belongs in the top bucket
        counts[min(max(int(index), 0), HISTOGRAM_BUCKETS - 1)] += int(count)
        lows.append(float(low))
        highs.append(float(high))
        total += float(summed)
    return counts, min(lows, default=None), max(highs, default=None), total


def confidence_summary(
    connection: Connection, scope: Scope, *, threshold: float
) -> ConfidenceSummary:
    """Extremes, mean and quantiles of the confidences, from the histogram."""
    counts, minimum, maximum, total = confidence_histogram_counts(connection, scope)
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
        mean=total / count if count else None,
        quantiles={
            name: value for name, value in quantiles.items() if value is not None
        },
        threshold=threshold,
        below_threshold=0,
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
    pairs: dict[tuple[str, str | None], tuple[int, int]],
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
    for (label, true_label), (count, _) in pairs.items():
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
