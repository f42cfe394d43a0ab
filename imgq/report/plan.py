"""What a report shows: the rows behind each grid, in order, with their titles.

Planning runs the queries and decides every cell; drawing (``render``) only
reads the planned images. Titles follow the tutorial: ``R: 5 P: 6`` for a
wrong answer, ``P: 6 (0.41)`` for an unsure one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from imgq.db.schema import ModelVersion
from imgq.report.queries import (
    ResultRow,
    Scope,
    least_confident,
    samples_per_class,
    worst_wrong,
)
from imgq.report.stats import Stats, compute_stats

log = logging.getLogger(__name__)

GRID_WRONG = "wrong"
GRID_LEAST_CONFIDENT = "least_confident"
GRID_SAMPLES = "samples"


def wrong_title(true_label: str | None, label: str) -> str:
    """``R: <true label> P: <predicted label>``, the tutorial's title."""
    return f"R: {true_label} P: {label}"


def confidence_title(label: str, confidence: float) -> str:
    """``P: <predicted label> (<confidence>)`` with two decimals."""
    return f"P: {label} ({confidence:.2f})"


def sample_title(row: ResultRow) -> str:
    """``R: 5 P: 5`` where the true label is known, else ``P: 5``."""
    if row.true_label is None:
        return f"P: {row.label}"
    return wrong_title(row.true_label, row.label)


def diff_title(label_a: str, label_b: str) -> str:
    """``A: <label of version A> B: <label of version B>``."""
    return f"A: {label_a} B: {label_b}"


@dataclass(frozen=True)
class Cell:
    """One picture of a grid: the prediction it shows and its title."""

    row: ResultRow
    title: str


@dataclass(frozen=True)
class Grid:
    """A rows x columns grid of predictions, cells in reading order (None blank)."""

    name: str
    heading: str
    cells: Sequence[Cell | None]
    rows: int
    columns: int
    note: str = ""

    @property
    def titles(self) -> list[str]:
        """The cells' titles in reading order; blank cells have none."""
        return ["" if cell is None else cell.title for cell in self.cells]

    @property
    def filled(self) -> list[tuple[int, Cell]]:
        """(position from 1 in reading order, cell) of the cells that show a row."""
        return [
            (position, cell)
            for position, cell in enumerate(self.cells, start=1)
            if cell is not None
        ]


@dataclass(frozen=True)
class ReportPlan:
    """Everything a report shows, decided before anything is drawn."""

    scope: Scope
    model_name: str
    stats: Stats
    grids: list[Grid]

    def grid(self, name: str) -> Grid | None:
        """The grid called ``name``, or None when the report has none."""
        return next((grid for grid in self.grids if grid.name == name), None)


def plan_report(
    connection: Connection,
    scope: Scope,
    *,
    rows: int = 5,
    columns: int = 5,
    low_confidence: float,
) -> ReportPlan:
    """Query the figures and the grids' rows of the scope (a resolved model)."""
    if scope.model_version_id is None:
        raise ValueError("a report needs a model version")
    cells = rows * columns
    stats = compute_stats(connection, scope, low_confidence=low_confidence)
    grids = [
        _wrong_grid(connection, scope, stats, rows=rows, columns=columns),
        Grid(
            name=GRID_LEAST_CONFIDENT,
            heading="Least confident, lowest first",
            cells=[
                Cell(row, confidence_title(row.label, row.confidence))
                for row in least_confident(connection, scope, limit=cells)
            ],
            rows=rows,
            columns=columns,
        ),
        _samples_grid(connection, scope, rows=rows, columns=columns),
    ]
    model_name = connection.scalar(
        select(ModelVersion.name).where(ModelVersion.id == scope.model_version_id)
    )
    log.info(
        "planned report of model version %d: %s",
        scope.model_version_id,
        ", ".join(f"{grid.name} {len(grid.cells)}" for grid in grids),
    )
    return ReportPlan(scope=scope, model_name=str(model_name), stats=stats, grids=grids)


def _wrong_grid(
    connection: Connection, scope: Scope, stats: Stats, *, rows: int, columns: int
) -> Grid:
    note = "" if stats.labelled else "No true labels are known, so none is wrong."
    found = (
        worst_wrong(connection, scope, limit=rows * columns) if stats.labelled else []
    )
    return Grid(
        name=GRID_WRONG,
        heading="Wrong predictions, most confident first",
        cells=[Cell(row, wrong_title(row.true_label, row.label)) for row in found],
        rows=rows,
        columns=columns,
        note=note,
    )


def _samples_grid(
    connection: Connection, scope: Scope, *, rows: int, columns: int
) -> Grid:
    cells = rows * columns
    per_class = max(1, cells // max(1, len(scope.class_names)))
    whole_rows = per_class >= columns
    if whole_rows:
        # each class starts a row: its samples fill whole rows, blanks pad
        per_class -= per_class % columns
    samples = samples_per_class(connection, scope, per_class=per_class)
    chosen: list[Cell | None] = []
    for class_rows in samples.values():
        chosen.extend(Cell(row, sample_title(row)) for row in class_rows)
        if whole_rows and class_rows:
            chosen.extend([None] * (per_class - len(class_rows)))
    chosen = chosen[:cells]
    while chosen and chosen[-1] is None:
        chosen.pop()
    return Grid(
        name=GRID_SAMPLES,
        heading=f"Samples per class, up to {per_class} each, most confident first",
        cells=chosen,
        rows=rows,
        columns=columns,
    )


def plan_summary(plan: ReportPlan) -> dict[str, Any]:
    """The plan's grids as titles and image ids, for logs and tests."""
    return {
        grid.name: [(cell.row.image_id, cell.title) for _, cell in grid.filled]
        for grid in plan.grids
    }
