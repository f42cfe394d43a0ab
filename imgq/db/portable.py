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


class in_image_order(FunctionElement[int]):  # noqa: N801 (an SQL construct)
    """An integer column compared without its index: SQLite reads in image order.

    On SQLite this is ``+column``, which keeps the planner from starting a
    version-wide join at an index on the model version: it scans ``images``
    (or ``predictions``) in id order instead and looks each row's partner up
    by the unique (image, version) key, touching pages in order rather than at
    random, several times faster on a large table. Other databases get the
    plain column; PostgreSQL chooses hash joins for these by itself.
    """

    type = Integer()
    inherit_cache = True


@compiles(in_image_order)
def _plain_column(element: in_image_order, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(in_image_order, "sqlite")
def _unindexed_column(element: in_image_order, compiler: SQLCompiler, **kw: Any) -> str:
    return f"+{compiler.process(element.clauses, **kw)}"


def version_condition(
    column: ColumnElement[Any], version: int, *, whole_version: bool
) -> ColumnElement[bool]:
    """``column = version``, read in image order when a whole version is joined."""
    if whole_version:
        return in_image_order(column) == version
    return column == version
