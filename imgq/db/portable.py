"""SQL pieces that SQLite and PostgreSQL spell differently.

Each is a SQLAlchemy construct compiled per dialect, so the queries that use
them stay one statement with bound parameters on every database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, FunctionElement, Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler


class floor_bucket(FunctionElement[int]):  # noqa: N801 (an SQL function's name)
    """``FLOOR(x)`` as an integer: CAST truncates on SQLite, FLOOR elsewhere."""

    type = Integer()
    inherit_cache = True


@compiles(floor_bucket)
def _floor_default(element: floor_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(floor_bucket, "sqlite")
def _floor_sqlite(element: floor_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    # confidences are never negative, so truncation is the floor
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


class unindexed(FunctionElement[Any]):  # noqa: N801 (an SQL construct)
    """A column that SQLite's planner may not look up by an index: ``+column``.

    SQLite picks the index for a query from its WHERE terms, and sometimes a
    worse one than reading in the order the query wants:

    - a version-wide join started at the index on the model version reads
      pages at random; scanning ``images`` (or ``predictions``) in id order
      and looking each row's partner up by the unique (image, version) key is
      several times faster on a large table;
    - a listing of wrong answers in image order started at the partial index
      of wrong answers (in confidence order) sorts them all first, where
      walking the images in order stops after the first few.

    Other databases get the plain column; PostgreSQL plans these well itself.
    """

    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _plain_column(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unindexed_column(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return f"+{compiler.process(element.clauses, **kw)}"


def version_condition(
    column: ColumnElement[Any], version: int, *, whole_version: bool
) -> ColumnElement[bool]:
    """``column = version``, read in image order when a whole version is joined."""
    if whole_version:
        return unindexed(column) == version
    return column == version
