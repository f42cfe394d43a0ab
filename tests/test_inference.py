"""The worker's batch path: fixed shapes, padding, overlap, bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from worker_process import write_digits

from imgq.models.preprocessing import DecodeLimits, preprocess_file
from imgq.models.registry import LoadedModel
from imgq.worker.inference import BatchClassifier

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def classifier(digits_model_file: dict[str, object]) -> BatchClassifier:
    loaded = LoadedModel(
        version_id=1,
        name="digits",
        model=keras.saving.load_model(digits_model_file["path"], compile=False),
        spec=digits_model_file["spec"],  # type: ignore[arg-type]
        class_names=digits_model_file["class_names"],  # type: ignore[arg-type]
    )
    return BatchClassifier(
        loaded, batch_size=8, decode_threads=2, limits=DecodeLimits()
    )


def test_short_last_batch_is_padded_and_the_function_is_traced_once(
    classifier: BatchClassifier, tmp_path: Path
) -> None:
    written = write_digits(tmp_path, 19)
    items = [(number, str(path)) for number, (path, _) in enumerate(written)]

    classifier.warm_up()
    results = list(classifier.classify(items))

    assert [len(result.image_ids) for result in results] == [8, 8, 3]
    assert all(result.probabilities.shape[1] == 10 for result in results)
    assert classifier.forward.experimental_get_tracing_count() == 1


def test_batched_answers_equal_one_image_at_a_time(
    classifier: BatchClassifier, tmp_path: Path
) -> None:
    written = write_digits(tmp_path, 5)
    items = [(number, str(path)) for number, (path, _) in enumerate(written)]

    (result,) = list(classifier.classify(items))

    for row, (_, path) in enumerate(items):
        alone = classifier.loaded.model(
            preprocess_file(path, classifier.loaded.spec)[np.newaxis]
        )
        np.testing.assert_allclose(result.probabilities[row], alone[0], atol=1e-5)


def test_a_batch_holds_exactly_the_inputs_preprocess_file_gives(
    classifier: BatchClassifier, tmp_path: Path
) -> None:
    written = write_digits(tmp_path, 5)
    items = [(number, str(path)) for number, (path, _) in enumerate(written)]

    list(classifier.classify(items))

    # the worker scales its batch in one step; the numbers must not change
    expected = np.stack(
        [preprocess_file(path, classifier.loaded.spec) for _, path in items]
    )
    np.testing.assert_array_equal(classifier._inputs[:5], expected)
    assert not classifier._inputs[5:].any(), "padding rows are zeros"


def test_a_bad_file_is_reported_and_the_rest_of_its_batch_is_classified(
    classifier: BatchClassifier, tmp_path: Path
) -> None:
    written = write_digits(tmp_path, 6)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but nothing after the signature")
    items = [(number, str(path)) for number, (path, _) in enumerate(written)]
    items.insert(2, (99, str(broken)))
    items.append((100, str(tmp_path / "gone.png")))

    results = list(classifier.classify(items))

    classified = [image_id for result in results for image_id in result.image_ids]
    failures = {f[0]: f[2] for result in results for f in result.failures}
    assert classified == [0, 1, 2, 3, 4, 5]
    assert failures == {99: "not_an_image", 100: "missing"}


@pytest.mark.slow
def test_gpu_check_script_runs_and_reports_on_a_machine_without_a_gpu() -> None:
    finished = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_check.py"),
            "--seconds",
            "0.5",
            "--photos",
            "16",
            "--batch-size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "bare forward, batch 8:" in finished.stdout
    assert "worker batch path" in finished.stdout
    assert "0 failed" in finished.stdout
