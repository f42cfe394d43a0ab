"""Celery beat starts a re-inference on the crontab from the settings.

The scheduler is driven by hand: the app's clock is set to chosen moments
and ``Scheduler.tick()`` decides, so no test waits for the wall clock. The
task it sends is read back from the real Redis queue and run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.beat import Scheduler
from click.testing import CliRunner
from conftest import set_env
from reinfer_rows import (
    add_images,
    add_version,
    delete_queues,
    queued_messages,
    set_production,
)
from sqlalchemy import select

from imgq.cli import main
from imgq.config import Settings, get_settings
from imgq.db.engine import session_scope
from imgq.db.schema import Job
from imgq.errors import EXIT_CONFIG, ConfigError
from imgq.worker.app import CLASSIFY_TASK, make_celery, reset_app
from imgq.worker.reinfer import KIND_REINFER
from imgq.worker.schedule import BEAT_SCHEDULE_FILE, REINFER_ENTRY, REINFER_TASK


@pytest.fixture(autouse=True)
def clean_queues(isolated_settings: Settings) -> Iterator[None]:
    reset_app()
    yield
    reset_app()
    delete_queues(isolated_settings)


def reinfer_messages(queue: str) -> list[dict[str, Any]]:
    """The kwargs of the re-inference messages waiting on ``queue``."""
    return [kwargs for task, kwargs in queued_messages(queue) if task == REINFER_TASK]


def at(hour: int, minute: int, second: int = 0, *, day: int = 1) -> datetime:
    return datetime(2024, 5, day, hour, minute, second, tzinfo=UTC)


def test_the_default_schedule_is_nightly() -> None:
    entry = make_celery(Settings()).conf.beat_schedule[REINFER_ENTRY]

    assert entry["task"] == REINFER_TASK
    assert entry["schedule"].minute == {0}
    assert entry["schedule"].hour == {2}
    assert entry["schedule"].day_of_week == set(range(7))


def test_the_schedule_is_read_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, reinfer_schedule="30 3 1,15 * mon-fri")

    app = make_celery(get_settings())
    schedule = app.conf.beat_schedule[REINFER_ENTRY]["schedule"]

    assert schedule.minute == {30}
    assert schedule.hour == {3}
    assert schedule.day_of_month == {1, 15}
    assert schedule.month_of_year == set(range(1, 13))
    assert schedule.day_of_week == {1, 2, 3, 4, 5}
    assert app.conf.beat_schedule_filename == str(
        get_settings().data_dir / BEAT_SCHEDULE_FILE
    )


@pytest.mark.parametrize(
    "crontab",
    [
        "0 25 * * *",
        "0 2 * *",
        "0 2 * * * *",
        "every night",
        "*/0 * * * *",
        "0 2 31 2 *",
    ],
)
def test_an_invalid_crontab_is_a_config_error(
    crontab: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, reinfer_schedule=crontab)

    with pytest.raises(ConfigError, match="IMGQ_REINFER_SCHEDULE"):
        make_celery(get_settings())
    assert CliRunner().invoke(main, ["beat"]).exit_code == EXIT_CONFIG


def test_beat_sends_the_task_when_the_crontab_is_due_and_then_it_runs(
    migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, reinfer_schedule="0 2 * * *")
    set_production(add_version("nightly"))
    images = add_images(3)
    settings = get_settings()
    app = make_celery(settings)
    clock = {"now": at(1, 58)}
    monkeypatch.setattr(app, "now", lambda: clock["now"])
    scheduler = Scheduler(app)

    scheduler.tick()
    before = reinfer_messages(settings.background_queue)
    clock["now"] = at(2, 0, 5)
    scheduler.tick()
    sent = reinfer_messages(settings.background_queue)
    clock["now"] = at(2, 30)
    scheduler.tick()
    later_that_night = reinfer_messages(settings.background_queue)

    assert before == []
    assert len(sent) == 1
    assert later_that_night == sent
    assert reinfer_messages(settings.fresh_queue) == []

    # a worker would run the message as it is; run it here
    outcome = app.tasks[REINFER_TASK].apply(kwargs=sent[0]).get()
    assert outcome["queued"] == 3
    classify = [
        kwargs
        for task, kwargs in queued_messages(settings.background_queue)
        if task == CLASSIFY_TASK
    ]
    assert [kwargs["image_ids"] for kwargs in classify] == [images]
    with session_scope() as session:
        assert session.scalars(select(Job.kind)).all() == [KIND_REINFER]


def test_beat_fires_again_the_next_night(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_celery(get_settings())
    clock = {"now": at(2, 0, 1)}
    monkeypatch.setattr(app, "now", lambda: clock["now"])
    entry = Scheduler(app).schedule[REINFER_ENTRY]
    entry.last_run_at = at(2, 0, 1)

    clock["now"] = at(23, 59)
    due_before_midnight, _ = entry.is_due()
    clock["now"] = at(2, 0, 1, day=2)
    due_next_night, _ = entry.is_due()

    assert not due_before_midnight
    assert due_next_night


def test_imgq_beat_starts_and_keeps_its_state_in_the_data_dir(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    log_path = tmp_path / "beat.log"
    with open(log_path, "wb") as log_file:
        beat = subprocess.Popen(
            [sys.executable, "-m", "imgq", "beat"],
            env=os.environ.copy(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            data_dir = isolated_settings.data_dir
            while time.monotonic() < deadline and beat.poll() is None:
                if list(data_dir.glob(f"{BEAT_SCHEDULE_FILE}*")):
                    break
                time.sleep(0.2)
            running = beat.poll() is None
        finally:
            beat.send_signal(signal.SIGTERM)
            beat.wait(30)
    output = log_path.read_text()

    assert running, output
    assert list(data_dir.glob(f"{BEAT_SCHEDULE_FILE}*")), output
    assert "re-inference on '0 2 * * *' (UTC)" in output
    assert "Traceback" not in output


def test_the_scheduler_process_does_not_import_tensorflow() -> None:
    script = (
        "import sys\n"
        "import imgq.cli\n"
        "from celery.beat import Scheduler\n"
        "from imgq.worker.app import get_app\n"
        "app = get_app()\n"
        "app.loader.import_default_modules()\n"
        "Scheduler(app, lazy=True)\n"
        "assert 'imgq.reinfer' in app.tasks\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=True,
    )

    assert completed.stdout.strip() == "[]"


def test_the_compose_file_runs_exactly_one_beat() -> None:
    root = Path(__file__).resolve().parent.parent
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: install Debian's docker-compose"
    finished = subprocess.run(
        [executable, "-f", str(root / "docker-compose.yml"), "config"],
        env={
            "PATH": os.environ["PATH"],
            "IMGQ_REDIS_PASSWORD": "redis-secret",
            "POSTGRES_PASSWORD": "pg-secret",
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        check=True,
    )
    services = yaml.safe_load(finished.stdout)["services"]

    beat = services["beat"]
    assert beat["command"] == ["beat"]
    assert beat["deploy"]["replicas"] == 1
    assert beat["environment"]["IMGQ_REINFER_SCHEDULE"] == "0 2 * * *"
    assert beat["environment"]["IMGQ_BROKER_URL"] == "redis://redis:6379/0"
    # beat needs no GPU
    assert "resources" not in beat["deploy"]
