"""``imgq results``, ``stats``, ``diff`` and ``report`` from the command line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image as PILImage
from report_data import JOB_IMAGES, ROWS, Known, fill

from imgq.cli import main
from imgq.errors import EXIT_INPUT, EXIT_MODEL


@pytest.fixture
def known(migrated: str, tmp_path: Path) -> Known:
    """The known rows of report_data in a fresh database."""
    return fill(migrated, tmp_path / "images")


def imgq(*arguments: str) -> Result:
    return CliRunner().invoke(main, list(arguments), catch_exceptions=False)


def test_results_as_csv_parse_back_to_the_stored_rows(known: Known) -> None:
    result = imgq("results", "--job", "1", "--wrong-only", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(row["image_id"]) for row in rows] == [2, 5, 8, 12]
    first = rows[0]
    assert (first["path"], first["true_label"], first["label"]) == (
        known.paths[2],
        "0",
        "1",
    )
    assert float(first["confidence"]) == pytest.approx(0.91)
    assert first["correct"] == "False"
    assert first["created_at"].startswith("2026-01-01T10:02:00")


def test_results_as_json_lines_parse_back(known: Known) -> None:
    result = imgq(
        "results",
        "--model",
        "candidate",
        "--max-confidence",
        "0.6",
        "--format",
        "jsonl",
    )
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    wanted = [number for number, row in ROWS.items() if row[4] <= 0.6]
    assert [row["image_id"] for row in rows] == wanted
    assert all(row["model_version_id"] == 2 for row in rows)
    unlabelled = next(row for row in rows if row["image_id"] == 10)
    assert unlabelled["true_label"] is None and unlabelled["correct"] is None


def test_results_table_sorts_and_limits(known: Known) -> None:
    result = imgq("results", "--job", "1", "--sort", "confidence", "--limit", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == [
        "prediction_id",
        "image_id",
        "path",
        "true_label",
        "label",
    ]
    assert [int(line.split()[1]) for line in lines[1:]] == [7, 5, 10]


def test_results_failed_only_lists_kinds_and_reasons(known: Known) -> None:
    result = imgq("results", "--job", "2", "--failed-only", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["kind"], row["image_id"]) for row in rows] == [
        ("truncated", 17),
        ("not_an_image", None),
    ]


def test_results_filters_by_time_and_label(known: Known) -> None:
    result = imgq(
        "results",
        "--model",
        "1",
        "--since",
        "2026-01-02",
        "--label",
        "3",
        "--format",
        "jsonl",
    )
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["image_id"] for row in rows] == [15]


def test_bad_filters_exit_with_the_documented_codes(known: Known) -> None:
    clash = imgq("results", "--failed-only", "--label", "3")
    assert clash.exit_code == EXIT_INPUT
    assert "label" in clash.stderr
    unknown = imgq("results", "--model", "v42")
    assert unknown.exit_code == EXIT_MODEL
    no_job = imgq("stats", "--job", "404")
    assert no_job.exit_code == EXIT_INPUT
    assert "no job 404" in no_job.stderr


def test_stats_json_matches_the_hand_counts(known: Known) -> None:
    result = imgq("stats", "--job", "1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["total"], stats["labelled"], stats["correct"]) == (12, 10, 6)
    assert stats["accuracy"] == pytest.approx(0.6)
    assert stats["confidence"]["below_threshold"] == 4
    assert sum(stats["confidence"]["histogram_40"]) == 12
    assert {entry["label"]: entry["predicted"] for entry in stats["classes"]} == {
        "0": 4,
        "1": 4,
        "2": 2,
        "3": 2,
    }
    by_model = json.loads(imgq("stats", "--format", "json").stdout)
    assert by_model["model_version_id"] == 1
    assert by_model["total"] == len(ROWS)
    assert by_model["failures"] == {"not_an_image": 1, "truncated": 1}


def test_stats_table_reads_as_figures(known: Known) -> None:
    result = imgq("stats", "--job", "2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "model version 1, job 2"
    figures = {
        line.rsplit(maxsplit=1)[0].strip(): line.rsplit(maxsplit=1)[1]
        for line in lines
        if line.startswith(("predictions", "accuracy", "right"))
    }
    labelled = [n for n in JOB_IMAGES[2] if ROWS[n][0] is not None]
    right = [n for n in labelled if ROWS[n][0] == ROWS[n][1]]
    assert figures == {
        "predictions": "8",
        "right": str(len(right)),
        "accuracy": f"{len(right) / len(labelled):.1%}",
    }
    assert any(line.startswith("truncated") for line in lines)


def test_diff_prints_pairs_and_changed_images_and_draws_a_grid(
    known: Known, tmp_path: Path
) -> None:
    grid = tmp_path / "changes.png"
    result = imgq(
        "diff",
        "production",
        "candidate",
        "--grid",
        str(grid),
        "--rows",
        "2",
        "--columns",
        "3",
    )
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.splitlines()[0] == "A = model version 1, B = model version 2"
    assert text.splitlines()[3].split() == ["16", "16", "16", "6", "37.5%"]
    for image_id in (2, 4, 5, 8, 10, 16):
        assert known.paths[image_id] in text
    with PILImage.open(grid) as picture:
        assert picture.width > 200
    document = json.loads(
        imgq("diff", "1", "2", "--job", "2", "--format", "json").stdout
    )
    assert (document["compared"], document["changed"]) == (8, 2)
    assert [row["image_id"] for row in document["images"]] == [10, 16]
    assert {(c["label_a"], c["label_b"]) for c in document["changes"]} == {
        ("1", "3"),
        ("0", "2"),
    }


def test_report_command_prints_the_page_path(known: Known, tmp_path: Path) -> None:
    output = tmp_path / "report"
    result = imgq(
        "report", "--job", "1", "--rows", "2", "--columns", "2", "--output", str(output)
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(output / "index.html")
    assert (output / "wrong.png").is_file()
    assert "1 image(s) could not be read" in result.stderr


def test_help_texts_explain_each_command() -> None:
    for command, phrase in (
        ("report", "R: 5 P: 6"),
        ("results", "--wrong-only"),
        ("stats", "quantiles"),
        ("diff", "changed"),
    ):
        result = imgq(command, "--help")
        assert result.exit_code == 0
        assert phrase in result.stdout
