"""Bad input through the real pipeline: submitted, worked by ``imgq worker``.

One run per database: a job of good digits mixed with every bad file of
RELIABILITY.md, with a pickled message queued ahead of it; then a job with a
decompression bomb while the worker's peak memory is watched; then the first
job's messages delivered a second time. The tests read the outcome.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REDIS_URL, _create_postgres_database, _drop_postgres_database
from kombu import Connection
from sqlalchemy import func, inspect, select, text
from support import WorkerProcess, peak_rss_kib, wait_until, worker_env
from support_images import (
    SQL_LOOKING,
    write_16bit,
    write_cmyk,
    write_exif_rotated,
    write_float,
    write_ico,
    write_palette,
    write_png_bomb,
    write_rgba,
    write_text,
    write_truncated_jpeg,
    write_truncated_tga,
    write_zero_bytes,
)
from support_jobs import (
    batch_attempts,
    broker_client,
    digit_path,
    end_state,
    queued_messages,
    submit_sources,
    wait_for_done,
    write_digit,
    write_digits,
)

from imgq import config
from imgq.db import engine as db_engine
from imgq.db.engine import get_engine, session_scope
from imgq.db.migrate import upgrade
from imgq.db.schema import Failure, Image, Prediction
from imgq.models import registry
from imgq.models.preprocessing import (
    KIND_FORMAT_REFUSED,
    KIND_MISSING,
    KIND_NOT_AN_IMAGE,
    KIND_TOO_LARGE,
    KIND_TRUNCATED,
    KIND_UNREADABLE,
    KIND_UNSUPPORTED_MODE,
    PreprocessSpec,
    preprocess_file,
)
from imgq.worker.app import CLASSIFY_TASK, reset_app

pytestmark = pytest.mark.slow

REFERENCES = 10  # digits 0..9 as plain 8-bit PNGs
CONVERTED = ("sixteen_bit.png", "palette.png", "rgba.png", "cmyk.tif")
# grows past the model and a batch of 28x28 images only if the bomb is decoded
RSS_GROWTH_LIMIT_KIB = 64 * 1024


class Trap:
    """Unpickling this runs ``os.mkdir(marker)``: proof that pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.marker,))


@dataclass
class Run:
    """What one pipeline run over the bad input left behind."""

    url: str
    root: Path
    jobs: dict[str, int] = field(default_factory=dict)
    log: str = ""
    marker: Path = Path()
    peak_before_kib: int = 0
    peak_after_kib: int = 0
    rows_before_redelivery: int = 0
    rows_after_redelivery: int = 0
    messages_left: int = -1
    attempts_after_redelivery: dict[int, int] = field(default_factory=dict)

    def path(self, name: str) -> str:
        return str((self.root / "images" / "bad" / name).resolve())

    def failure(self, path: str) -> tuple[str, str]:
        """(kind, message) of the one failure row of ``path``."""
        with session_scope(get_engine(self.url)) as session:
            rows = session.execute(
                select(Failure.kind, Failure.message).where(Failure.path == path)
            ).all()
        assert len(rows) == 1, f"{path}: {rows}"
        return rows[0][0], rows[0][1]

    def prediction(self, path: str) -> tuple[str, list[float]]:
        """(label, probabilities) of the one prediction of the image at ``path``."""
        with session_scope(get_engine(self.url)) as session:
            rows = session.execute(
                select(Prediction.label, Prediction.probabilities)
                .join(Image, Image.id == Prediction.image_id)
                .where(Image.path == path)
            ).all()
        assert len(rows) == 1, f"{path}: {rows}"
        return rows[0][0], list(rows[0][1])

    def reference(self, index: int) -> str:
        return str(digit_path(self.root / "images", index).resolve())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    digits_model_file: dict[str, object],
) -> Iterator[Run]:
    """Submit the bad input, run a worker over it, and record what happened."""
    root = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'imgq.db'}"
    else:
        url = _create_postgres_database()
    suffix = uuid.uuid4().hex[:10]
    queue = f"test.bad.{suffix}"
    settings = {
        "data_dir": root / "data",
        "allowed_roots": root,
        "broker_url": REDIS_URL,
        "database_url": url,
        "fresh_queue": queue,
        "background_queue": f"test.bad-background.{suffix}",
        "batch_size": 8,
    }
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in [name for name in os.environ if name.startswith("IMGQ_")]:
            if not name.startswith("IMGQ_TEST_"):
                monkeypatch.delenv(name)
        for name, value in settings.items():
            monkeypatch.setenv(f"IMGQ_{name.upper()}", str(value))
        config.get_settings.cache_clear()
        reset_app()
        try:
            yield _run_pipeline(Run(url=url, root=root), digits_model_file)
        finally:
            broker_client().delete(queue)
            config.get_settings.cache_clear()
            reset_app()
            db_engine.dispose_all()
            if request.param == "postgresql":
                _drop_postgres_database(url)


