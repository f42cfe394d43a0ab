"""One log format and one level, from --log-level or IMGQ_LOG_LEVEL, everywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import set_env
from ops_helpers import (
    empty_test_queues,
    held_worker,
    log_lines,
    register_model_row,
    wait_for,
    wait_for_health,
)
from worker_process import write_digits

from imgq.config import get_settings
from imgq.db.migrate import upgrade


@contextmanager
def _imgq(
    arguments: list[str], *, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m imgq ARGUMENTS`` with its standard error in ``log_path``."""
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "imgq", *arguments],
            env=os.environ.copy() | (env or {}),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


@pytest.fixture
def model_row(sqlite_url: str, tmp_path: Path) -> int:
    """A database with a model row whose file passes the worker's check."""
    upgrade(sqlite_url)
    return register_model_row(folder=tmp_path / "models")


def _run_worker_until_it_answers(arguments: tuple[str, ...], *, folder: Path) -> str:
    log_path = folder / "worker.log"
    with held_worker(folder / "held", arguments=arguments, log_path=log_path) as worker:
        wait_for_health(
            lambda parts: parts["workers"].ok, timeout=60, what="the worker answering"
        )
        assert worker.poll() is None
    return log_path.read_text()


@pytest.mark.slow
def test_worker_logs_in_the_one_format_at_the_level_of_the_flag(
    model_row: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, log_level="WARNING")

    text = _run_worker_until_it_answers(
        ("--log-level", "DEBUG", "worker"), folder=tmp_path
    )

    lines = log_lines(text)
    celery_debug = [
        line
        for line in lines
        if line["level"] == "DEBUG" and line["logger"].startswith("celery.")
    ]
    assert celery_debug, text
    assert any(line["message"].endswith(" ready.") for line in lines)
    assert "/MainProcess]" not in text  # Celery's own format


@pytest.mark.slow
def test_worker_logs_at_the_level_of_the_environment(
    model_row: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, log_level="WARNING")

    text = _run_worker_until_it_answers(("worker",), folder=tmp_path)

    levels = {line["level"] for line in log_lines(text)}
    assert levels <= {"WARNING", "ERROR", "CRITICAL"}, text
    assert " ready." not in text
    assert "checked" not in text


def test_beat_logs_in_the_one_format_at_the_level_of_the_flag(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(sqlite_url)
    set_env(monkeypatch, log_level="WARNING")
    data_dir = get_settings().data_dir
    log_path = tmp_path / "beat.log"

    with _imgq(["--log-level", "DEBUG", "beat"], log_path=log_path) as beat:
        # beat says "Starting..." before it opens its schedule file
        wait_for(
            lambda: any(data_dir.glob("beat-schedule*")) or None,
            timeout=30,
            what="beat's schedule file",
        )
        assert beat.poll() is None
    lines = log_lines(log_path.read_text())

    starting = [line for line in lines if line["message"] == "beat: Starting..."]
    assert starting and starting[0]["logger"] == "celery.beat"
    assert starting[0]["process"] == "MainProcess"
    assert any(line["level"] == "DEBUG" for line in lines)


def test_producer_logs_its_job_id_at_the_configured_level(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(sqlite_url)
    register_model_row()
    write_digits(tmp_path / "first", 3)
    write_digits(tmp_path / "second", 3, offset=50)

    def submit_log(arguments: list[str], log_name: str) -> str:
        log_path = tmp_path / log_name
        with _imgq(arguments, log_path=log_path) as producer:
            assert producer.wait(60) == 0, log_path.read_text()
        return log_path.read_text()

    try:
        set_env(monkeypatch, log_level="INFO")
        verbose = log_lines(submit_log(["submit", str(tmp_path / "first")], "a.log"))
        arguments = ["--log-level", "WARNING", "submit", str(tmp_path / "second")]
        quiet = log_lines(submit_log(arguments, "b.log"))
    finally:
        empty_test_queues()

    submitting = [
        line
        for line in verbose
        if line["logger"] == "imgq.producer.submit" and line["level"] == "INFO"
    ]
    assert submitting and submitting[0]["message"].startswith("job=1: submitting")
    assert all(line["message"].startswith("job=1: ") for line in submitting)
    assert not [line for line in quiet if line["level"] == "INFO"]
