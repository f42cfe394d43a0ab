"""Bulk, idempotent writes that work the same on SQLite and PostgreSQL.

Both dialects support ``INSERT ... ON CONFLICT``; only the construct that
builds it differs, so every bulk write goes through these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from imgq.db.schema import Base


def insert_statement(session: Session, model: type[Base]) -> Any:
    # the table, not the class: Core's executemany skips the ORM's per-row
    # bookkeeping, which costs more than the statement for thousands of rows
    table = cast(Table, model.__table__)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"imgq supports SQLite and PostgreSQL, not {dialect}")


def insert_ignoring_duplicates(
    session: Session, model: type[Base], rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows``; a row that violates a unique key is silently skipped."""
    if rows:
        session.execute(insert_statement(session, model).on_conflict_do_nothing(), rows)


def upsert(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    key: Sequence[str],
    update: dict[str, Any],
) -> None:
    """Insert ``rows``; on a conflict of ``key`` apply ``update`` to the old row.

    ``update`` maps columns to expressions built from ``excluded`` columns, as
    returned by :func:`excluded`. A key must appear once in ``rows``.
    """
    if not rows:
        return
    statement = insert_statement(session, model)
    values = {name: build(statement.excluded) for name, build in update.items()}
    session.execute(
        statement.on_conflict_do_update(index_elements=list(key), set_=values), rows
    )
