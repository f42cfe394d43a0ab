"""Running counts of the answers of each model version and of each job.

A report or ``imgq stats`` over a version or a job needs its answers counted
by predicted and true label and the spread of their confidences. On a million
predictions that is a scan of every row; these small tables hold the counts
ready instead, twice: for all the answers of a version and for the results
of a job (its version's answers for its images):

- ``label_tallies`` / ``job_label_tallies``: answers by (version or job,
  predicted label, true label), the true label ``''`` where it is unknown;
- ``confidence_tallies`` / ``job_confidence_tallies``: answers and their
  summed confidence by (version or job, confidence bucket), a bucket being
  ``floor(confidence * 1000)``.

They change only in the transactions that change what they count, through
:mod:`imgq.db.predictions`, so a reader sees them exactly as current as the
predictions. Counts are upserted in key order, so two writers that touch the
same counts lock them in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Join,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from imgq.db import bulk
from imgq.db.portable import floor_bucket
from imgq.db.schema import (
    Base,
    ConfidenceTally,
    Job,
    JobConfidenceTally,
    JobImage,
    JobLabelTally,
    LabelTally,
    Prediction,
)

BUCKETS = 1000
UNKNOWN_LABEL = ""

PREDICTIONS = cast(Table, Prediction.__table__)
JOBS = cast(Table, Job.__table__)
JOB_IMAGES = cast(Table, JobImage.__table__)


@dataclass(frozen=True)
class Answer:
    """What the tallies count of one prediction."""

    model_version_id: int
    label: str
    true_label: str | None
    confidence: float


@dataclass(frozen=True)
class _Tables:
    """The two tallies of one kind of scope and the column naming the scope."""

    labels: type[Base]
    confidences: type[Base]
    scope: str

    def label_table(self) -> Table:
        return cast(Table, self.labels.__table__)

    def confidence_table(self) -> Table:
        return cast(Table, self.confidences.__table__)


VERSION_TALLIES = _Tables(LabelTally, ConfidenceTally, "model_version_id")
JOB_TALLIES = _Tables(JobLabelTally, JobConfidenceTally, "job_id")


def confidence_bucket(confidence: float) -> int:
    """The bucket of a confidence; 1.0 belongs in the top one."""
    return min(max(int(confidence * BUCKETS), 0), BUCKETS - 1)


def _known(true_label: str | None) -> str:
    return UNKNOWN_LABEL if true_label is None else true_label


def add(session: Session, answers: Iterable[Answer], *, sign: int = 1) -> None:
    """Count ``answers`` in (``sign=-1``: take them out of) their versions' tallies."""
    _add(
        session,
        VERSION_TALLIES,
        ((answer.model_version_id, answer) for answer in answers),
        sign,
    )


def add_to_jobs(
    session: Session, answers: Iterable[tuple[int, Answer]], *, sign: int = 1
) -> None:
    """Count each (job id, answer) in the job's tallies."""
    _add(session, JOB_TALLIES, answers, sign)


def _add(
    session: Session, tables: _Tables, answers: Iterable[tuple[int, Answer]], sign: int
) -> None:
    labels: Counter[tuple[int, str, str]] = Counter()
    buckets: Counter[tuple[int, int]] = Counter()
    sums: dict[tuple[int, int], float] = defaultdict(float)
    for scope, answer in answers:
        labels[(scope, answer.label, _known(answer.true_label))] += sign
        bucket = (scope, confidence_bucket(answer.confidence))
        buckets[bucket] += sign
        sums[bucket] += sign * answer.confidence
    _increment_labels(session, tables, labels)
    if not buckets:
        return
    model = tables.confidences
    table = tables.confidence_table()
    bulk.upsert(
        session,
        model,
        [
            {
                tables.scope: scope,
                "bucket": bucket,
                "images": buckets[(scope, bucket)],
                "confidence_sum": sums[(scope, bucket)],
            }
            for scope, bucket in sorted(buckets)
        ],
        key=[tables.scope, "bucket"],
        update={
            "images": lambda excluded: table.c.images + excluded.images,
            "confidence_sum": lambda excluded: (
                table.c.confidence_sum + excluded.confidence_sum
            ),
        },
    )


def move_true_labels(
    session: Session,
    moves: Iterable[tuple[int, str, str | None, str | None]],
    *,
    jobs: bool = False,
) -> None:
    """Recount answers whose image's true label changed.

    Each move is (version, or job with ``jobs``, predicted label, old true
    label, new true label).
    """
    labels: Counter[tuple[int, str, str]] = Counter()
    for scope, label, old, new in moves:
        labels[(scope, label, _known(old))] -= 1
        labels[(scope, label, _known(new))] += 1
    _increment_labels(session, JOB_TALLIES if jobs else VERSION_TALLIES, labels)


