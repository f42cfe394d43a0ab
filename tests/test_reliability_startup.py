"""A worker whose model file is missing or corrupt refuses to start, once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from support import worker_env

from imgq.db.engine import session_scope
from imgq.db.schema import ModelVersion
from imgq.errors import EXIT_MODEL

STARTUP_TIMEOUT = 60


def _model_path(model_version: int) -> Path:
    with session_scope() as session:
        path = session.scalar(
            select(ModelVersion.path).where(ModelVersion.id == model_version)
        )
    assert path is not None
    return Path(path)


def _start_worker() -> subprocess.CompletedProcess[str]:
    """Run ``imgq worker`` to its end; a refusal ends it quickly."""
    return subprocess.run(
        [sys.executable, "-m", "imgq", "worker"],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_refuses_to_start_when_the_model_file_is_missing(
    model_version: int,
) -> None:
    _model_path(model_version).unlink()

    result = _start_worker()

    assert result.returncode == EXIT_MODEL, result.stderr
    assert "is missing" in result.stderr
    assert "ready." not in result.stderr, "no pool was started"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_worker_refuses_to_start_when_the_model_file_is_corrupt(
    model_version: int,
) -> None:
    path = _model_path(model_version)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])

    result = _start_worker()

    assert result.returncode == EXIT_MODEL, result.stderr
    assert "changed or is corrupt" in result.stderr
    assert "ready." not in result.stderr, "no pool was started"
