"""Settings: defaults, IMGQ_ overrides of every kind, and refused values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgq.config import ENV_PREFIX, Settings, get_settings
from imgq.errors import ConfigError


def test_defaults_hold_without_any_imgq_variable() -> None:
    settings = Settings.from_env({})

    assert settings.batch_size == 512
    assert settings.retry_backoff == 2.0
    assert settings.mixed_precision is False
    assert settings.data_dir == Path("imgq-data")
    assert settings.allowed_formats == ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
    assert settings.model == "production"


def test_empty_database_url_means_sqlite_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings.from_env({"IMGQ_DATA_DIR": str(tmp_path)})

    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'imgq.db'}"
    assert settings.resolved_model_dir == tmp_path / "models"
    assert settings.resolved_report_dir == tmp_path / "reports"


def test_environment_overrides_each_kind_of_setting() -> None:
    settings = Settings.from_env(
        {
            "IMGQ_BATCH_SIZE": "256",
            "IMGQ_LOW_CONFIDENCE": "0.75",
            "IMGQ_MIXED_PRECISION": "yes",
            "IMGQ_ALLOWED_FORMATS": "png, jpeg",
            "IMGQ_MODEL_DIR": "/srv/models",
            "IMGQ_MODEL": "v3",
        }
    )

    assert settings.batch_size == 256
    assert settings.low_confidence == 0.75
    assert settings.mixed_precision is True
    assert settings.allowed_formats == ("PNG", "JPEG")
    assert settings.resolved_model_dir == Path("/srv/models")
    assert settings.model == "v3"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("on", True), ("0", False), ("off", False)],
)
def test_booleans_read_the_usual_spellings(raw: str, expected: bool) -> None:
    assert Settings.from_env({"IMGQ_MIXED_PRECISION": raw}).mixed_precision is expected


def test_lists_split_on_commas_and_the_path_separator() -> None:
    raw = f"/data/a,/data/b{os.pathsep}/data/c,"

    settings = Settings.from_env({"IMGQ_ALLOWED_ROOTS": raw})

    assert settings.allowed_roots == ("/data/a", "/data/b", "/data/c")
    assert settings.resolved_allowed_roots == (
        Path("/data/a"),
        Path("/data/b"),
        Path("/data/c"),
    )


def test_redis_password_is_added_to_a_broker_url_without_one() -> None:
    settings = Settings.from_env({"IMGQ_REDIS_PASSWORD": "s3cret"})

    assert settings.resolved_broker_url == "redis://:s3cret@127.0.0.1:6379/0"
    with_password = settings.replace(broker_url="redis://:other@redis:6379/1")
    assert with_password.resolved_broker_url == "redis://:other@redis:6379/1"


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("IMGQ_BATCH_SIZE", "many"),
        ("IMGQ_BATCH_SIZE", "12.5"),
        ("IMGQ_BATCH_SIZE", "0"),
        ("IMGQ_CHUNK_SIZE", "-1"),
        ("IMGQ_RETRY_BACKOFF", "soon"),
        ("IMGQ_LOW_CONFIDENCE", "1.5"),
        ("IMGQ_LOW_CONFIDENCE", "nan"),
        ("IMGQ_MIXED_PRECISION", "maybe"),
        ("IMGQ_MAX_IMAGE_PIXELS", ""),
        ("IMGQ_ALLOWED_FORMATS", ""),
        ("IMGQ_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(
    variable: str, raw: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: raw})


def test_every_setting_is_described_with_its_variable() -> None:
    rows = Settings().describe()

    names = [variable for variable, _, _ in rows]
    assert len(names) == len(set(names))
    assert "IMGQ_BATCH_SIZE" in names
    for variable, _value, description in rows:
        assert variable.startswith(ENV_PREFIX)
        assert description.strip(), f"{variable} has no description"


def test_get_settings_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMGQ_DECODE_THREADS", "7")
    get_settings.cache_clear()

    assert get_settings().decode_threads == 7


def test_decode_threads_default_leaves_a_core_for_the_model() -> None:
    automatic = Settings().resolved_decode_threads
    chosen = Settings(decode_threads=3).resolved_decode_threads

    assert automatic == max(1, min(8, (os.cpu_count() or 2) - 1))
    assert chosen == 3
