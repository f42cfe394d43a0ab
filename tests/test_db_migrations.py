"""Alembic migrations on SQLite and PostgreSQL: up, again, down, and in step
with the SQLAlchemy models."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from imgq.cli import main
from imgq.db.engine import get_engine
from imgq.db.migrate import (
    current_revision,
    downgrade,
    head_revision,
    require_current,
    upgrade,
)
from imgq.db.schema import Base
from imgq.errors import EXIT_DATABASE, DatabaseError

TABLES = set(Base.metadata.tables)


def table_names(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


def test_upgrade_to_head_creates_every_table(database_url: str) -> None:
    upgrade(database_url)

    assert current_revision(get_engine(database_url)) == head_revision()
    assert {"model_versions", "images", "predictions", "failures"} <= TABLES
    assert table_names(database_url) == TABLES | {"alembic_version"}


def test_migrated_schema_matches_the_models(migrated: str) -> None:
    with get_engine(migrated).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_upgrade_twice_is_a_no_op_that_keeps_the_data(migrated: str) -> None:
    engine = get_engine(migrated)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO model_versions (name, architecture, path, "
                "content_hash, class_names, input_shape, preprocessing, metrics, "
                "data_fingerprint, imgq_version, created_at) VALUES ('kept', "
                "'cnn', '/m.keras', 'h', '[]', '[]', '{}', '{}', 'f', '0', "
                "CURRENT_TIMESTAMP)"
            )
        )

    upgrade(migrated)

    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        names = connection.execute(sa.text("SELECT name FROM model_versions"))
        assert names.scalars().all() == ["kept"]


def test_downgrade_to_base_drops_every_table(migrated: str) -> None:
    downgrade(migrated, "base")

    assert current_revision(get_engine(migrated)) is None
    assert table_names(migrated) <= {"alembic_version"}


def test_downgrade_then_upgrade_again_reaches_head(migrated: str) -> None:
    downgrade(migrated, "base")
    upgrade(migrated)

    assert current_revision(get_engine(migrated)) == head_revision()
    assert table_names(migrated) >= TABLES


def test_require_current_refuses_an_unmigrated_database(database_url: str) -> None:
    with pytest.raises(DatabaseError, match="run 'imgq db upgrade'"):
        require_current(get_engine(database_url))

    upgrade(database_url)
    require_current(get_engine(database_url))


def test_db_commands_upgrade_and_report_the_revision(database_url: str) -> None:
    runner = CliRunner()

    before = runner.invoke(main, ["db", "current"])
    upgraded = runner.invoke(main, ["db", "upgrade"])
    after = runner.invoke(main, ["db", "current"])

    assert before.exit_code == 0, before.output
    assert f"database: None  imgq: {head_revision()}" in before.output
    again = runner.invoke(main, ["db", "upgrade"])

    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from schema None to {head_revision()}" in upgraded.output
    assert f"database: {head_revision()}" in after.output
    assert f"is at schema {head_revision()} already" in again.output


def test_commands_on_an_unmigrated_database_exit_with_the_database_code(
    database_url: str,
) -> None:
    result = CliRunner().invoke(main, ["models", "list"])

    assert result.exit_code == EXIT_DATABASE
    assert "run 'imgq db upgrade'" in result.output
