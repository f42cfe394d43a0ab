"""Real processes and services for the reliability tests.

``imgq worker`` subprocesses the test can kill, a private ``redis-server``
with append-only persistence, and a TCP proxy the test can cut or close.
"""

from __future__ import annotations

import contextlib
import os
import re
import select as io_select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import redis

T = TypeVar("T")

READY_TIMEOUT = 90.0
LOCKED_MESSAGE = "database is locked"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- workers


class WorkerProcess:
    """One ``imgq worker`` subprocess, its log file and its pool processes."""

    def __init__(
        self,
        log_path: Path,
        *,
        env: dict[str, str],
        pool: str = "prefork",
        concurrency: int = 1,
        name: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        self.env = env
        self.pool = pool
        self.concurrency = concurrency
        self.name = name or f"test-{log_path.stem}@{socket.gethostname()}"
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker in its own process group."""
        command = [
            sys.executable, "-m", "imgq", "worker",
            "--pool", self.pool,
            "--concurrency", str(self.concurrency),
            "--name", self.name,
            *self.extra_args,
        ]  # fmt: skip
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> WorkerProcess:
        """Wait until Celery consumes and every pool process has its model."""
        loaded_needed = 1 if self.pool != "prefork" else self.concurrency

        def ready() -> bool:
            self.raise_if_exited()
            text = self.log()
            return " ready." in text and text.count("warmed up") >= loaded_needed

        wait_until(ready, timeout=timeout, what=f"worker {self.name} to be ready")
        return self

    def raise_if_exited(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"worker {self.name} exited with {self.process.returncode}:\n"
                + self.log()[-4000:]
            )

    def children(self) -> list[int]:
        """Pids of the pool processes."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []

    def kill_child(self) -> int:
        """``kill -9`` the pool process; returns its pid."""
        children = wait_until(self.children, timeout=10, what="a pool process")
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def kill_all(self) -> None:
        """``kill -9`` the main process and its pool processes at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM: Celery's warm shutdown."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def stop(self) -> None:
        """Warm shutdown, then ``kill -9`` whatever is left of the group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout=10)


def peak_rss_kib(pid: int) -> int:
    """The highest resident memory a process has had, from /proc (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def worker_env(**overrides: object) -> dict[str, str]:
    """This process's environment (its IMGQ_* settings) with ``overrides``."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in overrides.items():
        env[f"IMGQ_{name.upper()}"] = str(value)
    return env


@contextlib.contextmanager
def running_workers(
    folder: Path,
    count: int = 1,
    *,
    ready: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[list[WorkerProcess]]:
    """Start ``count`` workers, wait until they are ready, stop them afterwards.

    Without ``env`` a worker gets this process's environment, so the test's
    ``IMGQ_*`` settings; its log is ``folder/worker-N.log``.
    """
    env = env or worker_env()
    workers = [
        WorkerProcess(folder / f"worker-{number}.log", env=env)
        for number in range(count)
    ]
    try:
        for worker in workers:
            worker.start()
        if ready:
            for worker in workers:
                worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


# ------------------------------------------------------------------ redis


class RedisServer:
    """A private ``redis-server`` with append-only persistence, fsync always."""

    def __init__(
        self, directory: Path, port: int | None = None, *, password: str | None = None
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5
        )

    def start(self) -> RedisServer:
        executable = shutil.which("redis-server")
        assert executable, "redis-server is not installed (apt-get install it)"
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.directory),
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "logfile": str(self.directory / "redis.log"),
        }
        if self.password:
            options["requirepass"] = self.password
        arguments = [
            part for name, value in options.items() for part in (f"--{name}", value)
        ]
        self.process = subprocess.Popen(
            [executable, *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=15, what=f"redis-server on {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "redis.log").read_text(errors="replace")
            raise AssertionError(f"redis-server exited:\n{log[-2000:]}")
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def shutdown(self) -> None:
        """SHUTDOWN: the server flushes its append-only file and exits."""
        with contextlib.suppress(redis.ConnectionError):
            self.client().shutdown()
        assert self.process is not None
        self.process.wait(30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


# ------------------------------------------------------------------ proxy


class TcpProxy:
    """Forwards a local port to ``target``; the test cuts or refuses connections.

    ``cut()`` closes every open connection and keeps accepting new ones (a
    network blip); ``close()`` also stops listening, so new connections are
    refused, until ``reopen()``.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections += [client, upstream]
                self.accepted += 1
            threading.Thread(
                target=self._pump, args=(client, upstream), daemon=True
            ).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = io_select.select(list(peers), [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            self._drop(client, upstream)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                if sock in self._connections:
                    self._connections.remove(sock)

    def cut(self) -> int:
        """Close every open connection; returns how many pairs were cut."""
        with self._lock:
            connections = list(self._connections)
        self._drop(*connections)
        return len(connections) // 2

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone does not
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self.cut()

    def reopen(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self.start()
