"""Result queries: a filter turned into set-based SQL with bound parameters.

Every listing is ordered and LIMITed by the database and streamed in chunks
(``yield_per``, a server-side cursor on PostgreSQL), so a query over a
million predictions brings only the rows it returns into Python.

A job's results are the predictions of the job's model version for the
images that belong to the job (``job_images``): an image submitted again in a
later job keeps its one prediction per model version, and still counts as a
result of the later job.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    FromClause,
    Select,
    Table,
    select,
)
from sqlalchemy.orm import Session

from imgq.db.engine import get_engine, read_only
from imgq.db.portable import unindexed
from imgq.db.schema import Failure, Image, Job, JobImage, ModelVersion, Prediction
from imgq.errors import InputError
from imgq.models import registry

log = logging.getLogger(__name__)

PREDICTIONS = cast(Table, Prediction.__table__)
IMAGES = cast(Table, Image.__table__)
JOB_IMAGES = cast(Table, JobImage.__table__)
FAILURES = cast(Table, Failure.__table__)

# Rows fetched from the database per round trip while streaming.
STREAM_CHUNK = 1000

_RELATIVE_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_TIME_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Order(StrEnum):
    """How a listing is sorted; ties are broken by image and model version.

    Image order is the order of submission and the order of every index that
    holds an image id, so a LIMITed listing of a job or a version stops early.
    """

    IMAGE = "image"
    CONFIDENCE = "confidence"
    CONFIDENCE_DESC = "-confidence"


@dataclass(frozen=True)
class ResultFilter:
    """Which results to look at; every field left at None restricts nothing.

    ``model`` is a version number (``3``, ``v3``) or an alias; a job without a
    model means the job's own model version. ``failed_only`` selects failure
    rows instead of predictions, so it excludes the prediction-only fields.
    Times are compared with the rows' ``created_at`` and are UTC when they
    carry no offset.
    """

    job: int | None = None
    label: str | None = None
    true_label: str | None = None
    model: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    wrong_only: bool = False
    failed_only: bool = False
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.failed_only:
            clashing = [
                name
                for name in ("label", "min_confidence", "max_confidence", "wrong_only")
                if getattr(self, name) not in (None, False)
            ]
            if clashing:
                raise InputError(
                    "failures have no predicted label or confidence; "
                    f"drop {', '.join(clashing)} or failed_only"
                )
        low, high = self.min_confidence, self.max_confidence
        if low is not None and high is not None and low > high:
            raise InputError(f"min_confidence {low} is above max_confidence {high}")
        if self.limit is not None and self.limit < 0:
            raise InputError(f"limit {self.limit} is negative")
        object.__setattr__(self, "since", as_utc(self.since))
        object.__setattr__(self, "until", as_utc(self.until))

    def to_json(self) -> dict[str, Any]:
        """The filter as JSON-ready values (times as ISO 8601), None left out."""
        values: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if value is None or value is False:
                continue
            values[name] = value.isoformat() if isinstance(value, datetime) else value
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> ResultFilter:
        """The filter that :meth:`to_json` wrote; unknown keys are an error."""
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
        parsed = dict(values)
        for name in ("since", "until"):
            if isinstance(parsed.get(name), str):
                parsed[name] = parse_time(parsed[name])
        return cls(**parsed)


@dataclass(frozen=True)
class Scope:
    """A filter with its model reference resolved to a version and its classes."""

    filter: ResultFilter
    model_version_id: int | None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResultRow:
    """One prediction with its image."""

    prediction_id: int
    image_id: int
    path: str
    true_label: str | None
    label: str
    confidence: float
    model_version_id: int
    job_id: int | None
    created_at: datetime

    columns = (
        "prediction_id",
        "image_id",
        "path",
        "true_label",
        "label",
        "confidence",
        "correct",
        "model_version_id",
        "job_id",
        "created_at",
    )

    @property
    def correct(self) -> bool | None:
        """Whether the label matches the true label; None when that is unknown."""
        return None if self.true_label is None else self.label == self.true_label

    def as_dict(self) -> dict[str, Any]:
        """The row's values by column name, ``correct`` included."""
        return {name: getattr(self, name) for name in self.columns}


@dataclass(frozen=True)
class FailureRow:
    """One recorded failure: why an image or a path got no prediction."""

    failure_id: int
    job_id: int
    image_id: int | None
    path: str
    true_label: str | None
    kind: str
    message: str
    model_version_id: int | None
    created_at: datetime

    columns = (
        "failure_id",
        "job_id",
        "image_id",
        "path",
        "true_label",
        "kind",
        "message",
        "model_version_id",
        "created_at",
    )

    def as_dict(self) -> dict[str, Any]:
        """The row's values by column name."""
        return {name: getattr(self, name) for name in self.columns}