def _run_pipeline(run: Run, model_file: dict[str, object]) -> Run:
    upgrade(run.url)
    _register_model(run.root, model_file)
    manifest = _write_input(run.root)
    run.marker = run.root / "pickle-was-loaded"
    _publish_pickled_message(run.marker)

    job = submit_sources(run.root / "images", manifest).job_id
    run.jobs["bad"] = job
    queue = config.get_settings().fresh_queue
    raw_messages = [
        raw for raw in broker_client().lrange(queue, 0, -1) if isinstance(raw, bytes)
    ]
    # gone, or no longer a file, between submission and work
    (run.root / "images" / "bad" / "vanished.png").unlink()
    turned = run.root / "images" / "bad" / "turned_into_a_folder.png"
    turned.unlink()
    turned.mkdir()

    worker = WorkerProcess(run.root / "worker.log", env=worker_env()).start()
    try:
        wait_for_done(job)
        _run_bomb_job(run, worker)
        _deliver_again(run, job, raw_messages)
        worker.raise_if_exited()
        run.messages_left = queued_messages()
    finally:
        worker.stop()
        run.log = worker.log()
    return run


def _register_model(root: Path, model_file: dict[str, object]) -> None:
    copy = root / "models" / "digits-cnn.keras"
    copy.parent.mkdir(parents=True)
    shutil.copy(str(model_file["path"]), copy)
    with session_scope() as session:
        version = registry.register_file(
            session,
            copy,
            name="digits-cnn",
            architecture="cnn",
            class_names=model_file["class_names"],  # type: ignore[arg-type]
            spec=model_file["spec"],  # type: ignore[arg-type]
            metrics={},
            data_fingerprint=str(model_file["fingerprint"]),
        )
        registry.promote(session, version.id)


def _write_input(root: Path) -> Path:
    """Good digits, every bad file, and a manifest of the names a folder hides."""
    images = root / "images"
    write_digits(images, REFERENCES)
    bad = images / "bad"
    bad.mkdir()
    write_zero_bytes(bad / "empty.png")
    write_text(bad / "shopping_list.png")
    write_truncated_jpeg(bad / "truncated.jpg")
    write_16bit(bad / "sixteen_bit.png", 1)
    write_palette(bad / "palette.png", 2)
    write_rgba(bad / "rgba.png", 3)
    write_cmyk(bad / "cmyk.tif", 4)
    write_float(bad / "float.tif", 5)
    write_exif_rotated(bad / "exif_rotated.jpg", 7)
    write_ico(bad / "icon_named.png", red=100)
    write_digit(bad / "vanished.png", 11)
    write_digit(bad / "turned_into_a_folder.png", 12)
    write_digit(images / SQL_LOOKING / f"{SQL_LOOKING}.png", 13)

    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(["path", "label"])
        rows.writerow([write_ico(bad / "icon.ico"), "icon"])
        rows.writerow([write_truncated_tga(bad / "picture.tga"), "picture"])
        rows.writerow([bad / "never_existed.png", "ghost"])
    return manifest


