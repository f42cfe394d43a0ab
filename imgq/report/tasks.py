"""The ``imgq.render_report`` task: the same report as ``imgq report``, queued.

Its arguments and its result are plain JSON (a filter as written by
``ResultFilter.to_json``), as the JSON-only Celery app requires. It needs no
model and no accelerator, so any worker can run it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import shared_task

from imgq.report.queries import ResultFilter
from imgq.report.render import build_report

log = logging.getLogger(__name__)

RENDER_REPORT_TASK = "imgq.render_report"


@shared_task(name=RENDER_REPORT_TASK)
def render_report(
    *,
    filters: dict[str, Any] | None = None,
    rows: int = 5,
    columns: int = 5,
    output: str | None = None,
) -> dict[str, Any]:
    """Render a report for ``filters``; returns its id and the HTML page's path."""
    result_filter = ResultFilter.from_json(filters or {})
    record = build_report(
        result_filter=result_filter,
        rows=rows,
        columns=columns,
        output_dir=Path(output) if output else None,
    )
    log.info("report %d rendered: %s", record.report_id, record.path)
    return {"report_id": record.report_id, "path": str(record.path)}