def as_utc(moment: datetime | None) -> datetime | None:
    """``moment`` as an aware UTC time; a naive one is taken to be UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 time, or a time ago such as ``90m``, ``24h`` or ``7d``."""
    relative = _RELATIVE_TIME.match(text)
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2)
        delta = timedelta(**{_TIME_UNITS[unit]: amount})
        return (now or datetime.now(UTC)) - delta
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise InputError(
            f"{text!r} is neither an ISO 8601 time nor an age such as 24h or 7d"
        ) from error
    return cast(datetime, as_utc(moment))


@contextmanager
def connect(engine: Engine | None = None) -> Iterator[Connection]:
    """A read-only connection (one snapshot on SQLite) to the configured database."""
    with read_only(engine or get_engine()).connect() as connection:
        yield connection


def resolve_scope(
    connection: Connection, result_filter: ResultFilter, *, default_model: str | None
) -> Scope:
    """Resolve the filter's job and model; ``default_model`` when it names neither.

    Raises InputError for an unknown job and ModelError for an unknown model.
    """
    reference = result_filter.model
    job_version: int | None = None
    if result_filter.job is not None:
        job_version = connection.scalar(
            select(Job.model_version_id).where(Job.id == result_filter.job)
        )
        if job_version is None:
            raise InputError(f"no job {result_filter.job}")
    if reference is None and job_version is None:
        reference = default_model
    if reference is None and job_version is None:
        return Scope(filter=result_filter, model_version_id=None)

    with Session(bind=connection) as session:
        version = (
            registry.resolve(session, reference)
            if reference is not None
            else session.get(ModelVersion, job_version)
        )
        assert version is not None  # the job's foreign key guarantees it
        return Scope(
            filter=result_filter,
            model_version_id=version.id,
            class_names=tuple(str(name) for name in version.class_names),
        )


def with_filter(scope: Scope, **changes: Any) -> Scope:
    """The same scope with some filter fields changed."""
    return replace(scope, filter=replace(scope.filter, **changes))


def prediction_conditions(
    scope: Scope, *, wrong_index: bool = True
) -> list[ColumnElement[bool]]:
    """WHERE conditions on ``predictions`` alone for the scope.

    The job is not among them: :func:`scoped_predictions` joins its members.
    The true label is the prediction's copy of the image's, so no condition
    needs ``images``. With ``wrong_index`` "wrong" is spelled exactly as the
    partial index of wrong answers is, which lets the planner read it; a
    listing in image order asks for the other spelling (see
    :class:`imgq.db.portable.unindexed`).
    """
    result_filter = scope.filter
    conditions: list[ColumnElement[bool]] = []
    if scope.model_version_id is not None:
        conditions.append(PREDICTIONS.c.model_version_id == scope.model_version_id)
    if result_filter.label is not None:
        conditions.append(PREDICTIONS.c.label == result_filter.label)
    if result_filter.true_label is not None:
        conditions.append(PREDICTIONS.c.true_label == result_filter.true_label)
    if result_filter.min_confidence is not None:
        conditions.append(PREDICTIONS.c.confidence >= result_filter.min_confidence)
    if result_filter.max_confidence is not None:
        conditions.append(PREDICTIONS.c.confidence <= result_filter.max_confidence)
    if result_filter.wrong_only:
        label = PREDICTIONS.c.label if wrong_index else unindexed(PREDICTIONS.c.label)
        conditions.append(label != PREDICTIONS.c.true_label)
    if result_filter.since is not None:
        conditions.append(PREDICTIONS.c.created_at >= result_filter.since)
    if result_filter.until is not None:
        conditions.append(PREDICTIONS.c.created_at < result_filter.until)
    return conditions


def join_job(
    source: FromClause, image_id: ColumnElement[Any], job_id: int | None
) -> FromClause:
    """``source`` joined to the members of job ``job_id`` (unchanged for None).

    A join rather than EXISTS: (job_id, image_id) is the key of job_images, so
    it adds no rows, and the planner may start from the job's members, which
    SQLite does not do for a correlated EXISTS.
    """
    if job_id is None:
        return source
    return source.join(
        JOB_IMAGES,
        (JOB_IMAGES.c.image_id == image_id) & (JOB_IMAGES.c.job_id == job_id),
    )


def scoped_predictions(scope: Scope, *, with_images: bool = True) -> FromClause:
    """``predictions``, limited to the scope's job, joined to ``images`` if asked."""
    source = join_job(PREDICTIONS, PREDICTIONS.c.image_id, scope.filter.job)
    if with_images:
        source = source.join(IMAGES, IMAGES.c.id == PREDICTIONS.c.image_id)
    return source