def _increment_labels(
    session: Session, tables: _Tables, labels: Counter[tuple[int, str, str]]
) -> None:
    changes = sorted(key for key, change in labels.items() if change)
    if not changes:
        return
    table = tables.label_table()
    bulk.upsert(
        session,
        tables.labels,
        [
            {
                tables.scope: scope,
                "label": label,
                "true_label": true_label,
                "images": labels[(scope, label, true_label)],
            }
            for scope, label, true_label in changes
        ],
        key=[tables.scope, "label", "true_label"],
        update={"images": lambda excluded: table.c.images + excluded.images},
    )


def label_counts(
    connection: Connection, *, model_version_id: int | None = None, job_id: int | None
) -> dict[tuple[str, str | None], int]:
    """Answers of a version (or the results of a job) by (label, true label)."""
    tables, scope = _scope(model_version_id, job_id)
    table = tables.label_table()
    rows = connection.execute(
        select(table.c.label, table.c.true_label, table.c.images)
        .where(table.c[tables.scope] == scope, table.c.images > 0)
        .order_by(table.c.label, table.c.true_label)
    )
    return {
        (label, None if true_label == UNKNOWN_LABEL else true_label): int(images)
        for label, true_label, images in rows
    }


def confidence_counts(
    connection: Connection, *, model_version_id: int | None = None, job_id: int | None
) -> tuple[list[int], float]:
    """Answers in each of the 1000 buckets, and their summed confidence."""
    tables, scope = _scope(model_version_id, job_id)
    table = tables.confidence_table()
    counts = [0] * BUCKETS
    total = 0.0
    rows = connection.execute(
        select(table.c.bucket, table.c.images, table.c.confidence_sum).where(
            table.c[tables.scope] == scope
        )
    )
    for bucket, images, confidence_sum in rows:
        counts[int(bucket)] = int(images)
        total += float(confidence_sum)
    return counts, total


def _scope(model_version_id: int | None, job_id: int | None) -> tuple[_Tables, int]:
    if job_id is not None:
        return JOB_TALLIES, job_id
    if model_version_id is None:
        raise ValueError("tallies are kept per model version or per job")
    return VERSION_TALLIES, model_version_id


def job_results() -> Join:
    """``predictions`` joined to the memberships whose job has their version."""
    return PREDICTIONS.join(
        JOB_IMAGES, JOB_IMAGES.c.image_id == PREDICTIONS.c.image_id
    ).join(
        JOBS,
        and_(
            JOBS.c.id == JOB_IMAGES.c.job_id,
            JOBS.c.model_version_id == PREDICTIONS.c.model_version_id,
        ),
    )


def recount(connection: Connection) -> None:
    """Rebuild every tally, and which memberships are counted, from the rows."""
    for model in (LabelTally, ConfidenceTally, JobLabelTally, JobConfidenceTally):
        connection.execute(delete(cast(Table, model.__table__)))
    answered = (
        exists()
        .where(
            PREDICTIONS.c.image_id == JOB_IMAGES.c.image_id,
            JOBS.c.id == JOB_IMAGES.c.job_id,
            JOBS.c.model_version_id == PREDICTIONS.c.model_version_id,
        )
        .correlate(JOB_IMAGES)
    )
    connection.execute(update(JOB_IMAGES).values(tallied=answered))
    for tables, source, scope in (
        (VERSION_TALLIES, PREDICTIONS, PREDICTIONS.c.model_version_id),
        (JOB_TALLIES, job_results(), JOB_IMAGES.c.job_id),
    ):
        _insert_counts(connection, tables, source, scope)


def _insert_counts(
    connection: Connection,
    tables: _Tables,
    source: FromClause,
    scope: ColumnElement[int],
) -> None:
    true_label = func.coalesce(PREDICTIONS.c.true_label, UNKNOWN_LABEL)
    connection.execute(
        insert(tables.label_table()).from_select(
            [tables.scope, "label", "true_label", "images"],
            select(scope, PREDICTIONS.c.label, true_label, func.count())
            .select_from(source)
            .group_by(scope, PREDICTIONS.c.label, true_label),
        )
    )
    raw_bucket = floor_bucket(PREDICTIONS.c.confidence * BUCKETS)
    bucket = case(
        (raw_bucket >= BUCKETS, BUCKETS - 1), (raw_bucket < 0, 0), else_=raw_bucket
    )
    connection.execute(
        insert(tables.confidence_table()).from_select(
            [tables.scope, "bucket", "images", "confidence_sum"],
            select(scope, bucket, func.count(), func.sum(PREDICTIONS.c.confidence))
            .select_from(source)
            .group_by(scope, bucket),
        )
    )
