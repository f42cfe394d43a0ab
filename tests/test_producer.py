"""Where paths come from, which are refused, and the folder watcher."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select
from worker_process import write_png

from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.db.schema import Batch, Failure, Image, JobImage
from imgq.errors import PathRefusedError
from imgq.producer.paths import Candidate, iter_candidates
from imgq.producer.submit import submit
from imgq.producer.watch import FolderWatcher


def _roots(tmp_path: Path) -> tuple[Path, ...]:
    return (tmp_path.resolve(),)


def test_folders_are_walked_recursively_for_image_files_only(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "cat" / "1.png")
    write_png(tmp_path / "a" / "dog" / "deep" / "2.PNG")
    (tmp_path / "a" / "readme.txt").write_text("not an image")
    write_png(tmp_path / "a" / ".hidden" / "3.png")

    found = list(
        iter_candidates(
            [str(tmp_path / "a")], roots=_roots(tmp_path), labels_from_dirs=True
        )
    )

    assert [(Path(c.path).name, c.true_label) for c in found] == [
        ("1.png", "cat"),
        ("2.PNG", "deep"),
    ]


def test_a_folder_gives_real_paths_and_a_file_link_inside_the_roots_is_followed(
    tmp_path: Path,
) -> None:
    write_png(tmp_path / "store" / "original.png")
    folder = tmp_path / "line"
    write_png(folder / "own.png")
    (folder / "linked.png").symlink_to(tmp_path / "store" / "original.png")
    # the folder is named through a link of its own
    (tmp_path / "alias").symlink_to(folder, target_is_directory=True)

    found = list(iter_candidates([str(tmp_path / "alias")], roots=_roots(tmp_path)))

    real = tmp_path.resolve()
    assert found == [
        Candidate(str(real / "store" / "original.png")),
        Candidate(str(real / "line" / "own.png")),
    ]


def test_labels_from_dirs_are_the_folder_names_given_not_their_link_targets(
    tmp_path: Path,
) -> None:
    write_png(tmp_path / "storage" / "x17" / "1.png")
    (tmp_path / "cat").symlink_to(tmp_path / "storage" / "x17")

    found = list(
        iter_candidates(
            [str(tmp_path / "cat") + "/"], roots=_roots(tmp_path), labels_from_dirs=True
        )
    )

    assert [(Path(c.path).parent.name, c.true_label) for c in found] == [("x17", "cat")]


def test_a_pipe_named_like_an_image_is_left_out_of_a_folder_not_opened(
    tmp_path: Path,
) -> None:
    write_png(tmp_path / "line" / "a.png")
    os.mkfifo(tmp_path / "line" / "b.png")

    found = list(iter_candidates([str(tmp_path / "line")], roots=_roots(tmp_path)))

    assert [Path(c.path).name for c in found] == ["a.png"]


def test_manifest_rows_give_paths_relative_to_the_manifest_and_labels(
    tmp_path: Path,
) -> None:
    write_png(tmp_path / "img" / "a.png")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\nimg/a.png,ok\nimg/b.png,\n\n")

    found = list(iter_candidates([str(manifest)], roots=_roots(tmp_path)))

    assert found == [
        Candidate(str(tmp_path / "img" / "a.png"), "ok"),
        Candidate(str(tmp_path / "img" / "b.png"), None),
    ]


def test_a_manifest_without_a_header_reads_path_then_label(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"{tmp_path}/x.png,defective\n")

    found = list(iter_candidates([str(manifest)], roots=_roots(tmp_path)))

    assert found == [Candidate(str(tmp_path / "x.png"), "defective")]


def test_paths_on_standard_input_and_globs_are_streamed(tmp_path: Path) -> None:
    for name in ("1.png", "2.png", "3.jpg"):
        write_png(tmp_path / name)
    stdin = io.StringIO(f"{tmp_path}/1.png\n\n{tmp_path}/3.jpg\n")

    from_stdin = list(iter_candidates(["-"], roots=_roots(tmp_path), stdin=stdin))
    from_glob = list(iter_candidates([f"{tmp_path}/*.png"], roots=_roots(tmp_path)))

    assert [Path(c.path).name for c in from_stdin] == ["1.png", "3.jpg"]
    assert sorted(Path(c.path).name for c in from_glob) == ["1.png", "2.png"]


def test_a_named_source_outside_the_allowed_roots_stops_the_submission(
    tmp_path: Path,
) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()

    with pytest.raises(PathRefusedError, match="outside the allowed roots"):
        list(iter_candidates(["/etc/passwd"], roots=(inside,)))
    with pytest.raises(PathRefusedError):
        list(iter_candidates([str(inside / "..")], roots=(inside,)))


def test_a_symlink_out_of_the_roots_is_refused_and_recorded(
    model_version: int, tmp_path: Path
) -> None:
    folder = tmp_path / "line"
    write_png(folder / "good.png")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    write_png(outside, value=7)
    os.symlink(outside, folder / "escape.png")

    roots = get_settings().resolved_allowed_roots
    result = submit(iter_candidates([str(folder)], roots=roots), source="line")

    assert (result.images, result.refused) == (1, 1)
    with session_scope() as session:
        failure = session.scalars(select(Failure)).one()
        assert failure.kind == "refused"
        assert "outside the allowed roots" in failure.message
        assert session.scalar(select(func.count()).select_from(Image)) == 1


def test_a_missing_file_in_a_manifest_is_a_failure_row_not_an_error(
    model_version: int, tmp_path: Path
) -> None:
    write_png(tmp_path / "here.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nhere.png\ngone.png\n")

    roots = get_settings().resolved_allowed_roots
    result = submit(iter_candidates([str(manifest)], roots=roots), source="m")

    assert (result.images, result.unreadable) == (1, 1)
    with session_scope() as session:
        assert session.scalars(select(Failure.kind)).all() == ["missing"]


def test_watcher_takes_a_file_only_after_it_stops_changing(tmp_path: Path) -> None:
    settings = get_settings().replace(watch_settle=2.0, watch_batch_wait=5.0)
    now = [100.0]
    batches: list[list[Candidate]] = []
    watcher = FolderWatcher(tmp_path, settings, batches.append, clock=lambda: now[0])
    growing = tmp_path / "part.png"
    growing.write_bytes(b"\x89PNG half")
    (tmp_path / "upload.png.part").write_bytes(b"staged")

    watcher.poll()
    now[0] += 3
    growing.write_bytes(b"\x89PNG half and the rest")
    watcher.poll()
    assert watcher.flush() == 0

    now[0] += 3
    watcher.poll()
    assert watcher.flush() == 1
    assert [Path(c.path).name for c in batches[0]] == ["part.png"]
    now[0] += 10
    watcher.poll()
    assert watcher.flush() == 0


def test_watcher_submits_by_size_or_by_maximum_wait(tmp_path: Path) -> None:
    settings = get_settings().replace(
        watch_settle=0.0, watch_batch_wait=5.0, chunk_size=3
    )
    now = [0.0]
    batches: list[list[Candidate]] = []
    watcher = FolderWatcher(tmp_path, settings, batches.append, clock=lambda: now[0])
    for number in range(4):
        write_png(tmp_path / f"{number}.png")

    watcher.poll()  # notes the files
    now[0] += 1
    watcher.poll()  # all four settled: a full batch of three goes at once
    assert [len(batch) for batch in batches] == [3]
    now[0] += 4
    watcher.poll()
    assert [len(batch) for batch in batches] == [3]
    now[0] += 2
    watcher.poll()  # the last one has waited long enough
    assert [len(batch) for batch in batches] == [3, 1]


def test_watch_ingests_files_written_while_it_runs(
    model_version: int, tmp_path: Path
) -> None:
    settings = get_settings().replace(
        watch_settle=0.2, watch_batch_wait=0.2, watch_interval=0.05
    )
    folder = tmp_path / "drop"
    folder.mkdir()
    write_png(folder / "before.png", value=1)
    jobs: list[int] = []

    def send(batch: list[Candidate]) -> None:
        jobs.append(submit(batch, source="watch").job_id)

    watcher = FolderWatcher(folder, settings, send)
    watcher.run(stop_after=0.5)
    for number in range(3):
        write_png(folder / f"late-{number}.png", value=10 + number)
    watcher.run(stop_after=1.0)

    assert watcher.submitted_files == 4
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(JobImage)) == 4
        queued = session.scalar(select(func.sum(Batch.image_count)))
        assert queued == 4
    assert len(jobs) >= 2
