"""Engines and sessions: SQLite tuned for concurrent writers, PostgreSQL pooled.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts
with ``BEGIN IMMEDIATE`` so that two writers queue for the lock instead of
failing with "database is locked" when a read turns into a write. Engines are
disposed in a forked child, so a Celery pool process never shares a parent's
connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from imgq.config import get_settings

SQLITE_BUSY_TIMEOUT_MS = 60_000
READ_ONLY = "imgq_read_only"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_imgq_engine(url: str) -> Engine:
    """A new engine for ``url`` with imgq's connection policy."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _create_sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _create_sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the configured database)."""
    url = normalize_url(url or get_settings().resolved_database_url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_imgq_engine(url)
        return engine


def read_only(engine: Engine) -> Engine:
    """The same engine, marked so that SQLite does not take the write lock."""
    return engine.execution_options(**{READ_ONLY: True})


def dispose_all(close: bool = True) -> None:
    """Drop every pooled connection (``close=False`` in a forked child)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        if close:
            _engines.clear()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(bind=engine or get_engine(), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


# A forked child must open its own connections; closing the parent's would
# break the parent, so the child only forgets them.
os.register_at_fork(after_in_child=lambda: dispose_all(close=False))
