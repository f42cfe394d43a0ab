"""Flower, the exporter and the Prometheus scrape config of the deployment."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from ops_helpers import wait_for
from support import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "IMGQ_REDIS_PASSWORD": "redis-secret",
    "POSTGRES_PASSWORD": "pg-secret",
    "FLOWER_BASIC_AUTH": "admin:flower-secret",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Debian's docker-compose resolves it."""
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: install Debian's docker-compose"
    finished = subprocess.run(
        [executable, "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={"PATH": os.environ["PATH"], **SECRETS},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert finished.returncode == 0, finished.stderr
    resolved: dict[str, Any] = yaml.safe_load(finished.stdout)
    return resolved


def test_flower_is_published_on_this_host_only_behind_basic_auth(
    compose: dict[str, Any],
) -> None:
    flower = compose["services"]["flower"]
    script = " ".join(flower["command"])

    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "admin:flower-secret"
    assert [str(port).split(":")[0] for port in flower["ports"]] == ["127.0.0.1"]
    assert "celery -A imgq.worker.celery_main flower" in script
    assert 'test -n "$$FLOWER_BASIC_AUTH"' in script  # refuses to run open


def test_prometheus_scrapes_the_ports_the_workers_and_the_exporter_serve(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}

    worker_dns = jobs["imgq-worker"]["dns_sd_configs"][0]
    assert worker_dns["names"] == ["worker"]
    assert (
        str(worker_dns["port"])
        == services["worker"]["environment"]["IMGQ_METRICS_PORT"]
    )
    exporter_command = services["exporter"]["command"]
    exporter_port = exporter_command[exporter_command.index("--port") + 1]
    assert jobs["imgq-exporter"]["static_configs"][0]["targets"] == [
        f"exporter:{exporter_port}"
    ]
    assert exporter_command[0] == "metrics"


@pytest.mark.slow
def test_flower_asks_for_the_password_it_is_given(tmp_path: Path) -> None:
    port = free_port()
    env = os.environ.copy() | {"FLOWER_BASIC_AUTH": "admin:flower-secret"}
    command = [
        sys.executable, "-m", "celery", "-A", "imgq.worker.celery_main",
        "flower", f"--port={port}", "--address=127.0.0.1",
    ]  # fmt: skip
    with open(tmp_path / "flower.log", "wb") as log_file:
        flower = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=log_file
        )
        try:
            anonymous = wait_for(
                lambda: _status(port, password=None), timeout=60, what="Flower"
            )
            wrong = _status(port, password="guess")
            right = _status(port, password="flower-secret")
        finally:
            flower.send_signal(signal.SIGTERM)
            flower.wait(30)

    assert (anonymous, wrong, right) == (401, 401, 200)


def _status(port: int, *, password: str | None) -> int | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/workers")
    if password is not None:
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None
