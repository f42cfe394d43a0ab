"""Bulk, idempotent writes that work the same on SQLite and PostgreSQL.

Both dialects support ``INSERT ... ON CONFLICT``; only the construct that
builds it differs, so every bulk write goes through these helpers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import JSON, Table, text
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


def insert_new(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    returning: Sequence[str],
) -> list[tuple[Any, ...]]:
    """Insert ``rows``, skipping any that violate a unique key; return the new ones.

    Returns the ``returning`` columns of the rows actually inserted. Every row
    must have the same keys. On PostgreSQL the rows travel as one array per
    column (``INSERT ... SELECT FROM unnest(...)``): a handful of parameters
    instead of one per value, which halves the time of a batch of hundreds of
    rows with RETURNING; elsewhere it is a multi-row INSERT.
    """
    if not rows:
        return []
    table = cast(Table, model.__table__)
    if session.get_bind().dialect.name != "postgresql":
        statement = insert_statement(session, model).on_conflict_do_nothing()
        selected = [table.c[name] for name in returning]
        inserted = session.execute(statement.returning(*selected), rows)
        return [tuple(row) for row in inserted]
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    rows = _with_defaults(table, rows)
    names = list(rows[0])
    arrays: list[str] = []
    values: list[str] = []
    parameters: dict[str, list[Any]] = {}
    for position, name in enumerate(names):
        column = table.c[name]
        parameter = f"column_{position}"
        if isinstance(column.type, JSON):
            # JSON travels as text and is parsed by the server, like a literal
            arrays.append(f"CAST(:{parameter} AS text[])")
            values.append(f"CAST(rows.{quote(name)} AS json)")
            parameters[parameter] = [
                None if row[name] is None else json.dumps(row[name]) for row in rows
            ]
        else:
            type_name = column.type.compile(dialect=dialect)
            arrays.append(f"CAST(:{parameter} AS {type_name}[])")
            values.append(f"rows.{quote(name)}")
            parameters[parameter] = [row[name] for row in rows]
    statement = text(
        f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, names))}) "
        f"SELECT {', '.join(values)} "
        f"FROM unnest({', '.join(arrays)}) AS rows({', '.join(map(quote, names))}) "
        f"ON CONFLICT DO NOTHING RETURNING {', '.join(map(quote, returning))}"
    )
    return [tuple(row) for row in session.execute(statement, parameters)]


def _with_defaults(
    table: Table, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows with the Python-side defaults of the columns they leave out.

    A hand-written INSERT skips what SQLAlchemy would fill in (``default=``
    on a column), so they are filled here, once for all rows.
    """
    missing: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.name in rows[0] or default is None:
            continue
        if getattr(default, "is_scalar", False):
            missing[column.name] = getattr(default, "arg", None)
        elif getattr(default, "is_callable", False):
            missing[column.name] = default.arg(None)  # type: ignore[attr-defined]
    if not missing:
        return list(rows)
    return [missing | row for row in rows]
