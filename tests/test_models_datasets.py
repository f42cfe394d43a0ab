"""Training data: the digits, MNIST from local files, and a folder of classes."""

from __future__ import annotations

import gzip
import logging
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgq.errors import DatasetError
from imgq.models.datasets import (
    Dataset,
    load_dataset,
    load_digits_dataset,
    load_folder_dataset,
    load_mnist_dataset,
    read_idx,
    split,
)
from imgq.models.preprocessing import PreprocessSpec

GREY_28 = PreprocessSpec(height=28, width=28, channels=1)
IDX_UNSIGNED_BYTE = 0x08


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an unsigned-byte array: magic, sizes, values."""
    header = struct.pack(">HBB", 0, IDX_UNSIGNED_BYTE, array.ndim)
    sizes = struct.pack(f">{array.ndim}I", *array.shape)
    return header + sizes + array.astype(np.uint8).tobytes()


def fake_mnist(train_count: int = 30, test_count: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "x_train": rng.integers(0, 256, (train_count, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, train_count, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (test_count, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, test_count, dtype=np.uint8),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Keras' mnist.npz layout: one array per key."""
    np.savez(
        path,
        x_train=arrays["x_train"],
        y_train=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
    )
    return path


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    folder.mkdir()
    for key, stem in names.items():
        # the distribution's layout: gzipped, except one plain file for variety
        if key == "y_test":
            (folder / stem).write_bytes(idx_bytes(arrays[key]))
        else:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arrays[key])))
    return folder


