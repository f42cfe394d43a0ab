"""Paths outside the allowed roots, named or behind a symlink: refused on submit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import set_env
from sqlalchemy import ColumnElement, func, select
from support_jobs import fresh_celery_app, queued_messages, write_digit, write_digits

from imgq.cli import main
from imgq.db.engine import session_scope
from imgq.db.jobs import QUEUED
from imgq.db.schema import Failure, Image, Job
from imgq.errors import EXIT_INPUT
from imgq.producer.submit import KIND_REFUSED


@pytest.fixture(autouse=True)
def _celery_app() -> Iterator[None]:
    with fresh_celery_app():
        yield


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digit in a folder that is not under the test's allowed root."""
    return write_digit(tmp_path_factory.mktemp("outside") / "secret.png", 5)


def _count(model: type, *where: ColumnElement[bool]) -> int:
    with session_scope() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int(session.scalar(query) or 0)


def test_a_path_outside_the_allowed_roots_is_refused_before_any_job(
    model_version: int, outside: Path
) -> None:
    result = CliRunner().invoke(main, ["submit", str(outside)])

    assert result.exit_code == EXIT_INPUT, result.output
    assert "outside the allowed roots" in result.output
    assert _count(Job) == 0
    assert _count(Image) == 0
    assert queued_messages() == 0


def test_a_symlink_named_on_the_command_line_that_leaves_the_roots_is_refused(
    model_version: int, outside: Path, tmp_path: Path
) -> None:
    link = tmp_path / "innocent.png"
    link.symlink_to(outside)

    result = CliRunner().invoke(main, ["submit", str(link)])

    assert result.exit_code == EXIT_INPUT, result.output
    assert "innocent.png is outside the allowed roots" in result.output
    assert _count(Image) == 0
    assert queued_messages() == 0


def test_a_symlink_inside_a_folder_that_leaves_the_roots_is_recorded_as_refused(
    model_version: int, outside: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    write_digits(folder, 3)
    (folder / "link.png").symlink_to(outside)
    (folder / "linked_folder").symlink_to(outside.parent, target_is_directory=True)

    result = CliRunner().invoke(main, ["submit", str(folder)])

    assert result.exit_code == 0, result.output
    assert "3 queued" in result.output and "1 refused" in result.output
    kinds = _count(Failure, Failure.kind == KIND_REFUSED, Failure.image_id.is_(None))
    assert kinds == 1
    assert _count(Image, Image.path == str(outside)) == 0, "never registered"
    assert queued_messages() == 1


def test_a_refused_source_after_good_ones_leaves_no_job_half_open(
    model_version: int,
    outside: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # one path a chunk: the good paths are registered before the refused one
    set_env(monkeypatch, chunk_size=1)
    folder = tmp_path / "images"
    write_digits(folder, 2)

    result = CliRunner().invoke(main, ["submit", str(folder), str(outside)])

    assert result.exit_code == EXIT_INPUT, result.output
    with session_scope() as session:
        job = session.scalars(select(Job)).one()
        # what was named before the refused path is queued, not left submitting
        assert (job.state, job.queued_images) == (QUEUED, 2)
    assert queued_messages() == 2
