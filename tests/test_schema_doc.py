"""The example queries of docs/schema.md run, and agree with imgq's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from report_data import ROWS, Known, fill

from imgq.db.engine import get_engine
from imgq.db.schema import Base

SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
PARAMETERS = {"job_id": 1, "version": 1, "version_a": 1, "version_b": 2}


def example_queries() -> dict[str, str]:
    """The SQL blocks of the document, by the heading above each."""
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    heading = ""
    for part in re.split(r"(^### [^\n]*$|```sql\n.*?```)", text, flags=re.M | re.S):
        if part.startswith("### "):
            heading = part[4:].strip()
        elif part.startswith("```sql"):
            name = heading if heading not in queries else f"{heading} (counts)"
            queries[name] = part[len("```sql\n") : -len("```")]
    return queries


@pytest.fixture
def known(migrated: str, tmp_path: Path) -> Known:
    """The known rows of report_data in a fresh database."""
    return fill(migrated, tmp_path / "images")


def run(url: str, sql: str, **overrides: object) -> list[tuple[object, ...]]:
    statement = sa.text(sql)
    names = set(re.findall(r"(?<!:):(\w+)", sql))
    values = {name: overrides.get(name, PARAMETERS[name]) for name in names}
    with get_engine(url).connect() as connection:
        return [tuple(row) for row in connection.execute(statement, values)]


def test_every_table_and_column_is_documented() -> None:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    for table in Base.metadata.sorted_tables:
        assert f"### {table.name}\n" in text, table.name
        section = text.split(f"### {table.name}\n", 1)[1].split("\n### ", 1)[0]
        for column in table.columns:
            assert f"| `{column.name}` |" in section, f"{table.name}.{column.name}"
        for index in table.indexes:
            assert str(index.name) in section, index.name


def test_example_queries_run_and_agree_with_the_rows(known: Known) -> None:
    queries = example_queries()
    dialect = get_engine(known.url).dialect.name
    for sql in queries.values():
        if dialect == "sqlite" and "interval" in sql:
            continue
        run(known.url, sql)

    wrong = run(
        known.url, queries["The wrong answers of a job, the most confident first"]
    )
    assert [row[0] for row in wrong] == [known.paths[n] for n in (2, 8, 12, 5)]

    accuracy = {
        row[0]: row[1:4]
        for row in run(known.url, queries["Accuracy per model version"])
    }
    labelled = [n for n, row in ROWS.items() if row[0] is not None]
    assert accuracy[1] == (
        16,
        len(labelled),
        sum(1 for n in labelled if ROWS[n][0] == ROWS[n][1]),
    )

    version_wrong = run(
        known.url, queries["The wrong answers of a version, the most confident first"]
    )
    wrong_of_version = [
        n for n, row in ROWS.items() if row[0] is not None and row[0] != row[1]
    ]
    assert [row[0] for row in version_wrong] == [
        known.paths[n] for n in sorted(wrong_of_version, key=lambda n: -ROWS[n][2])
    ]
    confusion = run(
        known.url,
        queries["Confusion counts of a version (true label against predicted)"],
    )
    assert sum(int(str(row[2])) for row in confusion) == len(labelled)

    changed = run(
        known.url, queries["Images whose answer changed between two versions"]
    )
    assert [row[0] for row in changed] == [2, 4, 5, 8, 10, 16]
    pairs = run(
        known.url, queries["Images whose answer changed between two versions (counts)"]
    )
    assert sum(int(str(row[2])) for row in pairs) == 6

    unsure = run(known.url, queries["Least confident answers of the production model"])
    assert unsure[0][0] == known.paths[7]
    failures = run(known.url, queries["Failures of a job by kind"], job_id=2)
    assert sorted(failures) == [("not_an_image", 1), ("truncated", 1)]
