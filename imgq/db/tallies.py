"""Running counts of each model version's answers, kept in step with its rows.

A report or ``imgq stats`` over a whole model version needs every answer
counted by predicted and true label and the spread of the confidences. On a
million predictions that is a scan of every row; these two small tables hold
the counts ready instead:

- ``label_tallies``: answers by (version, predicted label, true label), the
  true label ``''`` where it is unknown;
- ``confidence_tallies``: answers and their summed confidence by (version,
  confidence bucket), a bucket being ``floor(confidence * 1000)``.

They change only in the transactions that change what they count (a new
prediction, a true label that arrives later; see :mod:`imgq.db.predictions`),
so they are exactly as current as the predictions a reader sees. Counts are
upserted in key order, so two writers that touch the same counts lock them in
the same order and cannot deadlock. ``imgq db recount`` rebuilds both from the
predictions, for a database edited by hand.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, case, delete, func, insert, select
from sqlalchemy.orm import Session

from imgq.db import bulk
from imgq.db.portable import floor_bucket
from imgq.db.schema import ConfidenceTally, LabelTally, Prediction

BUCKETS = 1000
UNKNOWN_LABEL = ""

LABEL_TALLIES = cast(Table, LabelTally.__table__)
CONFIDENCE_TALLIES = cast(Table, ConfidenceTally.__table__)
PREDICTIONS = cast(Table, Prediction.__table__)


@dataclass(frozen=True)
class Answer:
    """What a tally counts of one prediction."""

    model_version_id: int
    label: str
    true_label: str | None
    confidence: float


def confidence_bucket(confidence: float) -> int:
    """The bucket of a confidence; 1.0 belongs in the top one."""
    return min(max(int(confidence * BUCKETS), 0), BUCKETS - 1)


def add(session: Session, answers: Iterable[Answer], *, sign: int = 1) -> None:
    """Count ``answers`` in (``sign=-1``: take them out of) both tallies."""
    labels: Counter[tuple[int, str, str]] = Counter()
    buckets: Counter[tuple[int, int]] = Counter()
    sums: dict[tuple[int, int], float] = defaultdict(float)
    for answer in answers:
        true_label = UNKNOWN_LABEL if answer.true_label is None else answer.true_label
        labels[(answer.model_version_id, answer.label, true_label)] += sign
        bucket = (answer.model_version_id, confidence_bucket(answer.confidence))
        buckets[bucket] += sign
        sums[bucket] += sign * answer.confidence
    _increment_labels(session, labels)
    if buckets:
        bulk.upsert(
            session,
            ConfidenceTally,
            [
                {
                    "model_version_id": version,
                    "bucket": bucket,
                    "images": buckets[(version, bucket)],
                    "confidence_sum": sums[(version, bucket)],
                }
                for version, bucket in sorted(buckets)
            ],
            key=["model_version_id", "bucket"],
            update={
                "images": lambda excluded: ConfidenceTally.images + excluded.images,
                "confidence_sum": lambda excluded: (
                    ConfidenceTally.confidence_sum + excluded.confidence_sum
                ),
            },
        )


def move_true_labels(
    session: Session, moves: Iterable[tuple[int, str, str | None, str | None]]
) -> None:
    """Recount answers whose image's true label changed.

    Each move is (version, predicted label, old true label, new true label).
    """
    labels: Counter[tuple[int, str, str]] = Counter()
    for version, label, old, new in moves:
        labels[(version, label, UNKNOWN_LABEL if old is None else old)] -= 1
        labels[(version, label, UNKNOWN_LABEL if new is None else new)] += 1
    _increment_labels(session, labels)


def _increment_labels(session: Session, labels: Counter[tuple[int, str, str]]) -> None:
    changes = sorted(key for key, change in labels.items() if change)
    if not changes:
        return
    bulk.upsert(
        session,
        LabelTally,
        [
            {
                "model_version_id": version,
                "label": label,
                "true_label": true_label,
                "images": labels[(version, label, true_label)],
            }
            for version, label, true_label in changes
        ],
        key=["model_version_id", "label", "true_label"],
        update={"images": lambda excluded: LabelTally.images + excluded.images},
    )


def label_counts(
    connection: Connection, model_version_id: int
) -> dict[tuple[str, str | None], int]:
    """Answers of a version by (predicted label, true label or None)."""
    rows = connection.execute(
        select(
            LABEL_TALLIES.c.label, LABEL_TALLIES.c.true_label, LABEL_TALLIES.c.images
        )
        .where(
            LABEL_TALLIES.c.model_version_id == model_version_id,
            LABEL_TALLIES.c.images > 0,
        )
        .order_by(LABEL_TALLIES.c.label, LABEL_TALLIES.c.true_label)
    )
    return {
        (label, None if true_label == UNKNOWN_LABEL else true_label): int(images)
        for label, true_label, images in rows
    }


def confidence_counts(
    connection: Connection, model_version_id: int
) -> tuple[list[int], float]:
    """A version's answers in each of the 1000 buckets, and their summed confidence."""
    counts = [0] * BUCKETS
    total = 0.0
    rows = connection.execute(
        select(
            CONFIDENCE_TALLIES.c.bucket,
            CONFIDENCE_TALLIES.c.images,
            CONFIDENCE_TALLIES.c.confidence_sum,
        ).where(CONFIDENCE_TALLIES.c.model_version_id == model_version_id)
    )
    for bucket, images, confidence_sum in rows:
        counts[int(bucket)] = int(images)
        total += float(confidence_sum)
    return counts, total


def recount(connection: Connection, model_version_id: int | None = None) -> None:
    """Rebuild the tallies of one version (None: of all) from its predictions."""
    label_scope: list[Any] = []
    confidence_scope: list[Any] = []
    prediction_scope: list[Any] = []
    if model_version_id is not None:
        label_scope.append(LABEL_TALLIES.c.model_version_id == model_version_id)
        confidence_scope.append(
            CONFIDENCE_TALLIES.c.model_version_id == model_version_id
        )
        prediction_scope.append(PREDICTIONS.c.model_version_id == model_version_id)
    connection.execute(delete(LABEL_TALLIES).where(*label_scope))
    connection.execute(delete(CONFIDENCE_TALLIES).where(*confidence_scope))
    true_label = func.coalesce(PREDICTIONS.c.true_label, UNKNOWN_LABEL)
    connection.execute(
        insert(LABEL_TALLIES).from_select(
            ["model_version_id", "label", "true_label", "images"],
            select(
                PREDICTIONS.c.model_version_id,
                PREDICTIONS.c.label,
                true_label,
                func.count(),
            )
            .where(*prediction_scope)
            .group_by(PREDICTIONS.c.model_version_id, PREDICTIONS.c.label, true_label),
        )
    )
    raw_bucket = floor_bucket(PREDICTIONS.c.confidence * BUCKETS)
    bucket = case(
        (raw_bucket >= BUCKETS, BUCKETS - 1), (raw_bucket < 0, 0), else_=raw_bucket
    )
    connection.execute(
        insert(CONFIDENCE_TALLIES).from_select(
            ["model_version_id", "bucket", "images", "confidence_sum"],
            select(
                PREDICTIONS.c.model_version_id,
                bucket,
                func.count(),
                func.sum(PREDICTIONS.c.confidence),
            )
            .where(*prediction_scope)
            .group_by(PREDICTIONS.c.model_version_id, bucket),
        )
    )