def _publish_pickled_message(marker: Path) -> None:
    """A classify message serialised with pickle, ahead of the real job."""
    settings = config.get_settings()
    with Connection(settings.resolved_broker_url) as connection:
        connection.Producer(serializer="pickle").publish(
            ((), {"job_id": 1, "trap": Trap(str(marker))}, {}),
            routing_key=settings.fresh_queue,
            headers={"task": CLASSIFY_TASK, "id": uuid.uuid4().hex, "lang": "py"},
        )


def _run_bomb_job(run: Run, worker: WorkerProcess) -> None:
    """A job holding a decompression bomb; the pool process's peak RSS around it."""
    (child,) = wait_until(worker.children, timeout=30, what="the pool process")
    run.peak_before_kib = peak_rss_kib(child)
    bomb_folder = run.root / "images" / "bomb"
    bomb_folder.mkdir()
    write_png_bomb(bomb_folder / "bomb.png")
    write_digits(bomb_folder, 2, start=100)

    run.jobs["bomb"] = submit_sources(bomb_folder).job_id
    wait_for_done(run.jobs["bomb"])
    assert worker.children() == [child], "the pool process was replaced"
    run.peak_after_kib = peak_rss_kib(child)


def _deliver_again(run: Run, job_id: int, raw_messages: list[bytes]) -> None:
    """Push the job's messages, byte for byte, onto the queue a second time."""
    run.rows_before_redelivery = _rows(run.url)
    job_messages = [raw for raw in raw_messages if b"x-python-serialize" not in raw]
    before = batch_attempts(job_id)
    broker_client().lpush(config.get_settings().fresh_queue, *job_messages)
    wait_until(
        lambda: all(
            batch_attempts(job_id)[batch] > attempts
            for batch, attempts in before.items()
        ),
        timeout=60,
        what="the batches to run a second time",
    )
    run.attempts_after_redelivery = batch_attempts(job_id)
    run.rows_after_redelivery = _rows(run.url)


def _rows(url: str) -> int:
    with session_scope(get_engine(url)) as session:
        predictions = session.scalar(select(func.count()).select_from(Prediction))
        failures = session.scalar(select(func.count()).select_from(Failure))
    return int(predictions or 0) + int(failures or 0)


# ----------------------------------------------------------------- the rows


def test_every_image_ends_with_exactly_one_result(run: Run) -> None:
    for job_id in run.jobs.values():
        end_state(job_id, run.url).check()


def test_zero_byte_file_is_recorded_as_not_an_image(run: Run) -> None:
    assert run.failure(run.path("empty.png"))[0] == KIND_NOT_AN_IMAGE


def test_text_file_named_png_is_recorded_as_not_an_image(run: Run) -> None:
    assert run.failure(run.path("shopping_list.png"))[0] == KIND_NOT_AN_IMAGE


def test_the_rest_of_the_batch_is_classified(run: Run) -> None:
    # one batch held the good digits and the bad files alike
    assert len(batch_attempts(run.jobs["bad"], run.url)) == 1
    for index in range(REFERENCES):
        label, _ = run.prediction(run.reference(index))
        assert label.isdigit()


def test_truncated_jpeg_is_recorded_as_truncated(run: Run) -> None:
    kind, message = run.failure(run.path("truncated.jpg"))
    assert kind == KIND_TRUNCATED, message


def test_decompression_bomb_is_refused_and_memory_stays_flat(run: Run) -> None:
    bomb = str((run.root / "images" / "bomb" / "bomb.png").resolve())
    kind, message = run.failure(bomb)
    assert kind == KIND_TOO_LARGE, message
    assert "400000000" in message
    growth = run.peak_after_kib - run.peak_before_kib
    assert growth < RSS_GROWTH_LIMIT_KIB, f"peak RSS grew by {growth} KiB"


