"""Known rows for the report and query tests, written straight into a database.

Two model versions answer for sixteen images in three jobs; every expected
figure in the tests can be worked out by hand from ``ROWS``.

Job 1 (version 1) holds images 1-12; job 2 (version 1) holds images 9-16, of
which 9-12 were answered in job 1 already; job 3 (version 2) re-runs all 16.
Image 7's file is deleted after it was answered, so it cannot be drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from PIL import Image, ImageDraw
from sqlalchemy.orm import Session

from imgq.db import predictions
from imgq.db.engine import get_engine
from imgq.db.schema import (
    Failure,
    Job,
    JobImage,
    ModelAlias,
    ModelVersion,
)
from imgq.db.schema import (
    Image as ImageRow,
)

CLASSES = ["0", "1", "2", "3"]
HOSTILE = "x'; DROP TABLE images; --"

# image number: (true label, v1 label, v1 confidence, v2 label, v2 confidence)
ROWS: dict[int, tuple[str | None, str, float, str, float]] = {
    1: ("0", "0", 0.99, "0", 0.98),
    2: ("0", "1", 0.91, "0", 0.70),
    3: ("1", "1", 0.55, "1", 0.90),
    4: ("1", "1", 0.85, "2", 0.60),
    5: ("2", "3", 0.40, "2", 0.80),
    6: ("2", "2", 0.97, "2", 0.95),
    7: ("3", "3", 0.30, "3", 0.65),
    8: ("3", "2", 0.75, "3", 0.85),
    9: (None, "0", 0.62, "0", 0.66),
    10: (None, "1", 0.45, "3", 0.50),
    11: ("0", "0", 0.88, "0", 0.91),
    12: ("1", "0", 0.66, "0", 0.52),
    13: ("2", "2", 0.93, "2", 0.93),
    14: ("3", "1", 0.58, "1", 0.61),
    15: (None, "3", 0.35, "3", 0.72),
    16: ("0", "0", 1.00, "2", 0.44),
}
JOB_IMAGES = {1: range(1, 13), 2: range(9, 17), 3: range(1, 17)}
UNREADABLE = 7

BASE_TIME = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
# predictions of job 1 on day 1, of job 2 on day 2, of job 3 on day 3
JOB_DAY = {1: 0, 2: 1, 3: 2}


@dataclass(frozen=True)
class Known:
    """Where the known rows went."""

    url: str
    image_dir: Path
    paths: dict[int, str]


def answering_job(image: int, version: int) -> int:
    """The job whose worker wrote the prediction of ``image`` by ``version``."""
    if version == 2:
        return 3
    return 1 if image <= 12 else 2


def prediction_time(image: int, version: int) -> datetime:
    """When the prediction of ``image`` by ``version`` was written."""
    day = JOB_DAY[answering_job(image, version)]
    return BASE_TIME + timedelta(days=day, minutes=image)


def draw_digit(path: Path, text: str) -> None:
    """A 28x28 grey PNG with ``text`` drawn in white on black."""
    picture = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(picture).text((9, 7), text[:2], fill=255)
    picture.save(path)


def model_version_row(version: int, name: str) -> dict[str, object]:
    """A model_versions row of a 28x28 greyscale model with CLASSES."""
    return {
        "id": version,
        "name": name,
        "architecture": "cnn",
        "path": f"/models/{name}.keras",
        "content_hash": "0" * 64,
        "class_names": CLASSES,
        "input_shape": [28, 28, 1],
        "preprocessing": {
            "height": 28,
            "width": 28,
            "channels": 1,
            "background": 0,
            "resample": "bilinear",
        },
        "metrics": {},
        "data_fingerprint": "f" * 64,
        "imgq_version": "0.1.0",
        "created_at": BASE_TIME,
    }


def fill(url: str, image_dir: Path) -> Known:
    """Write the versions, jobs, images, predictions and failures of ROWS."""
    image_dir.mkdir(parents=True, exist_ok=True)
    paths = {number: str(image_dir / f"image-{number:02d}.png") for number in ROWS}
    for number, (true_label, *_rest) in ROWS.items():
        draw_digit(Path(paths[number]), true_label or "?")
    engine = get_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(ModelVersion),
            [model_version_row(1, "digits-v1"), model_version_row(2, "digits-v2")],
        )
        connection.execute(
            sa.insert(ModelAlias),
            [
                {"alias": "production", "model_version_id": 1, "updated_at": BASE_TIME},
                {"alias": "candidate", "model_version_id": 2, "updated_at": BASE_TIME},
            ],
        )
        connection.execute(sa.insert(Job), [_job(1, 1), _job(2, 1), _job(3, 2)])
        connection.execute(
            sa.insert(ImageRow),
            [
                {
                    "id": number,
                    "content_hash": f"{number:064d}",
                    "path": paths[number],
                    "true_label": values[0],
                    "size_bytes": 100,
                    "created_at": BASE_TIME,
                }
                for number, values in ROWS.items()
            ]
            + [
                {
                    "id": 17,
                    "content_hash": f"{17:064d}",
                    "path": str(image_dir / "17.png"),
                    "true_label": "2",
                    "size_bytes": 10,
                    "created_at": BASE_TIME,
                },
            ],
        )
        connection.execute(
            sa.insert(JobImage),
            [
                {"job_id": job, "image_id": number}
                for job, numbers in JOB_IMAGES.items()
                for number in numbers
            ]
            + [{"job_id": 2, "image_id": 17}],
        )
        store_predictions(
            connection,
            [_prediction(number, version) for number in ROWS for version in (1, 2)],
        )
        connection.execute(
            sa.insert(Failure),
            [
                _failure(1, 2, 17, "truncated", 1),
                _failure(2, 2, None, "not_an_image", 1),
                _failure(3, 3, 17, "truncated", 2),
            ],
        )
    Path(paths[UNREADABLE]).unlink()
    return Known(url=url, image_dir=image_dir, paths=paths)


def store_predictions(connection: sa.Connection, rows: list[dict[str, object]]) -> None:
    """Write prediction rows the way workers do: true labels copied, tallied."""
    with Session(bind=connection) as session:
        predictions.record(session, rows)


def _job(job: int, version: int) -> dict[str, object]:
    return {
        "id": job,
        "kind": "submit" if job < 3 else "reinfer",
        "model_version_id": version,
        "source": "test",
        "state": "done",
        "queue": "test",
        "total_images": len(JOB_IMAGES[job]),
        "queued_images": len(JOB_IMAGES[job]),
        "created_at": BASE_TIME,
    }


def _prediction(number: int, version: int) -> dict[str, object]:
    _, label_1, confidence_1, label_2, confidence_2 = ROWS[number]
    label, confidence = (
        (label_1, confidence_1) if version == 1 else (label_2, confidence_2)
    )
    rest = (1.0 - confidence) / (len(CLASSES) - 1)
    probabilities = [confidence if name == label else rest for name in CLASSES]
    return {
        "id": number * 10 + version,
        "image_id": number,
        "model_version_id": version,
        "job_id": answering_job(number, version),
        "batch_id": None,
        "label": label,
        "label_index": CLASSES.index(label),
        "confidence": confidence,
        "probabilities": probabilities,
        "batch_images": 16,
        "decode_ms": 0.1,
        "predict_ms": 0.2,
        "created_at": prediction_time(number, version),
    }


def _failure(
    failure: int, job: int, image: int | None, kind: str, version: int
) -> dict[str, object]:
    return {
        "id": failure,
        "job_id": job,
        "image_id": image,
        "model_version_id": version,
        "path": f"/incoming/{failure}.png",
        "kind": kind,
        "message": f"{kind}: /incoming/{failure}.png",
        "attempts": 1,
        "created_at": BASE_TIME + timedelta(days=JOB_DAY[job], hours=5),
    }
