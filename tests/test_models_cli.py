"""``imgq train``, ``imgq evaluate`` and ``imgq models`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from imgq.cli import main
from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.errors import (
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_INPUT,
    EXIT_MODEL,
    EXIT_USAGE,
)
from imgq.models import registry

TRAINING_FIGURES = {
    "learning_curves.png",
    "confusion_matrix.png",
    "samples.png",
    "predictions.png",
    "wrong_predictions.png",
}


def imgq(*arguments: str) -> Result:
    return CliRunner().invoke(main, list(arguments))


def assert_valid_pngs(folder: Path, names: set[str]) -> None:
    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG", name
            image.verify()


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def production_path() -> Path:
    with session_scope() as session:
        return Path(registry.resolve(session, registry.PRODUCTION).path)


@pytest.mark.slow
def test_train_list_promote_and_evaluate_from_the_command_line(
    sqlite_url: str,
) -> None:
    upgraded = imgq("db", "upgrade")
    trained = imgq(
        "train", "--dataset", "digits", "--arch", "cnn", "--epochs", "3",
        "--patience", "0",
    )  # fmt: skip
    second = imgq(
        "train", "--arch", "mlp", "--epochs", "2", "--patience", "0", "--no-promote"
    )
    listed = imgq("models", "list")
    promoted = imgq("models", "promote", "2")
    relisted = imgq("models", "list")
    evaluated = imgq("evaluate", "--model", "v1")

    for result in (upgraded, trained, second, listed, promoted, relisted, evaluated):
        assert result.exit_code == 0, result.output
    assert "model version 1: cnn-digits-" in trained.output
    assert "epochs 3 " in trained.output
    accuracy = float(trained.output.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.9
    assert "model version 2: mlp-digits-" in second.output
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["1", "production"], ["2", "-"]]
    assert "model version 2" in promoted.output
    rows = [line.split() for line in relisted.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["1", "-"], ["2", "production"]]
    assert "on the digits test part (257 images)" in evaluated.output
    assert f"accuracy {accuracy:.4f}" in evaluated.output

    runs = sorted((get_settings().data_dir / "runs").iterdir())
    assert [run.name[:11] for run in runs] == ["cnn-digits-", "mlp-digits-"]
    assert_valid_pngs(runs[0], TRAINING_FIGURES)
    assert_valid_pngs(runs[0] / "evaluate", TRAINING_FIGURES - {"learning_curves.png"})


def test_models_show_prints_the_metadata(model_version: int) -> None:
    result = imgq("models", "show", "production")

    assert result.exit_code == 0, result.output
    assert '"name": "digits-cnn"' in result.output
    assert f'"version": {model_version}' in result.output


def test_training_on_a_folder_with_one_class_exits_with_the_input_code(
    migrated: str, tmp_path: Path
) -> None:
    only_class = tmp_path / "parts" / "ok"
    only_class.mkdir(parents=True)
    Image.new("L", (28, 28), 200).save(only_class / "part.png")

    result = imgq(
        "train", "--dataset", "folder", "--data-path", str(tmp_path / "parts")
    )

    assert result.exit_code == EXIT_INPUT
    assert "imgq: error:" in result.output
    assert "needs two" in result.output
    assert "Traceback" not in result.output


def test_folder_dataset_without_a_path_exits_with_the_input_code(
    migrated: str,
) -> None:
    result = imgq("train", "--dataset", "folder")

    assert result.exit_code == EXIT_INPUT
    assert "--data-path" in result.output


def test_training_on_an_unmigrated_database_says_to_upgrade(sqlite_url: str) -> None:
    result = imgq("train", "--epochs", "1")

    assert result.exit_code == EXIT_DATABASE
    assert "run 'imgq db upgrade'" in result.output


def test_evaluating_a_tampered_model_exits_with_the_model_code(
    model_version: int,
) -> None:
    tamper(production_path())

    result = imgq("evaluate")

    assert result.exit_code == EXIT_MODEL
    assert "imgq: error: model version" in result.output
    assert "hash" in result.output


def test_evaluating_a_missing_model_exits_with_the_model_code(
    model_version: int,
) -> None:
    production_path().unlink()

    result = imgq("evaluate", "--model", str(model_version))

    assert result.exit_code == EXIT_MODEL
    assert "missing" in result.output


def test_promoting_a_tampered_model_is_refused(model_version: int) -> None:
    tamper(production_path())

    result = imgq("models", "promote", str(model_version), "--alias", "staging")

    assert result.exit_code == EXIT_MODEL
    with session_scope() as session:
        assert registry.aliases_by_version(session) == {model_version: ["production"]}


def test_promoting_an_unknown_version_exits_with_the_model_code(
    migrated: str,
) -> None:
    result = imgq("models", "promote", "99")

    assert result.exit_code == EXIT_MODEL
    assert "no model version 99" in result.output


def test_bad_setting_exits_with_the_config_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMGQ_BATCH_SIZE", "lots")
    get_settings.cache_clear()

    result = imgq("config")

    assert result.exit_code == EXIT_CONFIG
    assert "IMGQ_BATCH_SIZE" in result.output


def test_config_lists_every_setting_with_its_value() -> None:
    result = imgq("config")

    assert result.exit_code == 0
    assert "IMGQ_BATCH_SIZE=512" in result.output
    assert f"IMGQ_DATA_DIR={get_settings().data_dir}" in result.output


def test_unknown_log_level_exits_with_the_config_code() -> None:
    result = imgq("--log-level", "LOUD", "config")

    assert result.exit_code == EXIT_CONFIG
    assert "LOUD" in result.output


@pytest.mark.parametrize(
    "arguments",
    [["--epochs", "0"], ["--batch-size", "0"], ["--patience", "-1"]],
    ids=["no-epochs", "empty-batches", "negative-patience"],
)
def test_training_numbers_out_of_range_are_usage_errors(arguments: list[str]) -> None:
    result = imgq("train", *arguments)

    assert result.exit_code == EXIT_USAGE
    assert "Invalid value" in result.output


def test_unreachable_database_exits_with_the_database_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # nothing listens on port 1 of the loopback interface
    monkeypatch.setenv("IMGQ_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/imgq")
    get_settings.cache_clear()

    result = imgq("models", "list")

    assert result.exit_code == EXIT_DATABASE
    assert "imgq: error: database unavailable" in result.output
    assert "Traceback" not in result.output
