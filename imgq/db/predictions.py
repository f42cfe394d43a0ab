"""Writing predictions: the one place that adds them or changes their truth.

A prediction carries its image's true label (``predictions.true_label``), so
that "wrong answers, most confident first" is one index range instead of a
join over every answer, and the tallies (:mod:`imgq.db.tallies`) count every
answer by it, per model version and per job.

The label can arrive after the prediction (a manifest with labels submitted
later), and the two writers involved take the image rows in turn so that
neither misses the other's change:

- a worker locks its images with ``FOR SHARE NOWAIT`` (PostgreSQL) before it
  writes; while a submission is changing one of them the lock fails at once,
  the transaction rolls back and the batch is retried later, so a worker
  never waits while holding anything a submission needs;
- a submission changes the images first (its upsert locks their rows), then
  copies the labels onto the predictions committed by then.

A job's tallies count an image once its job has the image and its version
has answered it, whichever comes last; ``job_images.tallied`` records that it
was counted, so a second writer that sees the same pair counts nothing. On
SQLite every write transaction holds the database's one write lock, so none
of these overlap there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    bindparam,
    exists,
    select,
    update,
)
from sqlalchemy.orm import Session

from imgq.db import bulk, tallies
from imgq.db.schema import Image, Job, JobImage, Prediction

PREDICTIONS = cast(Table, Prediction.__table__)
IMAGES = cast(Table, Image.__table__)
JOBS = cast(Table, Job.__table__)
JOB_IMAGES = cast(Table, JobImage.__table__)


def lock_images(
    session: Session, image_ids: Sequence[int], *, nowait: bool
) -> dict[int, str | None]:
    """Share-lock the images' rows in id order; return their true labels."""
    return dict(
        session.execute(
            select(IMAGES.c.id, IMAGES.c.true_label)
            .where(IMAGES.c.id.in_(sorted(set(image_ids))))
            .order_by(IMAGES.c.id)
            .with_for_update(read=True, nowait=nowait)
        )
        .tuples()
        .all()
    )


