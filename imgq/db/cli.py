"""``imgq db``: create or upgrade the database schema, recount the tallies."""

from __future__ import annotations

import click

from imgq.db.engine import get_engine
from imgq.db.migrate import current_revision, head_revision, upgrade


@click.group("db")
def db_group() -> None:
    """Manage the database schema (Alembic migrations)."""


@db_group.command("upgrade")
@click.option("--url", default=None, help="Database URL (default: IMGQ_DATABASE_URL).")
def upgrade_command(url: str | None) -> None:
    """Bring the database to the current schema; safe to run again."""
    engine = get_engine(url)
    before = current_revision(engine)
    upgrade(url)
    after = current_revision(engine)
    shown = engine.url.render_as_string()
    if before == after:
        click.echo(f"{shown} is at schema {after} already")
    else:
        click.echo(f"{shown} upgraded from schema {before} to {after}")


@db_group.command("current")
@click.option("--url", default=None, help="Database URL (default: IMGQ_DATABASE_URL).")
def current_command(url: str | None) -> None:
    """Show the database's schema revision and the newest one imgq knows."""
    engine = get_engine(url)
    click.echo(f"database: {current_revision(engine)}  imgq: {head_revision()}")


@db_group.command("recount")
@click.option("--url", default=None, help="Database URL (default: IMGQ_DATABASE_URL).")
def recount_command(url: str | None) -> None:
    """Copy true labels onto predictions and rebuild the answer tallies.

    imgq keeps both in step by itself; run this after changing labels or
    predictions with SQL by hand, while no worker writes.
    """
    from imgq.db.predictions import resync

    engine = get_engine(url)
    with engine.begin() as connection:
        changed = resync(connection)
    click.echo(
        f"{changed} predictions took their image's true label; tallies recounted"
    )


commands = [db_group]
