"""``imgq health``: is each part of a deployment up, and are the workers ready?

Four parts, each checked with a short timeout and reported on one line:
the broker (a Redis ping with the configured URL and password, or the
embedded queue's folder), the database (a query, and the schema at the newest
migration), the workers that serve this deployment's queues (a Celery
broadcast), and their readiness (the ``imgq_ready`` command: every pool
process has loaded and warmed up its model). Workers of other deployments on
the same Redis are left out: only those consuming the fresh or background
queue count.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import redis
from kombu.utils.url import maybe_sanitize_url
from redis.exceptions import AuthenticationError, RedisError
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from imgq.config import Settings
from imgq.db.engine import normalize_url
from imgq.db.migrate import head_revision
from imgq.ops.worker import READY_COMMAND
from imgq.worker.app import embedded_queue_folder, make_celery


@dataclass(frozen=True)
class PartHealth:
    """The state of one part: up or down, and what was found."""

    part: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        if not self.ok:
            return f"{self.part}: down: {self.detail}"
        return f"{self.part}: ok ({self.detail})" if self.detail else f"{self.part}: ok"


def check_all(settings: Settings, *, timeout: float) -> list[PartHealth]:
    """Check the broker, the database, the workers and their readiness."""
    broker = check_broker(settings, timeout=timeout)
    database = check_database(settings, timeout=timeout)
    if not broker.ok:
        reason = "the broker is down, so no worker can be asked"
        workers = [PartHealth("workers", False, reason)]
        workers.append(PartHealth("readiness", False, reason))
    else:
        workers = list(check_workers(settings, timeout=timeout))
    return [broker, database, *workers]


def check_broker(settings: Settings, *, timeout: float) -> PartHealth:
    """Ping Redis with the configured URL and password (or check the queue folder)."""
    url = settings.resolved_broker_url
    if url.startswith("filesystem://"):
        folder = embedded_queue_folder(settings)
        if not os.access(folder, os.W_OK):
            return PartHealth("queue", False, f"cannot write to {folder}")
        return PartHealth("queue", True, f"embedded queue in {folder}")

    shown = maybe_sanitize_url(url)
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.ping()
    except AuthenticationError as error:
        detail = f"{shown}: {error} (check IMGQ_REDIS_PASSWORD)"
        return PartHealth("redis", False, detail)
    except RedisError as error:
        return PartHealth("redis", False, f"{shown}: {error}")
    finally:
        client.close()
    return PartHealth("redis", True, shown)


def check_database(settings: Settings, *, timeout: float) -> PartHealth:
    """Run a query on the database and compare its schema with the newest one."""
    url = normalize_url(settings.resolved_database_url)
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    database_file = parsed.database or ""
    is_file = parsed.get_backend_name() == "sqlite" and database_file != ":memory:"
    if is_file and not os.path.exists(database_file):
        reason = f"no database at {database_file or '(none)'}: run 'imgq db upgrade'"
        return PartHealth("database", False, reason)

    engine = _probe_engine(url, timeout=timeout)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            current = _schema_revision(connection)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        return PartHealth("database", False, f"{shown}: {reason}")
    finally:
        engine.dispose()
    head = head_revision()
    if current != head:
        return PartHealth(
            "database",
            False,
            f"{shown} is at schema {current}, imgq needs {head}: run 'imgq db upgrade'",
        )
    return PartHealth("database", True, f"{shown}, schema {head}")


def _schema_revision(connection: Connection) -> str | None:
    """Alembic's revision of the database, read without Alembic's log lines."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _probe_engine(url: str, *, timeout: float) -> Engine:
    """An engine with no pool that gives up connecting after ``timeout``."""
    if make_url(url).get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": max(1, math.ceil(timeout))}
    elif make_url(url).get_backend_name() == "sqlite":
        connect_args = {"timeout": timeout}
    else:
        connect_args = {}
    return create_engine(url, poolclass=NullPool, connect_args=connect_args)


def check_workers(
    settings: Settings, *, timeout: float
) -> tuple[PartHealth, PartHealth]:
    """The workers serving this deployment's queues, and their readiness.

    Replies are matched by the queues they name, not by node name alone: two
    deployments on one Redis may both run a worker called ``imgq-cpu@host``.
    """
    queues = {settings.fresh_queue, settings.background_queue}
    app = make_celery(settings)
    with app.connection_for_write() as connection:
        answers = app.control.broadcast(
            "active_queues", reply=True, timeout=timeout, connection=connection
        )
        nodes = sorted(
            {
                node
                for answer in answers or []
                for node, node_queues in answer.items()
                if queues & {queue["name"] for queue in node_queues or []}
            }
        )
        if not nodes:
            reason = (
                f"no worker serving {settings.fresh_queue} answered "
                f"within {timeout:g} s"
            )
            return PartHealth("workers", False, reason), PartHealth(
                "readiness", False, "no worker to ask"
            )
        replies = app.control.broadcast(
            READY_COMMAND,
            reply=True,
            timeout=timeout,
            destination=nodes,
            connection=connection,
        )
    workers = PartHealth("workers", True, ", ".join(nodes))
    return workers, _readiness(nodes, replies or [], queues=queues)


def _readiness(
    nodes: list[str], replies: list[dict[str, Any]], *, queues: set[str]
) -> PartHealth:
    answers: dict[str, dict[str, Any]] = {}
    for reply in replies:
        for node, answer in reply.items():
            if queues & set(answer.get("queues", [])) or node not in answers:
                answers[node] = answer
    ready: list[str] = []
    waiting: list[str] = []
    for node in nodes:
        answer = answers.get(node)
        if answer is None:
            waiting.append(f"{node} did not answer")
        elif "error" in answer or "reason" in answer:
            reason = answer.get("error") or answer.get("reason")
            waiting.append(f"{node} cannot tell ({reason})")
        elif not answer.get("ready"):
            waiting.append(
                f"{node} is loading its model ({answer.get('ready_processes', 0)} of "
                f"{answer.get('processes', 0)} pool processes ready)"
            )
        else:
            models = ", ".join(answer.get("models") or []) or "no model"
            ready.append(f"{node}: model {models}")
    if waiting:
        return PartHealth("readiness", False, "; ".join(waiting))
    return PartHealth("readiness", True, "; ".join(ready))
