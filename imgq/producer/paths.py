"""Where the producer's paths come from, streamed one at a time.

Sources are folders (walked recursively, image suffixes only), globs, CSV
manifests (``path`` and an optional ``label`` column), single files, or ``-``
for one path per line on standard input. Nothing is collected into a list, so
a million-line manifest needs no more memory than a ten-line one.

Every path is resolved (symbolic links followed) and must lie under one of
the allowed roots; a named source outside them stops the submission, a file
inside a folder whose link points out of them is reported and skipped.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgq.errors import InputError, PathRefusedError

log = logging.getLogger(__name__)

FOLDER_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
}
MANIFEST_SUFFIXES = {".csv"}
GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class Candidate:
    """One path to submit, its true label when known, and why it is refused."""

    path: str
    true_label: str | None = None
    refused: str | None = None


def is_within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def checked(path: str, roots: tuple[Path, ...], label: str | None) -> Candidate:
    """A Candidate for ``path``, refused when it resolves outside ``roots``."""
    resolved = Path(path).expanduser().resolve()
    if not is_within(resolved, roots):
        shown = ", ".join(str(root) for root in roots)
        reason = f"{path} resolves to {resolved}, outside the allowed roots ({shown})"
        return Candidate(str(resolved), label, refused=reason)
    return Candidate(str(resolved), label)


def iter_candidates(
    sources: Iterable[str],
    *,
    roots: tuple[Path, ...],
    labels_from_dirs: bool = False,
    stdin: io.TextIOBase | None = None,
) -> Iterator[Candidate]:
    """Every path named by ``sources``, in order, checked against ``roots``."""
    for source in sources:
        if source == "-":
            yield from _from_lines(stdin or sys.stdin, roots)
        elif GLOB_CHARACTERS & set(source):
            yield from _from_glob(source, roots, labels_from_dirs)
        elif os.path.isdir(source):
            _require_within(source, roots)
            yield from _from_folder(source, roots, labels_from_dirs)
        elif Path(source).suffix.lower() in MANIFEST_SUFFIXES:
            _require_within(source, roots)
            yield from _from_manifest(source, roots)
        else:
            _require_within(source, roots)
            yield checked(source, roots, _dir_label(source, labels_from_dirs))


def _require_within(source: str, roots: tuple[Path, ...]) -> None:
    resolved = Path(source).expanduser().resolve()
    if not is_within(resolved, roots):
        shown = ", ".join(str(root) for root in roots)
        raise PathRefusedError(
            f"{source} is outside the allowed roots ({shown}); "
            "set IMGQ_ALLOWED_ROOTS to allow it"
        )


def _dir_label(path: str, labels_from_dirs: bool) -> str | None:
    return Path(path).parent.name if labels_from_dirs else None


def _from_folder(
    folder: str, roots: tuple[Path, ...], labels_from_dirs: bool
) -> Iterator[Candidate]:
    # The folder is resolved once. A walk that never follows a link to a
    # folder stays inside it, so only files that are links need resolving:
    # a resolve() per file costs more than the rest of a 28x28 submission.
    yield from _walk(
        folder, str(Path(folder).expanduser().resolve()), roots, labels_from_dirs
    )


def _walk(
    directory: str, resolved: str, roots: tuple[Path, ...], labels_from_dirs: bool
) -> Iterator[Candidate]:
    """The images under ``directory`` (whose real path is ``resolved``), sorted."""
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        log.warning("cannot list %s, its images are left out: %s", directory, error)
        return
    label = Path(directory).name if labels_from_dirs else None
    subdirectories = []
    for entry in entries:
        if entry.name.startswith("."):
            # no hidden files, and no descent into hidden folders
            continue
        if entry.is_dir(follow_symlinks=False):
            subdirectories.append(entry)
        elif os.path.splitext(entry.name)[1].lower() in FOLDER_SUFFIXES:
            if entry.is_symlink():
                # a link to a folder is not followed, as os.walk does not
                if not entry.is_dir():
                    yield checked(entry.path, roots, label)
            elif entry.is_file(follow_symlinks=False):
                # pipes and devices are skipped: opening one could block
                yield Candidate(os.path.join(resolved, entry.name), label)
    for entry in subdirectories:
        yield from _walk(
            entry.path, os.path.join(resolved, entry.name), roots, labels_from_dirs
        )


def _from_glob(
    pattern: str, roots: tuple[Path, ...], labels_from_dirs: bool
) -> Iterator[Candidate]:
    for path in glob.iglob(os.path.expanduser(pattern), recursive=True):
        if os.path.isfile(path):
            yield checked(path, roots, _dir_label(path, labels_from_dirs))


def _from_lines(lines: Iterable[str], roots: tuple[Path, ...]) -> Iterator[Candidate]:
    for line in lines:
        path = line.strip()
        if path:
            yield checked(path, roots, None)


def _from_manifest(manifest: str, roots: tuple[Path, ...]) -> Iterator[Candidate]:
    """Rows of ``path[,label]``; a first row naming the columns is optional."""
    base = Path(manifest).resolve().parent
    with open(manifest, newline="", encoding="utf-8") as file:
        rows: Iterator[list[str]] = csv.reader(file)
        first = next(rows, None)
        if first is None:
            return
        header = [cell.strip().lower() for cell in first]
        if "path" in header:
            path_column = header.index("path")
            label_column = header.index("label") if "label" in header else None
        else:
            path_column, label_column = 0, 1
            rows = _chain_first(first, rows)
        for number, row in enumerate(rows, start=2):
            if not row or not row[path_column].strip():
                continue
            if len(row) <= path_column:
                raise InputError(f"{manifest}:{number}: no path column")
            path = row[path_column].strip()
            if not os.path.isabs(path):
                # relative paths are relative to the manifest, not the shell
                path = str(base / path)
            label = None
            if label_column is not None and len(row) > label_column:
                label = row[label_column].strip() or None
            yield checked(path, roots, label)


def _chain_first(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest
