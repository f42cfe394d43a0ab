"""``imgq report``, ``imgq results``, ``imgq stats`` and ``imgq diff``."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imgq.config import get_settings
from imgq.db.migrate import require_current
from imgq.models.registry import PRODUCTION

if TYPE_CHECKING:
    from imgq.report.diff import DiffRow, DiffSummary

log = logging.getLogger(__name__)

_MODEL_HELP = "Model version (3 or v3) or alias"
_TIME_HELP = "ISO 8601 (UTC unless it carries an offset) or an age such as 24h or 7d"


def _parse_time_option(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> Any:
    if value is None:
        return None
    from imgq.report.queries import parse_time

    return parse_time(value)


def _scope_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command shares: job, time range."""
    function = click.option(
        "--until",
        callback=_parse_time_option,
        help=f"Only results before this time: {_TIME_HELP}.",
    )(function)
    function = click.option(
        "--since",
        callback=_parse_time_option,
        help=f"Only results at or after this time: {_TIME_HELP}.",
    )(function)
    function = click.option(
        "--job", type=int, default=None, help="Only the images of this job."
    )(function)
    return function


@click.command("report")
@_scope_options
@click.option(
    "--model",
    default=None,
    help=f"{_MODEL_HELP}; default: the job's version, else '{PRODUCTION}'.",
)
@click.option(
    "--rows",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Rows of each image grid.",
)
@click.option(
    "--columns",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Columns of each image grid.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the report (default: <report_dir>/<UTC time>).",
)
def report_command(
    job: int | None,
    since: Any,
    until: Any,
    model: str | None,
    rows: int,
    columns: int,
    output: Path | None,
) -> None:
    """Render a review report and print the path of its HTML page.

    The page holds grids of the wrong predictions (titled 'R: 5 P: 6', the
    most confident first), of the least confident ones ('P: 6 (0.41)', the
    lowest first) and of samples per class; a confusion matrix, a confidence
    histogram and per-class accuracy; and a table of every image shown.
    It opens from disk, without a server. The report is recorded in the
    database's reports table.
    """
    from imgq.report.queries import ResultFilter
    from imgq.report.render import build_report

    require_current()
    record = build_report(
        result_filter=ResultFilter(job=job, model=model, since=since, until=until),
        rows=rows,
        columns=columns,
        output_dir=output,
        show_progress=True,
    )
    if record.unreadable:
        click.echo(
            f"{len(record.unreadable)} image(s) could not be read and are blank",
            err=True,
        )
    click.echo(str(record.path))


@click.command("results")
@_scope_options
@click.option("--label", default=None, help="Only this predicted label.")
@click.option("--true-label", default=None, help="Only images of this true label.")
@click.option(
    "--model",
    default=None,
    help=f"{_MODEL_HELP}; default: the job's version, else every version.",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=None,
    help="Only confidences at or above this.",
)
@click.option(
    "--max-confidence",
    type=click.FloatRange(0, 1),
    default=None,
    help="Only confidences at or below this.",
)
@click.option(
    "--wrong-only",
    is_flag=True,
    help="Only predictions that differ from a known true label.",
)
@click.option(
    "--failed-only",
    is_flag=True,
    help="List the failures (kind and reason) instead of predictions.",
)
@click.option(
    "--limit", type=click.IntRange(min=0), default=None, help="At most this many rows."
)
@click.option(
    "--sort",
    type=click.Choice(["image", "confidence", "-confidence"]),
    default="image",
    show_default=True,
    help="Order: by image (as submitted), lowest confidence first, or highest first.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "jsonl"]),
    default="table",
    show_default=True,
    help="Aligned table, CSV or JSON lines.",
)
def results_command(
    job: int | None,
    since: Any,
    until: Any,
    label: str | None,
    true_label: str | None,
    model: str | None,
    min_confidence: float | None,
    max_confidence: float | None,
    wrong_only: bool,
    failed_only: bool,
    limit: int | None,
    sort: str,
    output_format: str,
) -> None:
    """Print the results that match every filter given, as they stream in.

    Each row is one prediction: image, path, true and predicted label,
    confidence, whether it is right, model version, job and time. With
    --failed-only each row is one failure with its kind and reason.

    \b
    Examples:
      imgq results --job 12 --wrong-only --limit 25
      imgq results --model production --max-confidence 0.6 --format csv
      imgq results --failed-only --since 24h --format jsonl
    """
    from imgq.report.output import write_rows
    from imgq.report.queries import (
        FailureRow,
        Order,
        ResultFilter,
        ResultRow,
        connect,
        iter_failures,
        iter_results,
        resolve_scope,
    )

    result_filter = ResultFilter(
        job=job,
        label=label,
        true_label=true_label,
        model=model,
        min_confidence=min_confidence,
        max_confidence=max_confidence,
        wrong_only=wrong_only,
        failed_only=failed_only,
        since=since,
        until=until,
        limit=limit,
    )
    require_current()
    stream = sys.stdout
    with connect() as connection:
        scope = resolve_scope(connection, result_filter, default_model=None)
        if failed_only:
            rows: Any = iter_failures(connection, scope)
            columns: tuple[str, ...] = FailureRow.columns
        else:
            rows = iter_results(connection, scope, order=Order(sort))
            columns = ResultRow.columns
        try:
            count = write_rows(
                rows, stream, columns=columns, output_format=output_format
            )
            stream.flush()
        except BrokenPipeError:
            # the reader (head, less) has gone; stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
    log.debug("results: %d rows", count)