def record(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert the predictions in ``rows`` that are new; return how many were.

    Each row holds the columns of ``predictions`` but ``true_label``, which
    is copied from the image. A row whose (image, model version) already has
    a prediction is skipped and not counted again. The answers are counted
    in their version's tallies and in those of every job that has the image.
    """
    if not rows:
        return 0
    true_labels = lock_images(session, [row["image_id"] for row in rows], nowait=True)
    labelled = [{**row, "true_label": true_labels.get(row["image_id"])} for row in rows]
    inserted = bulk.insert_new(
        session,
        Prediction,
        labelled,
        returning=["image_id", "model_version_id", "label", "true_label", "confidence"],
    )
    by_version: dict[int, dict[int, tallies.Answer]] = {}
    for image_id, version, label, true_label, confidence in inserted:
        answer = tallies.Answer(version, label, true_label, float(confidence))
        by_version.setdefault(version, {})[image_id] = answer
    tallies.add(
        session,
        (answer for answers in by_version.values() for answer in answers.values()),
    )
    for version, answers in sorted(by_version.items()):
        tally_memberships(
            session, model_version_id=version, image_ids=list(answers), known=answers
        )
    return len(inserted)


def tally_memberships(
    session: Session,
    *,
    model_version_id: int,
    image_ids: Sequence[int],
    job_id: int | None = None,
    known: dict[int, tallies.Answer] | None = None,
) -> int:
    """Count answered images in the tallies of their jobs; return how many.

    Looks at the memberships of ``image_ids`` in the jobs of the version (or
    in job ``job_id`` alone) that are not counted yet and whose image the
    version has answered. The caller holds the images' rows (a worker's
    share lock, a submission's upsert), so no label changes meanwhile.
    ``known`` holds answers the caller has at hand, which are not read again.
    """
    if not image_ids:
        return 0
    of_version = select(JOBS.c.id).where(JOBS.c.model_version_id == model_version_id)
    if job_id is not None:
        of_version = of_version.where(JOBS.c.id == job_id)
    conditions: list[ColumnElement[bool]] = [
        JOB_IMAGES.c.image_id.in_(sorted(set(image_ids))),
        JOB_IMAGES.c.job_id.in_(of_version),
        JOB_IMAGES.c.tallied.is_(False),
    ]
    if known is None or not set(image_ids) <= set(known):
        conditions.append(
            exists().where(
                PREDICTIONS.c.image_id == JOB_IMAGES.c.image_id,
                PREDICTIONS.c.model_version_id == model_version_id,
            )
        )
    counted = session.execute(
        update(JOB_IMAGES)
        .where(*conditions)
        .values(tallied=True)
        .returning(JOB_IMAGES.c.job_id, JOB_IMAGES.c.image_id)
    ).all()
    if not counted:
        return 0
    answers = dict(known or {})
    unknown = sorted({image for _, image in counted} - set(answers))
    if unknown:
        rows = session.execute(
            select(
                PREDICTIONS.c.image_id,
                PREDICTIONS.c.label,
                PREDICTIONS.c.true_label,
                PREDICTIONS.c.confidence,
            ).where(
                PREDICTIONS.c.model_version_id == model_version_id,
                PREDICTIONS.c.image_id.in_(unknown),
            )
        )
        for image_id, label, true_label, value in rows:
            answers[image_id] = tallies.Answer(
                model_version_id, label, true_label, float(value)
            )
    tallies.add_to_jobs(session, ((job, answers[image]) for job, image in counted))
    return len(counted)


def follow_true_labels(session: Session, image_ids: Sequence[int]) -> int:
    """Copy the images' true labels onto their predictions; return rows changed.

    Call it in the transaction that changed the labels, after the change.
    The answers move between the label tallies of their version and of every
    job that counts them.
    """
    if not image_ids:
        return 0
    stale = session.execute(
        select(
            PREDICTIONS.c.id,
            PREDICTIONS.c.image_id,
            PREDICTIONS.c.model_version_id,
            PREDICTIONS.c.label,
            PREDICTIONS.c.true_label,
            IMAGES.c.true_label.label("new_true_label"),
        )
        .join(IMAGES, IMAGES.c.id == PREDICTIONS.c.image_id)
        .where(
            PREDICTIONS.c.image_id.in_(sorted(set(image_ids))),
            PREDICTIONS.c.true_label.is_distinct_from(IMAGES.c.true_label),
        )
        .order_by(PREDICTIONS.c.id)
    ).all()
    if not stale:
        return 0
    session.execute(
        update(PREDICTIONS)
        .where(PREDICTIONS.c.id == bindparam("prediction_id"))
        .values(true_label=bindparam("new_true_label")),
        [
            {"prediction_id": row.id, "new_true_label": row.new_true_label}
            for row in stale
        ],
    )
    tallies.move_true_labels(
        session,
        (
            (row.model_version_id, row.label, row.true_label, row.new_true_label)
            for row in stale
        ),
    )
    by_answer = {(row.image_id, row.model_version_id): row for row in stale}
    memberships = session.execute(
        select(JOB_IMAGES.c.job_id, JOB_IMAGES.c.image_id, JOBS.c.model_version_id)
        .join(JOBS, JOBS.c.id == JOB_IMAGES.c.job_id)
        .where(
            JOB_IMAGES.c.image_id.in_(sorted({row.image_id for row in stale})),
            JOB_IMAGES.c.tallied.is_(True),
        )
    ).all()
    tallies.move_true_labels(
        session,
        (
            (job, row.label, row.true_label, row.new_true_label)
            for job, image, version in memberships
            if (row := by_answer.get((image, version))) is not None
        ),
        jobs=True,
    )
    return len(stale)


def resync(connection: Connection) -> int:
    """Copy every image's true label onto its predictions and recount the tallies.

    For a database whose labels were changed by hand, outside imgq. Takes the
    write lock (SQLite) or the rows (PostgreSQL) for the whole run, so run it
    while no worker writes. Returns how many predictions changed.
    """
    image_label = (
        select(IMAGES.c.true_label)
        .where(IMAGES.c.id == PREDICTIONS.c.image_id)
        .scalar_subquery()
    )
    changed = connection.execute(
        update(PREDICTIONS)
        .where(PREDICTIONS.c.true_label.is_distinct_from(image_label))
        .values(true_label=image_label)
    ).rowcount
    tallies.recount(connection)
    return int(changed)