def results_statement(scope: Scope, *, order: Order = Order.IMAGE) -> Select[Any]:
    """The SELECT behind :func:`iter_results`, for inspection and benchmarks."""
    statement = (
        select(
            PREDICTIONS.c.id,
            PREDICTIONS.c.image_id,
            IMAGES.c.path,
            PREDICTIONS.c.true_label,
            PREDICTIONS.c.label,
            PREDICTIONS.c.confidence,
            PREDICTIONS.c.model_version_id,
            PREDICTIONS.c.job_id,
            PREDICTIONS.c.created_at,
        )
        .select_from(scoped_predictions(scope))
        .where(
            *prediction_conditions(scope, wrong_index=order is Order.CONFIDENCE_DESC)
        )
    )
    # the same image id, named where the planner can read it in order
    # (SQLite does not carry the order across the join's equality)
    image_id = JOB_IMAGES.c.image_id if scope.filter.job is not None else IMAGES.c.id
    by_image = (image_id, PREDICTIONS.c.model_version_id)
    if order is Order.CONFIDENCE:
        statement = statement.order_by(PREDICTIONS.c.confidence, *by_image)
    elif order is Order.CONFIDENCE_DESC:
        statement = statement.order_by(PREDICTIONS.c.confidence.desc(), *by_image)
    else:
        statement = statement.order_by(*by_image)
    if scope.filter.limit is not None:
        statement = statement.limit(scope.filter.limit)
    return statement


def iter_results(
    connection: Connection, scope: Scope, *, order: Order = Order.IMAGE
) -> Iterator[ResultRow]:
    """Stream the predictions in scope, sorted by ``order``, up to the limit."""
    statement = results_statement(scope, order=order)
    log.debug("results of %s, order %s", scope.filter, order.value)
    result = connection.execution_options(yield_per=STREAM_CHUNK).execute(statement)
    for row in result:
        yield ResultRow(
            prediction_id=row.id,
            image_id=row.image_id,
            path=row.path,
            true_label=row.true_label,
            label=row.label,
            confidence=float(row.confidence),
            model_version_id=row.model_version_id,
            job_id=row.job_id,
            created_at=cast(datetime, as_utc(row.created_at)),
        )


def worst_wrong(connection: Connection, scope: Scope, *, limit: int) -> list[ResultRow]:
    """Wrong predictions, the most confident first: the ones to look at first."""
    wrong = with_filter(scope, wrong_only=True, limit=limit)
    return list(iter_results(connection, wrong, order=Order.CONFIDENCE_DESC))


def least_confident(
    connection: Connection, scope: Scope, *, limit: int
) -> list[ResultRow]:
    """The predictions the model was least sure of, the lowest confidence first."""
    limited = with_filter(scope, limit=limit)
    return list(iter_results(connection, limited, order=Order.CONFIDENCE))


def samples_per_class(
    connection: Connection, scope: Scope, *, per_class: int
) -> dict[str, list[ResultRow]]:
    """Up to ``per_class`` predictions of each class, the most confident first.

    One small query per class of the model, each served by the index on
    (model version, label, confidence).
    """
    samples: dict[str, list[ResultRow]] = {}
    for class_name in scope.class_names:
        of_class = with_filter(scope, label=class_name, limit=per_class)
        samples[class_name] = list(
            iter_results(connection, of_class, order=Order.CONFIDENCE_DESC)
        )
    return samples


def failures_statement(scope: Scope) -> Select[Any]:
    """The SELECT behind :func:`iter_failures`."""
    result_filter = scope.filter
    conditions: list[ColumnElement[bool]] = []
    if result_filter.job is not None:
        conditions.append(FAILURES.c.job_id == result_filter.job)
    elif scope.model_version_id is not None:
        conditions.append(FAILURES.c.model_version_id == scope.model_version_id)
    if result_filter.true_label is not None:
        conditions.append(IMAGES.c.true_label == result_filter.true_label)
    if result_filter.since is not None:
        conditions.append(FAILURES.c.created_at >= result_filter.since)
    if result_filter.until is not None:
        conditions.append(FAILURES.c.created_at < result_filter.until)
    statement = (
        select(
            FAILURES.c.id,
            FAILURES.c.job_id,
            FAILURES.c.image_id,
            FAILURES.c.path,
            IMAGES.c.true_label,
            FAILURES.c.kind,
            FAILURES.c.message,
            FAILURES.c.model_version_id,
            FAILURES.c.created_at,
        )
        .select_from(FAILURES.outerjoin(IMAGES, IMAGES.c.id == FAILURES.c.image_id))
        .where(*conditions)
        .order_by(FAILURES.c.id)
    )
    if result_filter.limit is not None:
        statement = statement.limit(result_filter.limit)
    return statement


def iter_failures(connection: Connection, scope: Scope) -> Iterator[FailureRow]:
    """Stream the failures in scope (by job, else by model version), oldest first."""
    result = connection.execution_options(yield_per=STREAM_CHUNK).execute(
        failures_statement(scope)
    )
    for row in result:
        yield FailureRow(
            failure_id=row.id,
            job_id=row.job_id,
            image_id=row.image_id,
            path=row.path,
            true_label=row.true_label,
            kind=row.kind,
            message=row.message,
            model_version_id=row.model_version_id,
            created_at=cast(datetime, as_utc(row.created_at)),
        )
