"""Ingesting the files a production line drops into a folder.

A file is taken once its size and modification time have not changed for
``watch_settle`` seconds, so a half-written file is never read; names that
start with a dot or end in ``.tmp``/``.part`` (how most writers stage a file
before renaming it) are ignored. Ready files are submitted together when
``chunk_size`` of them are waiting or the oldest has waited
``watch_batch_wait`` seconds, whichever comes first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imgq.config import Settings
from imgq.producer.paths import FOLDER_SUFFIXES, Candidate, checked

log = logging.getLogger(__name__)

STAGING_SUFFIXES = {".tmp", ".part", ".partial", ".crdownload"}


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float


@dataclass
class FolderWatcher:
    """Scans a folder and hands ready files, in batches, to ``submit``."""

    folder: Path
    settings: Settings
    submit: Callable[[list[Candidate]], object]
    labels_from_dirs: bool = False
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _taken: set[str] = field(default_factory=set)
    _ready: list[Candidate] = field(default_factory=list)
    _oldest_ready: float | None = None
    submitted_files: int = 0

    def skip_existing(self) -> int:
        """Treat the files already there as taken; returns how many."""
        for path in self._scan():
            self._taken.add(path)
        return len(self._taken)

    def poll(self) -> int:
        """One scan: note changes, move settled files to the ready list, and
        submit if a batch is due; returns the number of files submitted."""
        now = self.clock()
        for path in self._scan():
            if path in self._taken:
                continue
            try:
                status = os.stat(path)
            except FileNotFoundError:
                continue
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (
                status.st_size,
                status.st_mtime_ns,
            ):
                self._seen[path] = _Seen(status.st_size, status.st_mtime_ns, now)
            elif now - seen.stable_since >= self.settings.watch_settle:
                self._take(path, now)
        return self._submit_if_due(now)

    def flush(self) -> int:
        """Submit whatever is ready now; returns the number of files."""
        return self._submit(len(self._ready))

    def run(self, *, stop_after: float | None = None) -> None:
        """Poll until interrupted (or for ``stop_after`` seconds)."""
        started = self.clock()
        try:
            while stop_after is None or self.clock() - started < stop_after:
                self.poll()
                time.sleep(self.settings.watch_interval)
        finally:
            self.flush()

    def _scan(self) -> list[str]:
        found = []
        for directory, subdirectories, files in os.walk(self.folder):
            subdirectories[:] = sorted(
                d for d in subdirectories if not d.startswith(".")
            )
            for name in sorted(files):
                suffix = Path(name).suffix.lower()
                if name.startswith(".") or suffix in STAGING_SUFFIXES:
                    continue
                if suffix in FOLDER_SUFFIXES:
                    found.append(os.path.join(directory, name))
        return found

    def _take(self, path: str, now: float) -> None:
        self._taken.add(path)
        self._seen.pop(path, None)
        label = Path(path).parent.name if self.labels_from_dirs else None
        self._ready.append(checked(path, self.settings.resolved_allowed_roots, label))
        if self._oldest_ready is None:
            self._oldest_ready = now

    def _submit_if_due(self, now: float) -> int:
        if not self._ready:
            return 0
        if len(self._ready) >= self.settings.chunk_size:
            return self._submit(self.settings.chunk_size)
        assert self._oldest_ready is not None
        if now - self._oldest_ready >= self.settings.watch_batch_wait:
            return self._submit(len(self._ready))
        return 0

    def _submit(self, count: int) -> int:
        if count == 0:
            return 0
        batch, self._ready = self._ready[:count], self._ready[count:]
        self._oldest_ready = self.clock() if self._ready else None
        self.submit(batch)
        self.submitted_files += len(batch)
        log.info("watch %s: submitted %d files", self.folder, len(batch))
        return len(batch)
