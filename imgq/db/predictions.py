"""Writing predictions: the one place that adds them or changes their truth.

A prediction carries its image's true label (``predictions.true_label``), so
that "wrong answers, most confident first" is one index range instead of a
join over every answer, and the tallies (:mod:`imgq.db.tallies`) count every
answer by it. Both have to follow the image's label, which can arrive after
the prediction (a manifest with labels submitted later), and the two writers
involved take the image rows in turn so that neither misses the other:

- a worker reads its images' labels with ``FOR SHARE NOWAIT`` (PostgreSQL)
  before it inserts; while a submission is changing one of those labels the
  read fails at once, the transaction rolls back and the batch is retried
  later, and it never waits while holding anything a submission needs;
- a submission changes the labels first (its upsert locks the image rows),
  then copies them onto the predictions committed by then.

On SQLite every write transaction holds the database's one write lock, so
the two never overlap there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.orm import Session

from imgq.db import bulk, tallies
from imgq.db.schema import Image, Prediction

PREDICTIONS = cast(Table, Prediction.__table__)
IMAGES = cast(Table, Image.__table__)


def record(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert the predictions in ``rows`` that are new; return how many were.

    Each row holds the columns of ``predictions`` but ``true_label``, which
    is copied from the image. A row whose (image, model version) already has
    a prediction is skipped and not counted again.
    """
    if not rows:
        return 0
    image_ids = sorted({row["image_id"] for row in rows})
    true_labels = dict(
        session.execute(
            select(IMAGES.c.id, IMAGES.c.true_label)
            .where(IMAGES.c.id.in_(image_ids))
            .order_by(IMAGES.c.id)
            .with_for_update(read=True, nowait=True)
        )
        .tuples()
        .all()
    )
    labelled = [{**row, "true_label": true_labels.get(row["image_id"])} for row in rows]
    inserted = session.execute(
        bulk.insert_statement(session, Prediction)
        .on_conflict_do_nothing()
        .returning(
            PREDICTIONS.c.model_version_id,
            PREDICTIONS.c.label,
            PREDICTIONS.c.true_label,
            PREDICTIONS.c.confidence,
        ),
        labelled,
    ).all()
    tallies.add(
        session,
        (
            tallies.Answer(
                model_version_id=version,
                label=label,
                true_label=true_label,
                confidence=float(confidence),
            )
            for version, label, true_label, confidence in inserted
        ),
    )
    return len(inserted)


def follow_true_labels(session: Session, image_ids: Sequence[int]) -> int:
    """Copy the images' true labels onto their predictions; return rows changed.

    Call it in the transaction that changed the labels, after the change.
    """
    if not image_ids:
        return 0
    stale = session.execute(
        select(
            PREDICTIONS.c.id,
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
