"""Drawing a planned report: its grids and plots, its HTML page, its record.

A report is a folder, ``<report_dir>/<UTC time stamp>/`` unless told
otherwise, holding ``index.html`` and the PNGs it shows by relative path, so
the folder opens from disk in any browser and can be copied as a whole.
An image that cannot be read anymore is drawn as a blank cell.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from tqdm import tqdm

from imgq.config import get_settings
from imgq.db.engine import get_engine, session_scope
from imgq.db.schema import ModelVersion, Report
from imgq.errors import ImageError
from imgq.models.preprocessing import DecodeLimits, PreprocessSpec, preprocess_file
from imgq.models.registry import PRODUCTION
from imgq.report import figures
from imgq.report.diff import DiffRow
from imgq.report.page import write_page
from imgq.report.plan import Grid, ReportPlan, diff_title, plan_report
from imgq.report.queries import ResultFilter, connect, resolve_scope
from imgq.report.stats import HISTOGRAM_BUCKETS, Stats

log = logging.getLogger(__name__)

PAGE_NAME = "index.html"


@dataclass(frozen=True)
class ReportRecord:
    """A rendered report: its row id, its HTML page and what it shows."""

    report_id: int
    path: Path
    plan: ReportPlan
    unreadable: frozenset[int]


def build_report(
    *,
    result_filter: ResultFilter,
    rows: int = 5,
    columns: int = 5,
    output_dir: Path | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
) -> ReportRecord:
    """Plan, draw and record a report; the model defaults to ``production``."""
    if rows < 1 or columns < 1:
        raise ValueError(
            f"a grid needs at least one row and column, not {rows}x{columns}"
        )
    settings = get_settings()
    engine = engine or get_engine()
    with connect(engine) as connection:
        scope = resolve_scope(connection, result_filter, default_model=PRODUCTION)
        plan = plan_report(
            connection,
            scope,
            rows=rows,
            columns=columns,
            low_confidence=settings.low_confidence,
        )
        preprocessing = connection.scalar(
            select(ModelVersion.preprocessing).where(
                ModelVersion.id == scope.model_version_id
            )
        )
    folder = output_dir or settings.resolved_report_dir / _stamp()
    folder.mkdir(parents=True, exist_ok=True)
    spec = PreprocessSpec.from_dict(dict(preprocessing or {}))
    pictures, unreadable = draw_grids(
        plan.grids,
        folder,
        spec=spec,
        limits=decode_limits(),
        show_progress=show_progress,
    )
    pictures |= draw_plots(plan.stats, folder, threshold=settings.low_confidence)
    filters = result_filter.to_json() | {"rows": rows, "columns": columns}
    page = write_page(
        plan,
        folder / PAGE_NAME,
        figures=pictures,
        unreadable=unreadable,
        filters=filters,
    )
    report_id = record_report(engine, plan=plan, path=page, filters=filters)
    log.info(
        "report %d of model version %d: %s",
        report_id,
        plan.scope.model_version_id,
        page,
    )
    return ReportRecord(
        report_id=report_id, path=page, plan=plan, unreadable=frozenset(unreadable)
    )


def draw_grids(
    grids: list[Grid],
    folder: Path,
    *,
    spec: PreprocessSpec,
    limits: DecodeLimits,
    show_progress: bool = False,
) -> tuple[dict[str, Path], set[int]]:
    """One PNG per grid; returns the files by grid name and the unreadable ids."""
    pictures: dict[str, Path] = {}
    unreadable: set[int] = set()
    total = sum(len(grid.cells) for grid in grids)
    with _progress(total, show_progress) as progress:
        for grid in grids:
            paths = [None if cell is None else cell.row.path for cell in grid.cells]
            images, missing = load_images(
                paths, spec=spec, limits=limits, progress=progress
            )
            unreadable |= {
                cell.row.image_id
                for index, cell in enumerate(grid.cells)
                if cell is not None and index in missing
            }
            pictures[grid.name] = figures.image_grid(
                images,
                grid.titles,
                folder / f"{grid.name}.png",
                rows=_rows_needed(
                    len(grid.cells), rows=grid.rows, columns=grid.columns
                ),
                columns=grid.columns,
                heading=grid.heading,
            )
    return pictures, unreadable


def draw_changes_grid(
    changes: list[DiffRow],
    path: Path,
    *,
    spec: PreprocessSpec,
    rows: int = 5,
    columns: int = 5,
    heading: str | None = None,
    show_progress: bool = False,
) -> Path:
    """A grid of images whose answer changed, titled ``A: 3 B: 5``."""
    with _progress(len(changes), show_progress) as progress:
        images, _ = load_images(
            [change.path for change in changes],
            spec=spec,
            limits=decode_limits(),
            progress=progress,
        )
    titles = [diff_title(change.label_a, change.label_b) for change in changes]
    rows = _rows_needed(len(changes), rows=rows, columns=columns)
    return figures.image_grid(
        images, titles, path, rows=rows, columns=columns, heading=heading
    )


def load_images(
    paths: Sequence[str | None],
    *,
    spec: PreprocessSpec,
    limits: DecodeLimits,
    progress: tqdm[Any] | None = None,
) -> tuple[list[np.ndarray], set[int]]:
    """The pictures of ``paths``, blank where unreadable (or None), and the
    positions of the unreadable ones."""
    images: list[np.ndarray] = []
    missing: set[int] = set()
    for index, path in enumerate(paths):
        image = (
            None if path is None else load_cell_image(path, spec=spec, limits=limits)
        )
        if image is None:
            if path is not None:
                missing.add(index)
            image = blank_cell(spec)
        images.append(image)
        if progress is not None:
            progress.update()
    return images, missing


def decode_limits() -> DecodeLimits:
    """The decoder's limits from the settings."""
    settings = get_settings()
    return DecodeLimits(
        allowed_formats=settings.allowed_formats,
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_image_bytes,
    )


