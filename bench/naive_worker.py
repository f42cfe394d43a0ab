"""The naive way, for comparison: one Celery task per image, ``model.predict``
on a batch of one, and one INSERT per result. Started by bench/pipeline.py."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import sqlalchemy as sa
from celery import Celery

from imgq.models.datasets import DIGITS_SPEC
from imgq.models.preprocessing import preprocess_file

app = Celery("naive", broker=os.environ["IMGQ_BROKER_URL"])
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True
)

_state: dict[str, Any] = {}


def _resources() -> tuple[Any, sa.Engine]:
    if not _state:
        import keras

        _state["model"] = keras.saving.load_model(os.environ["NAIVE_MODEL"])
        engine = sa.create_engine(os.environ["IMGQ_DATABASE_URL"])
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS naive_results "
                "(path TEXT, label INTEGER, probabilities TEXT)"
            )
        _state["engine"] = engine
    return _state["model"], _state["engine"]


@app.task(name="naive.predict")
def predict(path: str) -> None:
    model, engine = _resources()
    # add the batch axis: a batch of one image
    image = preprocess_file(path, DIGITS_SPEC)[np.newaxis]
    probabilities = model.predict(image, verbose=0)[0]
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO naive_results VALUES (:path, :label, :probabilities)"),
            {
                "path": path,
                "label": int(probabilities.argmax()),
                "probabilities": json.dumps(probabilities.tolist()),
            },
        )