def save_square(path: Path, mode: str, size: int, value: int) -> None:
    """An image of one grey ``value`` in ``mode``, saved under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        pixels = np.full((size, size), value * 257, dtype=np.uint16)
        Image.fromarray(pixels).save(path)
        return
    image = Image.new("L", (size, size), value).convert(mode)
    image.save(path)


def write_parts_folder(root: Path) -> Path:
    """Photos of 'ok' (bright) and 'defective' (dark) parts in assorted formats."""
    modes = [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"), ("P", ".gif")]
    modes += [("I;16", ".png"), ("RGB", ".bmp")]
    for index, (mode, suffix) in enumerate(modes):
        size = 20 + 7 * index
        save_square(root / "ok" / f"ok-{index}{suffix}", mode, size, 230)
        save_square(root / "defective" / f"bad-{index}{suffix}", mode, size, 25)
    return root


def test_digits_are_1797_grey_28x28_images_of_ten_classes() -> None:
    dataset = load_digits_dataset()

    assert dataset.images.shape == (1797, 28, 28, 1)
    assert dataset.images.dtype == np.float32
    assert dataset.images.min() == 0.0
    assert dataset.images.max() <= 1.0
    assert dataset.class_names == [str(digit) for digit in range(10)]
    assert sorted(set(dataset.labels.tolist())) == list(range(10))


@pytest.mark.parametrize("compressed", [True, False], ids=["gzipped", "plain"])
def test_idx_file_is_parsed_to_its_array(tmp_path: Path, compressed: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(images)
    path = tmp_path / ("images.idx.gz" if compressed else "images.idx")
    path.write_bytes(gzip.compress(data) if compressed else data)

    np.testing.assert_array_equal(read_idx(path), images)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:-1], id="one-byte-short"),
        pytest.param(lambda data: data + b"\x00", id="one-byte-long"),
        pytest.param(lambda data: data[:6], id="cut-in-the-header"),
        pytest.param(lambda data: data[:2], id="shorter-than-a-magic"),
        pytest.param(lambda data: b"\x00\x00\x0d" + data[3:], id="float-type"),
    ],
)
def test_damaged_idx_file_raises_dataset_error(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "labels.idx"
    path.write_bytes(damage(idx_bytes(np.arange(10, dtype=np.uint8))))

    with pytest.raises(DatasetError, match=r"labels\.idx"):
        read_idx(path)


def test_idx_file_that_is_not_really_gzipped_raises_dataset_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)))

    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(path)


def test_mnist_loads_from_a_local_npz(tmp_path: Path) -> None:
    arrays = fake_mnist()
    path = tmp_path / "mnist.npz"
    write_npz(path, arrays)

    dataset = load_mnist_dataset(path)

    assert dataset.images.shape == (38, 28, 28, 1)
    assert dataset.fixed_test_count == 8
    np.testing.assert_allclose(dataset.images[0, :, :, 0], arrays["x_train"][0] / 255)
    np.testing.assert_array_equal(dataset.labels[-8:], arrays["y_test"])


def test_mnist_loads_from_a_folder_of_idx_files(tmp_path: Path) -> None:
    arrays = fake_mnist()
    folder = write_idx_folder(tmp_path / "mnist", arrays)

    dataset = load_dataset("mnist", path=folder)

    assert dataset.images.shape == (38, 28, 28, 1)
    np.testing.assert_array_equal(dataset.labels[:30], arrays["y_train"])
    np.testing.assert_allclose(dataset.images[-1, :, :, 0], arrays["x_test"][-1] / 255)


def test_mnist_test_part_is_its_own_test_set(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    arrays = fake_mnist(train_count=70, test_count=10)
    write_npz(path, arrays)

    parts = split(load_mnist_dataset(path), seed=0)

    np.testing.assert_array_equal(parts.y_test, arrays["y_test"])
    assert len(parts.y_validation) == round(80 / 7)
    assert len(parts.y_train) == 70 - round(80 / 7)


def test_npz_without_the_mnist_arrays_raises_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    np.savez(path, images=np.zeros((2, 28, 28)))

    with pytest.raises(DatasetError, match="x_train"):
        load_mnist_dataset(path)


def test_mnist_with_images_and_labels_of_different_counts_is_refused(
    tmp_path: Path,
) -> None:
    arrays = fake_mnist()
    arrays["y_train"] = arrays["y_train"][:-1]
    path = tmp_path / "mnist.npz"
    write_npz(path, arrays)

    with pytest.raises(DatasetError, match="labels"):
        load_mnist_dataset(path)


def test_mnist_folder_missing_a_file_names_it(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "mnist", fake_mnist())
    (folder / "t10k-images-idx3-ubyte.gz").unlink()

    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        load_mnist_dataset(folder)


def test_folder_of_mixed_sizes_and_modes_loads_with_sorted_class_names(
    tmp_path: Path,
) -> None:
    root = write_parts_folder(tmp_path / "parts")

    dataset = load_folder_dataset(root, GREY_28)

    assert dataset.class_names == ["defective", "ok"]
    assert dataset.images.shape == (12, 28, 28, 1)
    assert dataset.skipped == 0
    # every mode, 16-bit included, reaches the model at the same brightness
    bright = dataset.images[dataset.labels == 1].mean(axis=(1, 2, 3))
    dark = dataset.images[dataset.labels == 0].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(bright, 230 / 255, atol=0.02)
    np.testing.assert_allclose(dark, 25 / 255, atol=0.02)


def test_folder_loads_in_colour_at_any_size(tmp_path: Path) -> None:
    root = write_parts_folder(tmp_path / "parts")

    dataset = load_folder_dataset(root, PreprocessSpec(height=64, width=48, channels=3))

    assert dataset.images.shape == (12, 64, 48, 3)
    assert dataset.spec.input_shape == (64, 48, 3)


def test_corrupt_file_in_training_folder_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_parts_folder(tmp_path / "parts")
    (root / "ok" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "ok" / "empty.jpg").touch()
    (root / "ok" / "notes.txt").write_text("not an image suffix: not counted")

    with caplog.at_level(logging.WARNING, logger="imgq.models.datasets"):
        dataset = load_folder_dataset(root, GREY_28)

    assert dataset.skipped == 2
    assert len(dataset.labels) == 12
    assert "broken.png" in caplog.text
    assert "empty.jpg" in caplog.text


def test_hidden_folders_are_not_classes(tmp_path: Path) -> None:
    root = write_parts_folder(tmp_path / "parts")
    save_square(root / ".ipynb_checkpoints" / "copy.png", "L", 28, 128)
    save_square(root / "ok" / ".thumbnails" / "small.png", "L", 28, 128)

    dataset = load_folder_dataset(root, GREY_28)

    assert dataset.class_names == ["defective", "ok"]
    assert len(dataset.labels) == 12


def test_empty_class_folder_raises_dataset_error(tmp_path: Path) -> None:
    root = write_parts_folder(tmp_path / "parts")
    (root / "scratched").mkdir()

    with pytest.raises(DatasetError, match="scratched"):
        load_folder_dataset(root, GREY_28)


def test_class_folder_of_only_corrupt_files_raises_dataset_error(
    tmp_path: Path,
) -> None:
    root = write_parts_folder(tmp_path / "parts")
    (root / "scratched").mkdir()
    (root / "scratched" / "a.png").write_text("text")

    with pytest.raises(DatasetError, match="no readable image"):
        load_folder_dataset(root, GREY_28)


def test_folder_with_one_class_raises_dataset_error(tmp_path: Path) -> None:
    save_square(tmp_path / "parts" / "ok" / "a.png", "L", 28, 200)

    with pytest.raises(DatasetError, match="needs two"):
        load_folder_dataset(tmp_path / "parts", GREY_28)


def test_folder_dataset_needs_a_path_and_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--data-path"):
        load_dataset("folder")
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset("folder", path=tmp_path / "absent")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar")


def test_split_cuts_a_seventh_for_test_and_a_seventh_for_validation() -> None:
    dataset = load_digits_dataset()

    parts = split(dataset, seed=42)

    assert (len(parts.y_train), len(parts.y_validation), len(parts.y_test)) == (
        1283,
        257,
        257,
    )
    assert parts.x_train.shape[1:] == (28, 28, 1)


def test_split_is_reproducible_with_a_seed_and_differs_between_seeds() -> None:
    dataset = load_digits_dataset()

    first, again, other = (split(dataset, seed=seed) for seed in (1, 1, 2))

    np.testing.assert_array_equal(first.y_test, again.y_test)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert not np.array_equal(first.y_test, other.y_test)


def test_split_parts_do_not_overlap() -> None:
    labels = np.arange(700)
    dataset = Dataset(
        name="numbered",
        images=labels.reshape(-1, 1, 1, 1).astype(np.float32),
        labels=labels,
        class_names=["a", "b"],
        spec=PreprocessSpec(height=1, width=1, channels=1),
    )

    parts = split(dataset, seed=5)

    seen = [parts.y_train, parts.y_validation, parts.y_test]
    assert sorted(np.concatenate(seen).tolist()) == labels.tolist()


def test_split_of_too_few_images_raises_dataset_error() -> None:
    dataset = Dataset(
        name="tiny",
        images=np.zeros((2, 4, 4, 1), dtype=np.float32),
        labels=np.array([0, 1]),
        class_names=["a", "b"],
        spec=PreprocessSpec(height=4, width=4, channels=1),
    )

    with pytest.raises(DatasetError, match="too few"):
        split(dataset, seed=0)


def test_fingerprint_changes_with_the_pixels() -> None:
    dataset = load_digits_dataset()
    before = dataset.fingerprint

    dataset.images[0, 0, 0, 0] += 0.5

    assert len(before) == 64
    assert dataset.fingerprint != before
