"""Rows written as an aligned table, CSV or JSON lines, one at a time.

The writers consume an iterator and keep nothing but the table's first rows
(to size its columns), so a million results stream to a pipe in flat memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, Protocol, TextIO

FORMATS = ("table", "csv", "jsonl")

# Rows read ahead to size the table's columns; later rows may be wider.
TABLE_SIZING_ROWS = 200


class Row(Protocol):
    """A result row that can name its columns."""

    columns: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]: ...


def write_rows(
    rows: Iterable[Row], stream: TextIO, *, columns: Sequence[str], output_format: str
) -> int:
    """Write every row in ``output_format``; returns how many were written."""
    dicts = (row.as_dict() for row in rows)
    if output_format == "csv":
        return write_csv(dicts, stream, columns=columns)
    if output_format == "jsonl":
        return write_jsonl(dicts, stream)
    if output_format == "table":
        return write_table(dicts, stream, columns=columns)
    raise ValueError(f"unknown format {output_format!r}; one of {', '.join(FORMATS)}")


def write_csv(
    rows: Iterable[Mapping[str, Any]], stream: TextIO, *, columns: Sequence[str]
) -> int:
    """CSV with a header; empty fields for missing values, times in ISO 8601."""
    writer = csv.writer(stream)
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([_plain(row[name]) for name in columns])
        count += 1
    return count


def write_jsonl(rows: Iterable[Mapping[str, Any]], stream: TextIO) -> int:
    """One JSON object per line; times in ISO 8601, missing values as null."""
    count = 0
    for row in rows:
        stream.write(json.dumps(row, default=_json_default, ensure_ascii=False))
        stream.write("\n")
        count += 1
    return count


def write_table(
    rows: Iterable[Mapping[str, Any]], stream: TextIO, *, columns: Sequence[str]
) -> int:
    """Columns aligned to the widest of the first rows; numbers to the right."""
    iterator: Iterator[Mapping[str, Any]] = iter(rows)
    head = list(islice(iterator, TABLE_SIZING_ROWS))
    shown = [[_shown(row[name]) for name in columns] for row in head]
    widths = [
        max([len(name)] + [len(values[index]) for values in shown])
        for index, name in enumerate(columns)
    ]
    numeric = [
        bool(head) and all(_is_number(row[name]) for row in head) for name in columns
    ]
    stream.write(_line(list(columns), widths, [False] * len(columns)))
    count = 0
    for values in shown:
        stream.write(_line(values, widths, numeric))
        count += 1
    for row in iterator:
        stream.write(_line([_shown(row[name]) for name in columns], widths, numeric))
        count += 1
    return count


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A small aligned table (for summaries) as one string."""
    shown = [[_shown(value) for value in row] for row in rows]
    widths = [
        max([len(name)] + [len(values[index]) for values in shown])
        for index, name in enumerate(header)
    ]
    numeric = [
        bool(rows) and all(_is_number(row[index]) for row in rows)
        for index in range(len(header))
    ]
    lines = [_line(list(header), widths, [False] * len(header))]
    lines.extend(_line(values, widths, numeric) for values in shown)
    return "".join(lines)


def _line(values: list[str], widths: list[int], numeric: list[bool]) -> str:
    cells = [
        value.rjust(width) if right else value.ljust(width)
        for value, width, right in zip(values, widths, numeric, strict=True)
    ]
    return "  ".join(cells).rstrip() + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _plain(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
