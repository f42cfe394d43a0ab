"""Bulk writes: the same results on SQLite and PostgreSQL, whatever the path."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from report_data import model_version_row

from imgq.db import bulk
from imgq.db.engine import get_engine, session_scope
from imgq.db.schema import Image, ModelVersion, Prediction

HOSTILE = "x'; DROP TABLE images; --"


def _prediction(image_id: int, label: str, true_label: str | None) -> dict[str, object]:
    return {
        "image_id": image_id,
        "model_version_id": 1,
        "job_id": None,
        "batch_id": None,
        "label": label,
        "true_label": true_label,
        "label_index": 0,
        "confidence": 0.25 * image_id,
        "probabilities": [0.5, {"nested": [1, None]}, HOSTILE],
        "batch_images": 3,
        "decode_ms": 0.5,
        "predict_ms": 0.25,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }


def test_insert_new_returns_only_the_rows_it_inserted(migrated: str) -> None:
    with get_engine(migrated).begin() as connection:
        connection.execute(sa.insert(ModelVersion), [model_version_row(1, "m")])
        connection.execute(
            sa.insert(Image),
            [
                {"id": n, "content_hash": f"{n:064d}", "path": f"/{n}", "size_bytes": 1}
                for n in (1, 2, 3)
            ],
        )
    with session_scope() as session:
        first = bulk.insert_new(
            session,
            Prediction,
            [_prediction(1, HOSTILE, None), _prediction(2, "b", "c")],
            returning=["image_id", "label", "true_label"],
        )
    with session_scope() as session:
        second = bulk.insert_new(
            session,
            Prediction,
            [_prediction(2, "other", None), _prediction(3, "c", HOSTILE)],
            returning=["image_id", "label"],
        )

    assert sorted(first) == [(1, HOSTILE, None), (2, "b", "c")]
    assert second == [(3, "c")]
    with session_scope() as session:
        stored = session.scalars(select_all()).all()
        assert [(row.image_id, row.label, row.true_label) for row in stored] == [
            (1, HOSTILE, None),
            (2, "b", "c"),
            (3, "c", HOSTILE),
        ]
        row = stored[2]
        assert row.probabilities == [0.5, {"nested": [1, None]}, HOSTILE]
        assert row.confidence == 0.75 and row.batch_images == 3
        assert row.created_at.replace(tzinfo=UTC) == datetime(
            2026, 1, 2, 3, 4, 5, tzinfo=UTC
        )


def select_all() -> sa.Select[tuple[Prediction]]:
    return sa.select(Prediction).order_by(Prediction.image_id)
