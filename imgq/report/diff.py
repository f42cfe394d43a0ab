"""Which answers changed between two model versions.

Two predictions are compared when both versions answered for the same image
(the pair ``image_id, model_version_id`` is unique, so the join finds at most
one of each). The counts are one GROUP BY; the list of changed images is
streamed in image order. Given a threshold, the summary also counts the
compared images each version answered below it, which shows how the share of
low-confidence answers moved after a re-inference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, FromClause, Select, case, func, select

from imgq.db.portable import version_condition
from imgq.report.queries import (
    IMAGES,
    JOB_IMAGES,
    PREDICTIONS,
    STREAM_CHUNK,
    join_job,
)

log = logging.getLogger(__name__)

_A = PREDICTIONS.alias("a")
_B = PREDICTIONS.alias("b")


@dataclass(frozen=True)
class DiffSummary:
    """How the answers of version A compare with those of version B."""

    model_a: int
    model_b: int
    job: int | None
    in_a: int
    in_b: int
    transitions: dict[tuple[str, str], int]
    low_confidence: float | None = None
    low_a: int = 0
    low_b: int = 0

    @property
    def compared(self) -> int:
        """Images that both versions answered for."""
        return sum(self.transitions.values())

    @property
    def changed(self) -> int:
        """Images whose predicted label differs between the versions."""
        return sum(count for (a, b), count in self.transitions.items() if a != b)

    def changed_pairs(self) -> list[tuple[str, str, int]]:
        """(label of A, label of B, count) of the changes, the most frequent first."""
        pairs = [(a, b, count) for (a, b), count in self.transitions.items() if a != b]
        return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))

    def low_shares(self) -> tuple[float, float] | None:
        """Shares of the compared images A and B answered below the threshold."""
        if self.low_confidence is None or not self.compared:
            return None
        return self.low_a / self.compared, self.low_b / self.compared

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        document: dict[str, Any] = {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "job": self.job,
            "in_a": self.in_a,
            "in_b": self.in_b,
            "compared": self.compared,
            "changed": self.changed,
            "changes": [
                {"label_a": a, "label_b": b, "count": count}
                for a, b, count in self.changed_pairs()
            ],
        }
        if self.low_confidence is not None:
            document["low_confidence"] = {
                "threshold": self.low_confidence,
                "a": self.low_a,
                "b": self.low_b,
            }
        return document


@dataclass(frozen=True)
class DiffRow:
    """One image whose answer changed, with both answers."""

    image_id: int
    path: str
    true_label: str | None
    label_a: str
    confidence_a: float
    label_b: str
    confidence_b: float

    columns = (
        "image_id",
        "path",
        "true_label",
        "label_a",
        "confidence_a",
        "label_b",
        "confidence_b",
    )

    def as_dict(self) -> dict[str, Any]:
        """The row's values by column name."""
        return {name: getattr(self, name) for name in self.columns}


def diff_summary(
    connection: Connection,
    *,
    model_a: int,
    model_b: int,
    job: int | None = None,
    low_confidence: float | None = None,
) -> DiffSummary:
    """Counts of each version's answers and of every (A label, B label) pair.

    With ``low_confidence``, also the compared answers below it, of A and of B.
    """
    threshold = 0.0 if low_confidence is None else low_confidence
    low_a = func.sum(case((_A.c.confidence < threshold, 1), else_=0))
    low_b = func.sum(case((_B.c.confidence < threshold, 1), else_=0))
    transitions = (
        select(_A.c.label, _B.c.label, func.count(), low_a, low_b)
        .select_from(_pairs(model_b, job, whole_version=job is None))
        .where(
            version_condition(_A.c.model_version_id, model_a, whole_version=job is None)
        )
        .group_by(_A.c.label, _B.c.label)
    )
    counts: dict[tuple[str, str], int] = {}
    low_counts = [0, 0]
    for label_a, label_b, count, below_a, below_b in connection.execute(transitions):
        counts[(label_a, label_b)] = int(count)
        low_counts[0] += int(below_a or 0)
        low_counts[1] += int(below_b or 0)
    summary = DiffSummary(
        model_a=model_a,
        model_b=model_b,
        job=job,
        in_a=_count(connection, model_a, job),
        in_b=_count(connection, model_b, job),
        transitions=counts,
    )
    if low_confidence is not None:
        summary = replace(
            summary,
            low_confidence=low_confidence,
            low_a=low_counts[0],
            low_b=low_counts[1],
        )
    log.debug("diff %d -> %d: %d changed", model_a, model_b, summary.changed)
    return summary


def changes_statement(
    *, model_a: int, model_b: int, job: int | None = None, limit: int | None = None
) -> Select[Any]:
    """The SELECT behind :func:`iter_changes`."""
    statement = (
        select(
            _A.c.image_id,
            IMAGES.c.path,
            IMAGES.c.true_label,
            _A.c.label.label("label_a"),
            _A.c.confidence.label("confidence_a"),
            _B.c.label.label("label_b"),
            _B.c.confidence.label("confidence_b"),
        )
        .select_from(_pairs(model_b, job).join(IMAGES, IMAGES.c.id == _A.c.image_id))
        .where(_A.c.model_version_id == model_a, _A.c.label != _B.c.label)
        .order_by(JOB_IMAGES.c.image_id if job is not None else _A.c.image_id)
    )
    return statement if limit is None else statement.limit(limit)


def iter_changes(
    connection: Connection,
    *,
    model_a: int,
    model_b: int,
    job: int | None = None,
    limit: int | None = None,
) -> Iterator[DiffRow]:
    """Stream the images whose label differs between A and B, in image order."""
    statement = changes_statement(
        model_a=model_a, model_b=model_b, job=job, limit=limit
    )
    result = connection.execution_options(yield_per=STREAM_CHUNK).execute(statement)
    for row in result:
        yield DiffRow(
            image_id=row.image_id,
            path=row.path,
            true_label=row.true_label,
            label_a=row.label_a,
            confidence_a=float(row.confidence_a),
            label_b=row.label_b,
            confidence_b=float(row.confidence_b),
        )


def _pairs(model_b: int, job: int | None, *, whole_version: bool = False) -> FromClause:
    """A's predictions (of the job) joined to B's for the same image."""
    version_b = version_condition(
        _B.c.model_version_id, model_b, whole_version=whole_version
    )
    pair = (_B.c.image_id == _A.c.image_id) & version_b
    return join_job(_A, _A.c.image_id, job).join(_B, pair)


def _count(connection: Connection, model_version_id: int, job: int | None) -> int:
    statement = (
        select(func.count())
        .select_from(join_job(PREDICTIONS, PREDICTIONS.c.image_id, job))
        .where(PREDICTIONS.c.model_version_id == model_version_id)
    )
    return int(connection.scalar(statement) or 0)