@click.command("stats")
@_scope_options
@click.option(
    "--model",
    default=None,
    help=f"{_MODEL_HELP}; default: the job's version, else '{PRODUCTION}'.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Readable tables or one JSON object.",
)
def stats_command(
    job: int | None, since: Any, until: Any, model: str | None, output_format: str
) -> None:
    """Counts, accuracy, per-class figures, confidence quantiles and failures.

    Of one job (--job) or of one model version (--model) over every image it
    answered for. Accuracy counts only images with a known true label;
    quantiles are exact to within 0.001.
    """
    from imgq.report.queries import ResultFilter, connect, resolve_scope
    from imgq.report.stats import compute_stats

    require_current()
    result_filter = ResultFilter(job=job, model=model, since=since, until=until)
    with connect() as connection:
        scope = resolve_scope(connection, result_filter, default_model=PRODUCTION)
        stats = compute_stats(
            connection, scope, low_confidence=get_settings().low_confidence
        )
    if output_format == "json":
        click.echo(json.dumps(stats.to_json(), indent=2))
        return
    from imgq.report.text import stats_text

    click.echo(stats_text(stats), nl=False)


@click.command("diff")
@click.argument("model_a", metavar="A")
@click.argument("model_b", metavar="B")
@click.option("--job", type=int, default=None, help="Only the images of this job.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Changed images to list; 0 lists none.",
)
@click.option(
    "--grid",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the first changed images to this PNG, titled 'A: 3 B: 5'.",
)
@click.option(
    "--rows",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Rows of the --grid.",
)
@click.option(
    "--columns",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Columns of the --grid.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Readable tables or one JSON object.",
)
def diff_command(
    model_a: str,
    model_b: str,
    job: int | None,
    limit: int,
    grid: Path | None,
    rows: int,
    columns: int,
    output_format: str,
) -> None:
    """Show which answers changed between model versions A and B.

    A and B are version numbers or aliases ('imgq diff production 4').
    Prints how many images both answered for, how many changed, the counts
    by pair of labels (A's label, B's label), and the first changed images.
    """
    from imgq.report.diff import diff_summary, iter_changes
    from imgq.report.queries import ResultFilter, connect, resolve_scope

    require_current()
    with connect() as connection:
        scope_a = resolve_scope(
            connection, ResultFilter(model=model_a), default_model=None
        )
        scope_b = resolve_scope(
            connection, ResultFilter(model=model_b), default_model=None
        )
        assert scope_a.model_version_id is not None
        assert scope_b.model_version_id is not None
        ids = {"model_a": scope_a.model_version_id, "model_b": scope_b.model_version_id}
        summary = diff_summary(
            connection,
            job=job,
            low_confidence=get_settings().low_confidence,
            **ids,
        )
        wanted = max(limit, rows * columns if grid else 0)
        changes = list(iter_changes(connection, job=job, limit=wanted, **ids))
    if output_format == "json":
        document = summary.to_json() | {
            "images": [change.as_dict() for change in changes[:limit]]
        }
        click.echo(json.dumps(document, indent=2))
    else:
        from imgq.report.text import diff_text

        click.echo(diff_text(summary, changes[:limit]), nl=False)
    if grid is not None:
        _draw_diff_grid(changes, grid, summary=summary, rows=rows, columns=columns)


def _draw_diff_grid(
    changes: list[DiffRow],
    grid: Path,
    *,
    summary: DiffSummary,
    rows: int,
    columns: int,
) -> None:
    from imgq.db.engine import session_scope
    from imgq.db.schema import ModelVersion
    from imgq.models.preprocessing import PreprocessSpec
    from imgq.report.render import draw_changes_grid

    with session_scope() as session:
        version = session.get(ModelVersion, summary.model_a)
        assert version is not None
        spec = PreprocessSpec.from_dict(dict(version.preprocessing))
    path = draw_changes_grid(
        changes[: rows * columns],
        grid,
        spec=spec,
        rows=rows,
        columns=columns,
        heading=f"Changed answers: A = version {summary.model_a}, "
        f"B = version {summary.model_b}",
        show_progress=True,
    )
    click.echo(f"grid: {path}", err=True)


commands = [report_command, results_command, stats_command, diff_command]
