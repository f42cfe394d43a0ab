"""Training data: scikit-learn's digits, MNIST, or a folder of class folders.

Every loader goes through :func:`image_to_array`, the function the worker
uses, so a model sees the same numbers in training and in production.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgq.errors import DatasetError, ImageError
from imgq.models.preprocessing import (
    DecodeLimits,
    PreprocessSpec,
    image_to_array,
    open_image,
)

log = logging.getLogger(__name__)

DIGITS_SPEC = PreprocessSpec(height=28, width=28, channels=1)
MNIST_SPEC = PreprocessSpec(height=28, width=28, channels=1)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
IDX_UNSIGNED_BYTE = 0x08
# The tutorial's split: of 70,000 MNIST images, 10,000 test and 10,000 validation.
TEST_FRACTION = 1 / 7
VALIDATION_FRACTION = 1 / 7


@dataclass
class Dataset:
    """Model inputs, integer labels and what they mean."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    spec: PreprocessSpec
    skipped: int = 0
    # Trailing examples that are the dataset's own test set (MNIST's 10,000).
    fixed_test_count: int = 0

    @property
    def fingerprint(self) -> str:
        """A hash of the pixels and labels: which data a model was trained on."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        digest.update("\n".join(self.class_names).encode())
        return digest.hexdigest()


@dataclass
class Split:
    """Train, validation and test parts of one dataset."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def split(dataset: Dataset, *, seed: int) -> Split:
    """Shuffle with ``seed`` and cut test and validation parts off the data."""
    count = len(dataset.labels)
    if dataset.fixed_test_count:
        test_index = np.arange(count - dataset.fixed_test_count, count)
        rest = np.arange(count - dataset.fixed_test_count)
    else:
        order = np.random.default_rng(seed).permutation(count)
        test_count = max(1, round(count * TEST_FRACTION))
        test_index, rest = order[:test_count], order[test_count:]
    validation_count = max(1, round(count * VALIDATION_FRACTION))
    if len(rest) <= validation_count:
        raise DatasetError(
            f"{dataset.name} has {count} images: too few for a training, a "
            "validation and a test part"
        )
    # the tutorial takes validation from the end of the training part
    train_index, validation_index = rest[:-validation_count], rest[-validation_count:]
    return Split(
        x_train=dataset.images[train_index],
        y_train=dataset.labels[train_index],
        x_validation=dataset.images[validation_index],
        y_validation=dataset.labels[validation_index],
        x_test=dataset.images[test_index],
        y_test=dataset.labels[test_index],
    )


def digit_images() -> Iterator[tuple[Image.Image, int]]:
    """scikit-learn's 1,797 8x8 digits as 28x28 greyscale images, with labels.

    The demo writes these very images to PNG files, so the files the worker
    reads hold the pixels the model was trained on.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    for pixels, label in zip(digits.images, digits.target, strict=True):
        # scale 0..16 intensities to 0..255, white digits on black as in MNIST
        small = Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8))
        yield small.resize((28, 28), Image.Resampling.BILINEAR), int(label)


def load_digits_dataset() -> Dataset:
    """The offline default: scikit-learn's bundled digits, 28x28."""
    arrays, labels = [], []
    for image, label in digit_images():
        arrays.append(image_to_array(image, DIGITS_SPEC))
        labels.append(label)
    return Dataset(
        name="digits",
        images=np.stack(arrays),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=[str(digit) for digit in range(10)],
        spec=DIGITS_SPEC,
    )


def load_mnist_dataset(path: str | Path | None = None) -> Dataset:
    """MNIST from a local ``mnist.npz``, a folder of IDX files, or Keras' loader."""
    if path is None:
        (x_train, y_train), (x_test, y_test) = _download_mnist()
    else:
        path = Path(path)
        if path.is_dir():
            x_train, y_train, x_test, y_test = _read_idx_folder(path)
        elif path.suffix == ".npz":
            x_train, y_train, x_test, y_test = _read_npz(path)
        else:
            raise DatasetError(f"{path}: expected mnist.npz or a folder of IDX files")
    _check_mnist_arrays(x_train, y_train, x_test, y_test)
    images = np.concatenate([x_train, x_test]).astype(np.float32) / 255.0
    return Dataset(
        name="mnist",
        # add the channel axis
        images=images[..., np.newaxis],
        labels=np.concatenate([y_train, y_test]).astype(np.int64),
        class_names=[str(digit) for digit in range(10)],
        spec=MNIST_SPEC,
        fixed_test_count=len(y_test),
    )