@pytest.mark.parametrize("name", CONVERTED)
def test_converted_modes_give_the_prediction_of_their_8bit_original(
    run: Run, name: str
) -> None:
    digit = CONVERTED.index(name) + 1
    label, probabilities = run.prediction(run.path(name))
    reference_label, reference = run.prediction(run.reference(digit))
    assert label == reference_label
    np.testing.assert_allclose(probabilities, reference, atol=1e-5)


def test_floating_point_image_is_rejected_with_a_reason(run: Run) -> None:
    kind, message = run.failure(run.path("float.tif"))
    assert kind == KIND_UNSUPPORTED_MODE
    assert "floating-point" in message


def test_exif_rotated_photo_is_classified_the_way_a_viewer_shows_it(
    run: Run, digits_model_file: dict[str, object]
) -> None:
    path = run.path("exif_rotated.jpg")
    label, _ = run.prediction(path)
    assert label == run.prediction(run.reference(7))[0]

    # the policy itself: the orientation tag is applied before resizing
    spec: PreprocessSpec = digits_model_file["spec"]  # type: ignore[assignment]
    upright = preprocess_file(run.reference(7), spec)
    seen = preprocess_file(path, spec)
    assert np.abs(seen - upright).mean() < 0.02
    assert np.abs(np.rot90(seen) - upright).mean() > 0.05


def test_formats_outside_the_allow_list_are_refused_before_decoding(
    run: Run,
) -> None:
    for name, format_name in [
        ("icon.ico", "ICO"),
        ("icon_named.png", "ICO"),
        # a TGA cut in half: decoding it would have failed as truncated
        ("picture.tga", "TGA"),
    ]:
        kind, message = run.failure(run.path(name))
        assert kind == KIND_FORMAT_REFUSED, message
        assert f"is {format_name}, not one of" in message


def test_file_gone_before_the_worker_reads_it_is_recorded_as_missing(
    run: Run,
) -> None:
    assert run.failure(run.path("vanished.png"))[0] == KIND_MISSING


def test_path_that_became_a_folder_is_recorded_as_unreadable(run: Run) -> None:
    assert run.failure(run.path("turned_into_a_folder.png"))[0] == KIND_UNREADABLE


def test_missing_path_in_a_manifest_is_recorded_at_submission(run: Run) -> None:
    with session_scope(get_engine(run.url)) as session:
        image_id, kind = session.execute(
            select(Failure.image_id, Failure.kind).where(
                Failure.path == run.path("never_existed.png")
            )
        ).one()
    assert (image_id, kind) == (None, KIND_MISSING)


def test_pickled_message_is_discarded_unexecuted_and_the_worker_goes_on(
    run: Run,
) -> None:
    assert not run.marker.exists(), "the pickle was loaded"
    assert "Refusing to deserialize untrusted content of type pickle" in run.log
    assert run.messages_left == 0, "the refused message was dropped, not requeued"
    # the job queued behind the pickled message was worked and finished
    end_state(run.jobs["bad"], run.url).check()


def test_sql_looking_label_and_path_are_stored_and_queried_literally(
    run: Run,
) -> None:
    path = str((run.root / "images" / SQL_LOOKING / f"{SQL_LOOKING}.png").resolve())
    engine = get_engine(run.url)
    assert "images" in inspect(engine).get_table_names()
    with session_scope(engine) as session:
        stored = session.execute(
            select(Image.path, Image.true_label).where(Image.true_label == SQL_LOOKING)
        ).one()
        by_text = session.execute(
            text("SELECT count(*) FROM images WHERE path = :path"), {"path": path}
        ).scalar()
    assert tuple(stored) == (path, SQL_LOOKING)
    assert by_text == 1
    label, _ = run.prediction(path)
    assert label.isdigit()


def test_the_same_batch_delivered_twice_adds_no_rows(run: Run) -> None:
    assert run.rows_after_redelivery == run.rows_before_redelivery
    assert set(run.attempts_after_redelivery.values()) == {2}
    end_state(run.jobs["bad"], run.url).check()
