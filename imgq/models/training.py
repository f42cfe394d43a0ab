"""Training with the tutorial's split, early stopping and learning curves."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgq.models import architectures
from imgq.models.datasets import Dataset, Split, split
from imgq.report.figures import learning_curves

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """A trained model, its history and the data split it was trained on."""

    model: keras.Model
    history: dict[str, list[float]]
    split: Split
    epochs_run: int
    # the epoch with the lowest validation loss
    best_epoch: int
    # the epoch whose weights the model holds: the best one when early
    # stopping restored it, otherwise the last
    kept_epoch: int
    seconds: float
    curves_path: Path


def one_hot(labels: np.ndarray, class_count: int) -> np.ndarray:
    return np.eye(class_count, dtype=np.float32)[labels]


def train(
    dataset: Dataset,
    *,
    architecture: str,
    output_dir: Path,
    seed: int = 42,
    epochs: int = 50,
    batch_size: int = 32,
    patience: int = 5,
) -> TrainingResult:
    """Train ``architecture`` on ``dataset``; keeps the best validation weights.

    With ``patience`` 0 early stopping is off and every epoch runs, which is
    how the overfitting of the MLP shows in its curves.
    """
    import keras

    keras.utils.set_random_seed(seed)
    parts = split(dataset, seed=seed)
    class_count = len(dataset.class_names)
    model = architectures.build(
        architecture, input_shape=dataset.spec.input_shape, class_count=class_count
    )
    callbacks: list[Any] = []
    if patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            )
        )
    log.info(
        "training %s on %s: %d train, %d validation, %d test images",
        architecture,
        dataset.name,
        len(parts.y_train),
        len(parts.y_validation),
        len(parts.y_test),
    )

    started = time.perf_counter()
    fitted = model.fit(
        parts.x_train,
        one_hot(parts.y_train, class_count),
        validation_data=(parts.x_validation, one_hot(parts.y_validation, class_count)),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks,
        # a progress bar on a terminal, one line per epoch in a log
        verbose=1 if sys.stderr.isatty() else 2,
    )
    seconds = time.perf_counter() - started

    history = {
        key: [float(value) for value in values]
        for key, values in fitted.history.items()
    }
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    kept_epoch = best_epoch if patience > 0 else len(history["loss"])
    curves_path = learning_curves(
        history,
        output_dir / "learning_curves.png",
        title=f"{architecture} on {dataset.name}",
    )
    return TrainingResult(
        model=model,
        history=history,
        split=parts,
        epochs_run=len(history["loss"]),
        best_epoch=best_epoch,
        kept_epoch=kept_epoch,
        seconds=seconds,
        curves_path=curves_path,
    )