def load_cell_image(
    path: str, *, spec: PreprocessSpec, limits: DecodeLimits
) -> np.ndarray | None:
    """The image as the model saw it, or None when it cannot be read anymore."""
    try:
        return preprocess_file(path, spec, limits)
    except ImageError as error:
        log.warning("report: %s is left blank: %s", path, error.message)
        return None


def blank_cell(spec: PreprocessSpec) -> np.ndarray:
    """A white picture of the model's input size."""
    return np.ones((spec.height, spec.width, 3), dtype=np.float32)


def draw_plots(stats: Stats, folder: Path, *, threshold: float) -> dict[str, Path]:
    """The confidence histogram, and where labels are known the confusion matrix
    and the per-class accuracy."""
    centres = (np.arange(HISTOGRAM_BUCKETS) + 0.5) / HISTOGRAM_BUCKETS
    pictures = {
        "confidence": figures.confidence_histogram(
            centres,
            folder / "confidence.png",
            threshold=threshold,
            title=f"Confidence of {stats.total} predictions",
            weights=np.asarray(stats.confidence.histogram, dtype=np.float64),
        )
    }
    if not stats.labelled:
        return pictures
    names = stats.class_names
    pictures["confusion"] = figures.confusion_matrix_plot(
        stats.confusion_matrix(), names, folder / "confusion.png", "Confusion matrix"
    )
    pictures["per_class"] = figures.per_class_bars(
        [entry.recall or 0.0 for entry in stats.classes],
        names,
        folder / "per_class.png",
        title="Accuracy per true class",
    )
    return pictures


def record_report(
    engine: Engine, *, plan: ReportPlan, path: Path, filters: dict[str, Any]
) -> int:
    """Insert the report's row; returns its id."""
    assert plan.scope.model_version_id is not None  # planning requires it
    with session_scope(engine) as session:
        report = Report(
            model_version_id=plan.scope.model_version_id,
            job_id=plan.scope.filter.job,
            filters=filters,
            path=str(path.resolve()),
        )
        session.add(report)
        session.flush()
        return report.id


def _rows_needed(cells: int, *, rows: int, columns: int) -> int:
    # a short list draws fewer rows instead of a page of blank cells
    return max(1, min(rows, math.ceil(cells / columns)))


def _progress(total: int, show: bool) -> tqdm[Any]:
    # shown on standard error only once drawing has taken a second
    return tqdm(
        total=total,
        desc="drawing",
        unit="image",
        file=sys.stderr,
        delay=1.0,
        disable=not show,
    )


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
