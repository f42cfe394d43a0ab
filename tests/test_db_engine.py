"""Engines and sessions: SQLite set up for concurrent writers, URLs, rollback."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from imgq.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    get_engine,
    normalize_url,
    read_only,
    session_scope,
)
from imgq.db.schema import ModelVersion


def new_version(name: str) -> ModelVersion:
    return ModelVersion(
        name=name,
        architecture="cnn",
        path=f"/models/{name}.keras",
        content_hash="0" * 64,
        class_names=["a", "b"],
        input_shape=[28, 28, 1],
        preprocessing={},
        metrics={},
        data_fingerprint="0" * 64,
        imgq_version="test",
    )


def version_count() -> int:
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) or 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@db/imgq", "postgresql+psycopg://u@db/imgq"),
        ("postgres://u:p%40ss@db/imgq", "postgresql+psycopg://u:p%40ss@db/imgq"),
        ("postgresql+psycopg://u@db/imgq", "postgresql+psycopg://u@db/imgq"),
        ("sqlite:////data/imgq.db", "sqlite:////data/imgq.db"),
    ],
)
def test_plain_postgres_urls_use_psycopg_3(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(sqlite_url: str) -> None:
    with get_engine().connect() as connection:
        journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
        foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()

    assert (journal, timeout, foreign_keys) == ("wal", SQLITE_BUSY_TIMEOUT_MS, 1)


def test_the_same_url_gives_the_same_engine(database_url: str) -> None:
    assert get_engine() is get_engine(database_url)


def test_session_scope_commits_on_success_and_rolls_back_on_error(
    migrated: str,
) -> None:
    with session_scope() as session:
        session.add(new_version("kept"))
    with pytest.raises(RuntimeError), session_scope() as session:
        session.add(new_version("dropped"))
        session.flush()
        raise RuntimeError("abort")

    with session_scope() as session:
        names = session.scalars(sa.select(ModelVersion.name)).all()
    assert names == ["kept"]


def test_concurrent_read_then_write_transactions_never_hit_a_locked_database(
    migrated: str,
) -> None:
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            for step in range(15):
                with session_scope() as session:
                    # a read before the write: the case that fails with
                    # 'database is locked' under SQLite's deferred BEGIN
                    session.scalar(sa.select(sa.func.count(ModelVersion.id)))
                    session.add(new_version(f"writer-{number}-{step}"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert version_count() == 60


def test_read_only_engine_reads_while_a_writer_holds_the_lock(
    migrated: str,
) -> None:
    engine = get_engine()
    with engine.begin() as writer:
        session = Session(bind=writer)
        session.add(new_version("pending"))
        session.flush()
        with read_only(engine).connect() as reader:
            seen = reader.execute(sa.select(sa.func.count(ModelVersion.id))).scalar()

    # the reader did not wait for the writer and saw the last committed state
    assert seen == 0
    assert version_count() == 1
