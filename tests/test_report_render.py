"""The review report: grid order and titles, files, page, record and task."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image as PILImage
from report_data import (
    HOSTILE,
    UNREADABLE,
    Known,
    fill,
    model_version_row,
    store_predictions,
)

from imgq.db.engine import get_engine
from imgq.db.predictions import resync
from imgq.db.schema import Image, JobImage, ModelVersion, Report
from imgq.report.plan import (
    GRID_LEAST_CONFIDENT,
    GRID_SAMPLES,
    GRID_WRONG,
    confidence_title,
    diff_title,
    plan_report,
    sample_title,
    wrong_title,
)
from imgq.report.queries import ResultFilter, connect, resolve_scope
from imgq.report.render import build_report
from imgq.report.tasks import render_report


@pytest.fixture
def known(migrated: str, tmp_path: Path) -> Known:
    """The known rows of report_data in a fresh database."""
    return fill(migrated, tmp_path / "images")


class PageParts(HTMLParser):
    """The image sources and the table cells of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")
        self._in_cell = tag == "td"

    def handle_endtag(self, tag: str) -> None:
        self._in_cell = False if tag == "td" else self._in_cell

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data)


def test_titles_follow_the_tutorial() -> None:
    assert wrong_title("5", "6") == "R: 5 P: 6"
    assert confidence_title("6", 0.4149) == "P: 6 (0.41)"
    assert diff_title("3", "5") == "A: 3 B: 5"


def test_plan_orders_and_titles_every_grid(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(job=1), default_model=None)
        plan = plan_report(connection, scope, rows=2, columns=2, low_confidence=0.6)
    wrong = plan.grid(GRID_WRONG)
    unsure = plan.grid(GRID_LEAST_CONFIDENT)
    samples = plan.grid(GRID_SAMPLES)
    assert wrong is not None and unsure is not None and samples is not None
    assert wrong.titles == ["R: 0 P: 1", "R: 3 P: 2", "R: 1 P: 0", "R: 2 P: 3"]
    assert [cell.row.image_id for cell in wrong.cells] == [2, 8, 12, 5]
    assert unsure.titles == ["P: 3 (0.30)", "P: 3 (0.40)", "P: 1 (0.45)", "P: 1 (0.55)"]
    assert [cell.row.image_id for cell in unsure.cells] == [7, 5, 10, 3]
    # four classes in four cells: one each, the most confident of the job
    assert [cell.row.image_id for cell in samples.cells] == [1, 2, 6, 5]
    assert samples.titles == [sample_title(cell.row) for cell in samples.cells]
    assert samples.titles[1] == "R: 0 P: 1"
    assert plan.model_name == "digits-v1"


def test_samples_start_a_row_per_class_when_a_class_fills_rows(known: Known) -> None:
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(job=2), default_model=None)
        plan = plan_report(connection, scope, rows=4, columns=2, low_confidence=0.6)
    samples = plan.grid(GRID_SAMPLES)
    assert samples is not None
    # two per class on rows of two; class 2 has one prediction, so a blank
    shown = [None if cell is None else cell.row.image_id for cell in samples.cells]
    assert shown == [16, 11, 14, 10, 13, None, 15]
    assert samples.titles[5] == ""
    assert [position for position, _ in samples.filled] == [1, 2, 3, 4, 5, 7]


def test_plan_has_no_wrong_grid_without_true_labels(known: Known) -> None:
    engine = get_engine(known.url)
    with engine.begin() as connection:
        connection.execute(sa.update(Image).values(true_label=None))
        resync(connection)
    with connect() as connection:
        scope = resolve_scope(connection, ResultFilter(job=1), default_model=None)
        plan = plan_report(connection, scope, rows=5, columns=5, low_confidence=0.6)
    wrong = plan.grid(GRID_WRONG)
    assert wrong is not None and wrong.cells == []
    assert "No true labels" in wrong.note


