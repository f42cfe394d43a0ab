"""The report's HTML page: the figures by relative path and tables of the rows.

Every value from the database is HTML-escaped: labels and paths are user
input. The page needs no server and no script; it opens from ``file://``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

from imgq.report.plan import Grid, ReportPlan

FIGURE_CAPTIONS = {
    "confidence": "Confidence of every prediction; the dashed line is the "
    "low-confidence threshold.",
    "confusion": "True classes (rows) against predicted classes (columns).",
    "per_class": "Share of each true class predicted right.",
}


def write_page(
    plan: ReportPlan,
    path: Path,
    *,
    figures: dict[str, Path],
    unreadable: set[int],
    filters: dict[str, Any],
) -> Path:
    """Write the page to ``path``, linking the figures relative to its folder."""
    relative = {
        name: figure.relative_to(path.parent) for name, figure in figures.items()
    }
    path.write_text(
        render_html(plan, figures=relative, unreadable=unreadable, filters=filters),
        encoding="utf-8",
    )
    return path


def render_html(
    plan: ReportPlan,
    *,
    figures: dict[str, Path],
    unreadable: set[int],
    filters: dict[str, Any],
    created_at: datetime | None = None,
) -> str:
    """The whole page as a string."""
    scope = plan.scope
    title = f"Review of model version {scope.model_version_id} ({plan.model_name})"
    if scope.filter.job is not None:
        title += f", job {scope.filter.job}"
    moment = (created_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Made {_e(moment)}. Filters: '
        f"<code>{_e(json.dumps(filters, sort_keys=True))}</code></p>",
        _summary(plan),
        *(_grid(grid, figures.get(grid.name), unreadable) for grid in plan.grids),
        _figures(figures),
        _classes(plan),
    ]
    template = Template(
        resources.files("imgq.report").joinpath("templates/report.html").read_text()
    )
    return template.substitute(title=_e(title), body="\n".join(parts))


def _summary(plan: ReportPlan) -> str:
    stats = plan.stats
    confidence = stats.confidence
    rows: list[tuple[str, str]] = [
        ("Predictions", str(stats.total)),
        ("With a known true label", str(stats.labelled)),
        ("Right", str(stats.correct)),
        ("Accuracy", _share(stats.accuracy)),
        (
            f"Below confidence {confidence.threshold}",
            str(confidence.below_threshold),
        ),
        ("Confidence min / mean / max", _triple(confidence)),
    ]
    for name, value in confidence.quantiles.items():
        rows.append((f"Confidence {name}", f"{value:.3f}"))
    if stats.failures:
        for kind, count in stats.failures.items():
            rows.append((f"Failures: {kind}", str(count)))
    else:
        rows.append(("Failures", "0"))
    body = "".join(
        f'<tr><th>{_e(name)}</th><td class="number">{_e(value)}</td></tr>'
        for name, value in rows
    )
    return f"<h2>Summary</h2>\n<table>{body}</table>"


def _figures(figures: dict[str, Path]) -> str:
    shown = [name for name in FIGURE_CAPTIONS if name in figures]
    items = "".join(
        f'<figure><img src="{_src(figures[name])}" alt="{_e(name)}">'
        f"<figcaption>{_e(FIGURE_CAPTIONS[name])}</figcaption></figure>"
        for name in shown
    )
    return f'<h2>Figures</h2>\n<div class="figures">{items}</div>'


def _classes(plan: ReportPlan) -> str:
    header = ("Class", "Predicted", "Truly of it", "Right", "Precision", "Recall")
    rows = [
        (
            entry.label,
            str(entry.predicted),
            str(entry.actual),
            str(entry.correct),
            _share(entry.precision),
            _share(entry.recall),
        )
        for entry in plan.stats.classes
    ]
    return "<h2>Per class</h2>\n" + _table(header, rows, numeric_from=1)


def _grid(grid: Grid, figure: Path | None, unreadable: set[int]) -> str:
    parts = [f"<h2>{_e(grid.heading)}</h2>"]
    if grid.note:
        parts.append(f'<p class="note">{_e(grid.note)}</p>')
    if not grid.filled:
        parts.append('<p class="note">Nothing to show.</p>')
        return "\n".join(parts)
    if figure is not None:
        parts.append(
            f'<div class="grid"><img src="{_src(figure)}" alt="{_e(grid.heading)}">'
            "</div>"
        )
    header = ("#", "Title", "Path", "True label", "Predicted", "Confidence")
    lines = []
    for position, cell in grid.filled:
        row = cell.row
        missing = row.image_id in unreadable
        path = row.path + (" (cannot be read)" if missing else "")
        values = (
            str(position),
            cell.title,
            path,
            "" if row.true_label is None else row.true_label,
            row.label,
            f"{row.confidence:.4f}",
        )
        lines.append(_row(values, unreadable=missing))
    parts.append(_table(header, [], numeric_from=5, body="".join(lines)))
    return "\n".join(parts)


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric_from: int,
    body: str = "",
) -> str:
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    cells = body or "".join(
        "<tr>"
        + "".join(
            f'<td class="number">{_e(value)}</td>'
            if index >= numeric_from
            else f"<td>{_e(value)}</td>"
            for index, value in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def _row(values: Sequence[str], *, unreadable: bool) -> str:
    classes = ("number", "", "path", "", "", "number")
    cells = "".join(
        f'<td class="{css}">{_e(value)}</td>' if css else f"<td>{_e(value)}</td>"
        for css, value in zip(classes, values, strict=True)
    )
    marker = ' class="unreadable"' if unreadable else ""
    return f"<tr{marker}>{cells}</tr>"


def _triple(confidence: Any) -> str:
    if confidence.minimum is None:
        return "-"
    return (
        f"{confidence.minimum:.3f} / {confidence.mean:.3f} / {confidence.maximum:.3f}"
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _src(path: Path) -> str:
    return _e(quote(path.as_posix()))


def _e(text: str) -> str:
    return html.escape(text, quote=True)
