"""Evaluation on the test part: figures a person reads, numbers a machine keeps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgq.report.figures import confusion_matrix_plot, image_grid

if TYPE_CHECKING:
    import keras

GRID_ROWS = 5
GRID_COLUMNS = 5


@dataclass
class Evaluation:
    """Test metrics and where the figures were written."""

    loss: float
    accuracy: float
    per_class: dict[str, dict[str, float]]
    confusion: np.ndarray
    figures: dict[str, Path]

    def metrics(self) -> dict[str, Any]:
        return {
            "test_loss": self.loss,
            "test_accuracy": self.accuracy,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: list[str],
    output_dir: Path,
) -> Evaluation:
    """Loss, accuracy, per-class precision and recall, and the tutorial's grids."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    probabilities = model.predict(images, batch_size=256, verbose=0)
    predicted = probabilities.argmax(axis=1)
    chosen = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(chosen, 1e-7, 1.0))))
    accuracy = float(np.mean(predicted == labels))

    class_indexes = list(range(len(class_names)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, predicted, labels=class_indexes, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(class_names)
    }
    matrix = confusion_matrix(labels, predicted, labels=class_indexes)
    figures = draw_evaluation_figures(
        images, labels, predicted, class_names=class_names, output_dir=output_dir
    )
    figures["confusion_matrix"] = confusion_matrix_plot(
        matrix,
        class_names,
        output_dir / "confusion_matrix.png",
        title=f"test accuracy {accuracy:.2%}",
    )
    return Evaluation(loss, accuracy, per_class, matrix, figures)


def draw_evaluation_figures(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    *,
    class_names: list[str],
    output_dir: Path,
) -> dict[str, Path]:
    """The tutorial's three grids: samples, predictions, wrong predictions only."""
    cells = GRID_ROWS * GRID_COLUMNS
    first = range(min(cells, len(labels)))
    all_wrong = np.flatnonzero(predicted != labels)
    wrong = all_wrong[:cells]

    def real(index: int) -> str:
        return class_names[labels[index]]

    def guess(index: int) -> str:
        return class_names[predicted[index]]

    return {
        "samples": image_grid(
            [images[i] for i in first],
            [f"R: {real(i)}" for i in first],
            output_dir / "samples.png",
        ),
        "predictions": image_grid(
            [images[i] for i in first],
            [f"R: {real(i)} P: {guess(i)}" for i in first],
            output_dir / "predictions.png",
        ),
        "wrong": image_grid(
            [images[i] for i in wrong],
            [f"R: {real(i)} P: {guess(i)}" for i in wrong],
            output_dir / "wrong_predictions.png",
            heading=f"{len(all_wrong)} wrong of {len(labels)}",
        ),
    }