def _download_mnist() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    import keras

    try:
        return keras.datasets.mnist.load_data()
    except Exception as error:
        raise DatasetError(
            "cannot download MNIST (no internet?); pass --data-path with a local "
            f"mnist.npz or a folder of the four IDX .gz files ({error})"
        ) from error


MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
    """The four arrays of Keras' ``mnist.npz``."""
    try:
        with np.load(path) as archive:
            return tuple(archive[key] for key in MNIST_KEYS)
    except KeyError as error:
        raise DatasetError(
            f"{path} lacks {error}; mnist.npz holds {', '.join(MNIST_KEYS)}"
        ) from error
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable .npz file: {error}") from error


def _check_mnist_arrays(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> None:
    for images, labels, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DatasetError(
                f"MNIST {part} images have shape {images.shape}, not (n, 28, 28)"
            )
        if len(images) != len(labels):
            raise DatasetError(
                f"MNIST {part} part has {len(images)} images but {len(labels)} labels"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DatasetError(f"MNIST {part} labels are not all digits 0 to 9")


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _read_idx_folder(folder: Path) -> tuple[np.ndarray, ...]:
    arrays = []
    for stem in IDX_FILES.values():
        candidates = [folder / f"{stem}.gz", folder / stem]
        found = next((file for file in candidates if file.exists()), None)
        if found is None:
            raise DatasetError(f"{folder} has no {stem}.gz or {stem}")
        arrays.append(read_idx(found))
    return tuple(arrays)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (the MNIST distribution format), gzipped or not."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as file:
                data = file.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    if len(data) < 4:
        raise DatasetError(f"{path} is too short to be an IDX file")
    zero, data_type, dimension_count = struct.unpack(">HBB", data[:4])
    if zero != 0 or data_type != IDX_UNSIGNED_BYTE:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file")
    header_end = 4 + 4 * dimension_count
    if len(data) < header_end:
        raise DatasetError(f"{path} ends inside its header")
    shape = struct.unpack(f">{dimension_count}I", data[4:header_end])
    expected = int(np.prod(shape))
    if len(data) - header_end != expected:
        raise DatasetError(
            f"{path} holds {len(data) - header_end} bytes, its header says {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(shape)


def load_folder_dataset(
    root: str | Path, spec: PreprocessSpec, *, limits: DecodeLimits | None = None
) -> Dataset:
    """One subfolder per class (the layout of image_dataset_from_directory)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    # hidden folders (.git, .ipynb_checkpoints) are not classes
    class_folders = sorted(
        folder
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(".")
    )
    if len(class_folders) < 2:
        raise DatasetError(
            f"{root} has {len(class_folders)} class folder(s); a classifier needs two"
        )

    arrays: list[np.ndarray] = []
    labels: list[int] = []
    skipped = 0
    for label, folder in enumerate(class_folders):
        class_arrays, class_skipped = _load_class_folder(
            folder, spec, limits or DecodeLimits()
        )
        if not class_arrays:
            raise DatasetError(f"class folder {folder} has no readable image")
        arrays.extend(class_arrays)
        labels.extend([label] * len(class_arrays))
        skipped += class_skipped

    return Dataset(
        name=f"folder:{root.name}",
        images=np.stack(arrays),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=[folder.name for folder in class_folders],
        spec=spec,
        skipped=skipped,
    )


def _load_class_folder(
    folder: Path, spec: PreprocessSpec, limits: DecodeLimits
) -> tuple[list[np.ndarray], int]:
    """The model inputs of every readable image under ``folder``, and a count of
    the unreadable ones, which are logged and skipped."""
    files = sorted(
        file
        for file in folder.rglob("*")
        if file.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in file.relative_to(folder).parts)
    )
    arrays = []
    skipped = 0
    for file in files:
        try:
            with open_image(str(file), limits) as image:
                arrays.append(image_to_array(image, spec))
        except ImageError as error:
            log.warning("skipping %s: %s", file, error.message)
            skipped += 1
    return arrays, skipped


def load_dataset(
    name: str,
    *,
    path: str | Path | None = None,
    spec: PreprocessSpec | None = None,
) -> Dataset:
    """Load the dataset called ``name``: digits, mnist or folder."""
    if name == "digits":
        return load_digits_dataset()
    if name == "mnist":
        return load_mnist_dataset(path)
    if name == "folder":
        if path is None:
            raise DatasetError("--dataset folder needs --data-path FOLDER")
        return load_folder_dataset(path, spec or DIGITS_SPEC)
    raise DatasetError(f"unknown dataset {name!r}; known: digits, mnist, folder")
