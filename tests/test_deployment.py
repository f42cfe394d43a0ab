"""The compose file, parsed by Debian's docker-compose (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"IMGQ_REDIS_PASSWORD": "redis-secret", "POSTGRES_PASSWORD": "pg-secret"}


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: install Debian's docker-compose"
    return subprocess.run(
        [executable, "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    finished = _compose_config(SECRETS)
    assert finished.returncode == 0, finished.stderr
    return yaml.safe_load(finished.stdout)  # type: ignore[no-any-return]


def test_compose_file_refuses_to_start_without_passwords() -> None:
    finished = _compose_config({})

    assert finished.returncode != 0
    assert "IMGQ_REDIS_PASSWORD" in finished.stderr + finished.stdout


def test_redis_keeps_an_append_only_log_and_asks_for_the_password(
    compose: dict[str, Any],
) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]

    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == "redis-secret"
    assert "ports" not in redis
    assert any(
        volume.endswith(":/data") or "/data" in str(volume)
        for volume in redis["volumes"]
    )


def test_no_database_or_broker_is_published_on_a_public_interface(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published = str(port)
            assert published.startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_workers_reserve_a_gpu_and_carry_the_broker_password(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]

    assert devices[0]["capabilities"] == ["gpu"]
    assert worker["environment"]["IMGQ_REDIS_PASSWORD"] == "redis-secret"
    assert worker["environment"]["IMGQ_BROKER_URL"].startswith("redis://redis:")
    assert worker["restart"].startswith("on-failure")


def test_dockerfile_installs_the_package_and_runs_the_imgq_command() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert 'ENTRYPOINT ["imgq"]' in dockerfile
    assert "pip install" in dockerfile
    assert "USER imgq" in dockerfile
