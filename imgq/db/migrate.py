"""Bring a database to the current schema with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from imgq.db.engine import get_engine, normalize_url
from imgq.errors import DatabaseError

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is an INI parser: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` on the database at ``url``."""
    engine = get_engine(url)
    config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Revert migrations down to ``revision``."""
    engine = get_engine(url)
    config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def require_current(engine: Engine | None = None) -> None:
    """Raise DatabaseError unless the database is at the newest migration."""
    engine = engine or get_engine()
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseError(
            f"database {engine.url.render_as_string()} is at schema {current!r}, "
            f"imgq needs {head!r}: run 'imgq db upgrade'"
        )
