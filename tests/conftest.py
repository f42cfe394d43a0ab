"""Fixtures shared by the suite: settings, real databases, Redis, a model.

The suite talks to the real Redis and PostgreSQL of the machine. A missing
service is an error, not a skip: CI must not pass by testing less.
``IMGQ_TEST_POSTGRES_URL`` and ``IMGQ_TEST_REDIS_URL`` point elsewhere.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgq import config
from imgq.db import engine as db_engine
from imgq.db.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "IMGQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("IMGQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_KINDS = ["sqlite", "postgresql"]


def set_env(monkeypatch: pytest.MonkeyPatch, **values: object) -> None:
    """Set IMGQ_* variables and make the next get_settings() read them."""
    for name, value in values.items():
        monkeypatch.setenv(f"IMGQ_{name.upper()}", str(value))
    config.get_settings.cache_clear()


@pytest.fixture(autouse=True)
def isolated_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[config.Settings]:
    """Every test gets its own data folder, allowed root and queue names."""
    for name in list(os.environ):
        if name.startswith("IMGQ_") and not name.startswith("IMGQ_TEST_"):
            monkeypatch.delenv(name)
    suffix = uuid.uuid4().hex[:10]
    set_env(
        monkeypatch,
        data_dir=tmp_path / "imgq-data",
        allowed_roots=tmp_path,
        broker_url=REDIS_URL,
        fresh_queue=f"test.fresh.{suffix}",
        background_queue=f"test.background.{suffix}",
    )
    yield config.get_settings()
    config.get_settings.cache_clear()
    db_engine.dispose_all()


def _create_postgres_database() -> str:
    name = f"imgq_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return (
        sa.engine.make_url(POSTGRES_URL)
        .set(database=name)
        .render_as_string(hide_password=False)
    )


def _drop_postgres_database(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=DATABASE_KINDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database, once SQLite and once PostgreSQL, set as the default."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
    else:
        url = _create_postgres_database()
    set_env(monkeypatch, database_url=url)
    yield url
    db_engine.dispose_all()
    if request.param == "postgresql":
        _drop_postgres_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty SQLite database set as the default, for tests of one backend."""
    url = f"sqlite:///{tmp_path / 'test.db'}"
    set_env(monkeypatch, database_url=url)
    return url


@pytest.fixture
def migrated(database_url: str) -> str:
    """``database_url`` brought to the current schema."""
    upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def digits_model_file(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A CNN trained briefly on the digits, saved once for the whole session."""
    from imgq.models.datasets import load_digits_dataset
    from imgq.models.training import train

    folder = tmp_path_factory.mktemp("model")
    dataset = load_digits_dataset()
    result = train(
        dataset, architecture="cnn", output_dir=folder, epochs=8, patience=0, seed=1
    )
    path = folder / "digits-cnn.keras"
    result.model.save(path)
    return {
        "path": path,
        "class_names": dataset.class_names,
        "spec": dataset.spec,
        "fingerprint": dataset.fingerprint,
        "accuracy": result.history["val_accuracy"][-1],
    }


@pytest.fixture
def model_version(
    migrated: str, digits_model_file: dict[str, object], tmp_path: Path
) -> int:
    """The session's digits CNN registered in the test database as production."""
    from imgq.db.engine import session_scope
    from imgq.models import registry

    copy = tmp_path / "models" / "digits-cnn.keras"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_model_file["path"], copy)  # type: ignore[arg-type]
    with session_scope() as session:
        version = registry.register_file(
            session,
            copy,
            name="digits-cnn",
            architecture="cnn",
            class_names=digits_model_file["class_names"],  # type: ignore[arg-type]
            spec=digits_model_file["spec"],  # type: ignore[arg-type]
            metrics={"dataset": "digits", "seed": 1},
            data_fingerprint=str(digits_model_file["fingerprint"]),
        )
        registry.promote(session, version.id)
        return version.id
