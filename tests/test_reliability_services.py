"""Redis restarted, the broker connection cut, PostgreSQL away: the job still ends.

Each fault is real: a private ``redis-server`` the test shuts down and starts
again on its append-only file, or a TCP proxy in front of Redis or
PostgreSQL whose connections the test cuts or refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import set_env
from sqlalchemy import text
from sqlalchemy.engine import make_url
from support import RedisServer, TcpProxy, running_workers, wait_until, worker_env
from support_jobs import (
    batch_attempts,
    batch_in_flight,
    batch_state,
    end_state,
    fresh_celery_app,
    job_rows_written,
    submit_sources,
    wait_for_done,
    write_digits,
)

from imgq.db.engine import create_imgq_engine
from imgq.db.jobs import BATCH_QUEUED

pytestmark = pytest.mark.slow

CHUNKED = {"chunk_size": 16, "batch_size": 4, "slow_model_seconds": 0.5}


@pytest.fixture(autouse=True)
def _celery_app() -> Iterator[None]:
    with fresh_celery_app():
        yield


def _wait_for_rows(job_id: int, at_least: int = 1) -> None:
    wait_until(lambda: job_rows_written(job_id) >= at_least, timeout=120, what="rows")


def _proxied(url: str, proxy: TcpProxy) -> str:
    return (
        make_url(url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_redis_killed_and_restarted_with_a_backlog_loses_nothing(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        set_env(
            monkeypatch, **CHUNKED, broker_url=redis_server.url, visibility_timeout=8
        )
        write_digits(tmp_path / "images", 80)
        with running_workers(tmp_path) as (worker,):
            job_id = submit_sources(tmp_path / "images").job_id
            _wait_for_rows(job_id)

            # appendfsync always: every queued message is on disk already
            redis_server.kill()
            wait_until(
                lambda: (
                    "Cannot connect to redis" in worker.log()
                    or "Connection to broker lost" in worker.log()
                ),
                timeout=60,
                what="the worker to notice the broker is gone",
            )
            redis_server.start()
            wait_for_done(job_id)
            worker.raise_if_exited()
    finally:
        redis_server.stop()

    end_state(job_id).check()
    assert max(batch_attempts(job_id).values()) <= 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_broker_connection_cut_twice_mid_batch_runs_the_batch_again_once(
    model_version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = TcpProxy("127.0.0.1", 6379).start()
    # 32 images in 8 passes of 0.5 s: a batch lasts 4 s, both cuts land in it
    set_env(monkeypatch, chunk_size=32, batch_size=4, slow_model_seconds=0.5)
    env = worker_env(
        broker_url=f"redis://127.0.0.1:{proxy.port}/0", visibility_timeout=8
    )
    write_digits(tmp_path / "images", 64)
    try:
        with running_workers(tmp_path, env=env) as (worker,):
            job_id = submit_sources(tmp_path / "images").job_id
            batch_id = batch_in_flight(job_id)
            for _ in range(2):
                deliveries = worker.log().count(" received")
                assert proxy.cut() > 0
                # kombu put the unacknowledged message back: it comes again
                wait_until(
                    lambda: worker.log().count(" received") > deliveries,  # noqa: B023
                    timeout=30,
                    what="the worker to reconnect and receive the batch again",
                )
            assert batch_state(batch_id) == BATCH_QUEUED, "both cuts hit the batch"
            wait_for_done(job_id, timeout=120)
            worker.raise_if_exited()
    finally:
        proxy.close()

    end_state(job_id).check()
    assert worker.log().count("Connection to broker lost") == 2
    attempts = batch_attempts(job_id)
    assert attempts.pop(batch_id) <= 2, "once more at most, not once per cut"
    assert set(attempts.values()) == {1}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_unreachable_mid_batch_retries_with_backoff_then_writes(
    model_version: int,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = TcpProxy("127.0.0.1", make_url(database_url).port or 5432).start()
    set_env(monkeypatch, **CHUNKED, retry_backoff=1, retry_backoff_max=4)
    env = worker_env(database_url=_proxied(database_url, proxy))
    write_digits(tmp_path / "images", 32)
    try:
        with running_workers(tmp_path, env=env) as (worker,):
            job_id = submit_sources(tmp_path / "images").job_id
            _wait_for_rows(job_id)

            proxy.close()
            wait_until(
                lambda: _most_retries(worker.log()) >= 3,
                timeout=60,
                what="a batch to retry three times while the database is away",
            )
            proxy.reopen()
            wait_for_done(job_id, timeout=90)
            worker.raise_if_exited()
    finally:
        proxy.close()

    end_state(job_id).check()
    for delays in _retry_delays(worker.log()).values():
        # doubling from IMGQ_RETRY_BACKOFF, capped at IMGQ_RETRY_BACKOFF_MAX
        assert delays == [min(4.0, 2.0**number) for number in range(len(delays))]


def _most_retries(log: str) -> int:
    return max((len(delays) for delays in _retry_delays(log).values()), default=0)


def _retry_delays(log: str) -> dict[int, list[float]]:
    """The delays each batch waited before retrying, from the worker's log."""
    pattern = r"batch=(\d+): database unavailable .*; retry \d+ in (\d+) s"
    delays: dict[int, list[float]] = {}
    for batch_id, seconds in re.findall(pattern, log):
        delays.setdefault(int(batch_id), []).append(float(seconds))
    return delays


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_pooled_connections_cut_by_the_network_are_replaced_before_use(
    migrated: str,
) -> None:
    proxy = TcpProxy("127.0.0.1", make_url(migrated).port or 5432).start()
    engine = create_imgq_engine(_proxied(migrated, proxy))
    try:
        with engine.connect() as connection:
            assert connection.execute(text("select 1")).scalar() == 1
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        assert proxy.cut() == 1

        # the pooled connection is dead; pre-ping notices and reconnects
        with engine.connect() as connection:
            assert connection.execute(text("select 2")).scalar() == 2
        assert proxy.accepted == 2
    finally:
        engine.dispose()
        proxy.close()