def test_report_writes_its_figures_page_and_row(known: Known, tmp_path: Path) -> None:
    record = build_report(result_filter=ResultFilter(job=1), rows=3, columns=4)
    folder = record.path.parent
    assert record.path.name == "index.html"
    for name in (
        "wrong",
        "least_confident",
        "samples",
        "confidence",
        "confusion",
        "per_class",
    ):
        with PILImage.open(folder / f"{name}.png") as picture:
            assert picture.width > 100 and picture.height > 100
    parts = PageParts()
    parts.feed(record.path.read_text(encoding="utf-8"))
    assert sorted(parts.sources) == sorted(
        [
            "confidence.png",
            "confusion.png",
            "per_class.png",
            "wrong.png",
            "least_confident.png",
            "samples.png",
        ]
    )
    assert known.paths[2] in parts.cells
    assert record.unreadable == frozenset({UNREADABLE})
    assert f"{known.paths[UNREADABLE]} (cannot be read)" in parts.cells
    with get_engine(known.url).connect() as connection:
        row = connection.execute(sa.select(Report)).one()
    assert (row.model_version_id, row.job_id, row.path) == (1, 1, str(record.path))
    assert row.filters == {"job": 1, "rows": 3, "columns": 4}


def test_reports_go_under_the_report_folder_by_default(known: Known) -> None:
    record = build_report(result_filter=ResultFilter(model="candidate"))
    from imgq.config import get_settings

    assert record.path.parent.parent == get_settings().resolved_report_dir
    assert record.plan.scope.model_version_id == 2


def test_page_escapes_hostile_labels_and_paths(known: Known, tmp_path: Path) -> None:
    hostile_path = tmp_path / f"<b>{HOSTILE} &amp.png"
    PILImage.new("L", (28, 28), 128).save(hostile_path)
    engine = get_engine(known.url)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Image),
            [
                {
                    "id": 60,
                    "content_hash": "8" * 64,
                    "path": str(hostile_path),
                    "true_label": "<script>alert(1)</script>",
                    "size_bytes": 1,
                }
            ],
        )
        connection.execute(sa.insert(JobImage), [{"job_id": 1, "image_id": 60}])
        store_predictions(
            connection,
            [
                {
                    "id": 600,
                    "image_id": 60,
                    "model_version_id": 1,
                    "job_id": 1,
                    "label": HOSTILE,
                    "label_index": 0,
                    "confidence": 0.01,
                    "probabilities": [0.01],
                    "batch_images": 1,
                    "decode_ms": 0.0,
                    "predict_ms": 0.0,
                }
            ],
        )
    record = build_report(result_filter=ResultFilter(job=1), output_dir=tmp_path / "r")
    page = record.path.read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;" in page
    parts = PageParts()
    parts.feed(page)
    assert str(hostile_path) in parts.cells
    assert HOSTILE in parts.cells
    assert f"R: <script>alert(1)</script> P: {HOSTILE}" in parts.cells
    assert 60 not in record.unreadable


def test_report_of_a_version_without_answers_still_renders(
    known: Known, tmp_path: Path
) -> None:
    engine = get_engine(known.url)
    with engine.begin() as connection:
        connection.execute(sa.insert(ModelVersion), [model_version_row(3, "unused")])
    record = build_report(
        result_filter=ResultFilter(model="3"), rows=1, columns=2, output_dir=tmp_path
    )
    assert record.plan.stats.total == 0
    assert all(grid.cells == [] for grid in record.plan.grids)
    assert "Nothing to show." in record.path.read_text(encoding="utf-8")
    assert (tmp_path / "confidence.png").is_file()


def test_render_report_task_takes_and_returns_json(
    known: Known, tmp_path: Path
) -> None:
    arguments = {
        "filters": ResultFilter(job=2, since=None).to_json(),
        "rows": 2,
        "columns": 3,
        "output": str(tmp_path / "from-task"),
    }
    json.dumps(arguments)
    result = render_report.apply(kwargs=arguments).get()
    assert json.loads(json.dumps(result)) == result
    assert Path(result["path"]) == tmp_path / "from-task" / "index.html"
    assert Path(result["path"]).is_file()
    with get_engine(known.url).connect() as connection:
        row = connection.execute(
            sa.select(Report).where(Report.id == result["report_id"])
        ).one()
    assert (row.job_id, row.filters["rows"], row.filters["columns"]) == (2, 2, 3)


def test_report_modules_load_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "import imgq.report.tasks, imgq.report.cli, imgq.report.render\n"
        "import imgq.report.queries, imgq.report.stats, imgq.report.diff\n"
        "heavy = [name for name in ('tensorflow', 'keras') if name in sys.modules]\n"
        "print(heavy)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "[]"


def test_the_worker_app_includes_the_report_task() -> None:
    from imgq.report.tasks import RENDER_REPORT_TASK
    from imgq.worker.app import TASK_MODULES

    assert "imgq.report.tasks" in TASK_MODULES
    assert render_report.name == RENDER_REPORT_TASK == "imgq.render_report"
