"""The pictures imgq draws: image grids in the tutorial's style and plots.

Figures are built on matplotlib's object API with the Agg canvas, never
pyplot, so drawing holds no global state and works in worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

GRID_CELL_INCHES = 2.0
GRID_TITLE_INCHES = 0.4


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    return path


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: Path,
    *,
    rows: int = 5,
    columns: int = 5,
    heading: str | None = None,
) -> Path:
    """A rows x columns grid of images, each with its title (``R: 5 P: 6``).

    Cells past the last image stay blank, so a short list still draws.
    """
    height = rows * GRID_CELL_INCHES
    figure = Figure(figsize=(columns * GRID_CELL_INCHES, height))
    # room for the cell titles above the top row, the same at any grid height
    figure.subplots_adjust(top=1.0 - GRID_TITLE_INCHES / height)
    axes = figure.subplots(rows, columns, squeeze=False)
    for cell, axis in enumerate(axes.flat):
        axis.axis("off")
        if cell >= len(images):
            continue
        image = np.asarray(images[cell])
        if image.ndim == 3 and image.shape[-1] == 1:
            # drop the channel axis for greyscale
            image = image[:, :, 0]
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        axis.set_title(titles[cell], fontsize=12)
    if not images:
        figure.text(0.5, 0.5, "nothing to show", ha="center", va="center", fontsize=16)
    if heading:
        # above the figure's top edge; the tight bounding box keeps it
        figure.suptitle(heading, fontsize=14, y=1.0, va="bottom")
    return _save(figure, path)


def learning_curves(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, train beside validation (the tutorial's plot)."""
    figure = Figure(figsize=(10, 4))
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    epochs = range(1, len(history.get("loss", [])) + 1)
    for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.plot(epochs, history.get(metric, []), label=f"train {metric}")
        validation = history.get(f"val_{metric}", [])
        axis.plot(epochs, validation, label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    return _save(figure, path)


def confusion_matrix_plot(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> Path:
    """Counts of true (rows) against predicted (columns) labels."""
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), labels=list(class_names), rotation=45)
    axis.set_yticks(range(len(class_names)), labels=list(class_names))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size and matrix.max() else 0
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            count = int(matrix[row, column])
            color = "white" if count > threshold else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=color)
    axis.set_title(title)
    return _save(figure, path)


def confidence_histogram(
    confidences: np.ndarray,
    path: Path,
    *,
    threshold: float,
    title: str,
    weights: np.ndarray | None = None,
) -> Path:
    """How confident the predictions are, with the low-confidence line marked.

    ``weights`` counts each confidence that many times, so bucket centres and
    their counts from the database draw the same picture as the raw values.
    """
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    edges = [float(edge) for edge in np.linspace(0.0, 1.0, 41)]
    axis.hist(confidences, bins=edges, weights=weights, color="#4c72b0")
    axis.axvline(threshold, color="#c44e52", linestyle="--", label=f"low < {threshold}")
    axis.set_xlabel("confidence")
    axis.set_ylabel("predictions")
    axis.legend()
    axis.set_title(title)
    return _save(figure, path)


def per_class_bars(
    values: Sequence[float], class_names: Sequence[str], path: Path, *, title: str
) -> Path:
    """One bar per class, for accuracy or recall between 0 and 1."""
    figure = Figure(figsize=(max(5.0, 0.5 * len(class_names) + 2), 4))
    axis = figure.subplots()
    axis.bar(range(len(values)), values, color="#55a868")
    axis.set_xticks(range(len(class_names)), labels=list(class_names), rotation=45)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.set_title(title)
    return _save(figure, path)
