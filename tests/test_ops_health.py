"""``imgq health`` against a private Redis, real databases and real workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import set_env
from ops_helpers import (
    held_worker,
    private_redis,
    register_model_row,
    wait_for_health,
)
from support import free_port

from imgq.cli import main
from imgq.db.migrate import upgrade
from imgq.errors import EXIT_UNHEALTHY

PARTS = ["redis", "database", "workers", "readiness"]


def _health(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["health", *arguments])


def _lines(result: Result) -> dict[str, str]:
    """{part: what follows its name} from the standard output of imgq health."""
    parts = [line.split(": ", 1) for line in result.stdout.splitlines() if line]
    return {part: rest for part, rest in parts}


def test_health_sees_redis_up_then_down(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(sqlite_url)
    with private_redis(tmp_path / "redis") as server:
        set_env(monkeypatch, broker_url=server.url, redis_password=server.password)
        while_up = _health()
        server.stop()
        while_down = _health()

    assert while_up.exit_code == EXIT_UNHEALTHY
    up = _lines(while_up)
    assert list(up) == PARTS
    assert up["redis"] == f"ok (redis://:**@127.0.0.1:{server.port}/0)"
    assert up["database"].startswith("ok (sqlite:///")
    assert up["workers"].startswith("down: no worker serving test.fresh.")
    assert "imgq: error: workers, readiness down" in while_up.stderr

    assert while_down.exit_code == EXIT_UNHEALTHY
    down = _lines(while_down)
    assert down["redis"].startswith(f"down: redis://:**@127.0.0.1:{server.port}/0: ")
    assert "refused" in down["redis"]
    assert down["database"].startswith("ok")
    assert down["workers"] == "down: the broker is down, so no worker can be asked"
    assert "imgq: error: redis, workers, readiness down" in while_down.stderr


def test_health_says_when_the_redis_password_is_wrong(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(sqlite_url)
    with private_redis(tmp_path / "redis") as server:
        set_env(monkeypatch, broker_url=server.url, redis_password="not-the-password")
        result = _health()

    assert result.exit_code == EXIT_UNHEALTHY
    redis_line = _lines(result)["redis"]
    assert redis_line.startswith("down: ")
    assert redis_line.endswith("(check IMGQ_REDIS_PASSWORD)")
    assert "not-the-password" not in result.output


def test_health_reports_a_database_behind_the_newest_schema(
    database_url: str,
) -> None:
    upgrade(database_url, revision="0002")

    result = _health()

    assert result.exit_code == EXIT_UNHEALTHY
    database_line = _lines(result)["database"]
    assert database_line.startswith("down: ")
    assert "is at schema 0002, imgq needs" in database_line
    assert database_line.endswith("run 'imgq db upgrade'")


def test_health_reports_a_database_it_cannot_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql+psycopg://imgq:secret@127.0.0.1:{free_port()}/imgq"
    set_env(monkeypatch, database_url=url)

    result = _health("--json")

    assert result.exit_code == EXIT_UNHEALTHY
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert list(report["parts"]) == PARTS
    assert report["parts"]["redis"]["ok"] is True
    database = report["parts"]["database"]
    assert database["ok"] is False
    assert "127.0.0.1" in database["detail"] and "secret" not in database["detail"]


@pytest.mark.slow
def test_a_worker_still_loading_its_model_answers_but_is_not_ready(
    sqlite_url: str, tmp_path: Path
) -> None:
    upgrade(sqlite_url)
    register_model_row(folder=tmp_path / "models")

    log_path = tmp_path / "worker.log"
    with held_worker(tmp_path / "held", log_path=log_path) as worker:
        # the pool process has started and marked itself not ready
        wait_for_health(
            lambda parts: "(0 of 1 pool processes ready)" in parts["readiness"].detail,
            timeout=60,
            what="a worker loading its model",
        )
        result = _health()
        assert worker.poll() is None

    assert result.exit_code == EXIT_UNHEALTHY
    lines = _lines(result)
    assert lines["redis"].startswith("ok")
    assert lines["database"].startswith("ok")
    assert lines["workers"].startswith("ok (imgq-cpu@")
    assert lines["readiness"].startswith("down: imgq-cpu@")
    assert lines["readiness"].endswith(
        "is loading its model (0 of 1 pool processes ready)"
    )
    assert "imgq: error: readiness down" in result.stderr
