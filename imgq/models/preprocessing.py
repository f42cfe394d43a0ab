"""Turning an image file into the model's input: one function for training and
inference, so the two cannot disagree.

Policies, each tested:

- Only formats in the allow-list are decoded; the format is read from the
  file's header, never from its name, and checked before any pixel is decoded.
  A missing file, an empty file or one that is not an image are failures of
  their own kind.
- Images over ``max_image_pixels`` are refused from their header, before the
  decoder allocates anything (decompression bombs).
- The decode is forced in full, so a truncated file fails here and not later;
  Pillow's ``LOAD_TRUNCATED_IMAGES`` is never set.
- EXIF orientation is applied: the model sees the photo the way a viewer
  shows it.
- Transparent pixels, from an alpha channel or from a transparent colour
  (PNG's tRNS, a GIF's transparent index), are composited onto ``background``
  (black by default, the background of the digits).
- 16-bit greyscale is scaled to the 8-bit range (65535 becomes 255), not
  clipped; 32-bit integer images are read the same way and refused when a
  value lies outside 0..65535. Palette images are expanded; CMYK is converted
  to RGB; floating-point images are refused.
- The image is converted to the model's channels (luma for grey), resized
  with bilinear filtering to the model's size, and scaled to [0, 1].
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgq.errors import ImageError

# Failure kinds recorded in the failures table.
KIND_MISSING = "missing"
KIND_UNREADABLE = "unreadable"
KIND_NOT_AN_IMAGE = "not_an_image"
KIND_FORMAT_REFUSED = "format_not_allowed"
KIND_TOO_LARGE = "too_large"
KIND_TRUNCATED = "truncated"
KIND_UNSUPPORTED_MODE = "unsupported_mode"
KIND_DECODE_ERROR = "decode_error"

SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
EXIF_ORIENTATION = 0x0112

# The pixel limit of DecodeLimits, checked from the header, replaces Pillow's
# bomb warning. Set once here: catch_warnings() per image is slow, and it
# changes process-wide state, which decode threads must not do.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input; stored with every saved model."""

    height: int
    width: int
    channels: int
    background: int = 0
    resample: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessSpec:
        return cls(**values)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


@dataclass(frozen=True)
class DecodeLimits:
    """What the decoder accepts; taken from the settings."""

    allowed_formats: Sequence[str] = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
    max_pixels: int = 50_000_000
    max_bytes: int = 200_000_000


def open_image(path: str, limits: DecodeLimits) -> Image.Image:
    """Open and fully decode ``path``, or raise ImageError with a failure kind."""
    try:
        status = os.stat(path)
    except FileNotFoundError as error:
        raise ImageError(KIND_MISSING, f"no such file: {path}") from error
    except OSError as error:
        raise ImageError(KIND_UNREADABLE, f"cannot stat {path}: {error}") from error
    if not stat.S_ISREG(status.st_mode):
        # a folder, or a pipe or device that would block or never end
        raise ImageError(KIND_UNREADABLE, f"{path} is not a regular file")
    size = status.st_size
    if size == 0:
        raise ImageError(KIND_NOT_AN_IMAGE, f"not an image: {path} is empty")
    if size > limits.max_bytes:
        raise ImageError(
            KIND_TOO_LARGE, f"{path} has {size} bytes, over {limits.max_bytes}"
        )

    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            _check_header(image, path, limits)
            image.load()
            return image
    except ImageError:
        raise
    except UnidentifiedImageError as error:
        raise ImageError(KIND_NOT_AN_IMAGE, f"not an image: {path}") from error
    except Image.DecompressionBombError as error:
        raise ImageError(KIND_TOO_LARGE, f"{path}: {error}") from error
    except PermissionError as error:
        raise ImageError(KIND_UNREADABLE, f"cannot read {path}: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        message = str(error)
        if "truncated" in message or isinstance(error, EOFError):
            raise ImageError(KIND_TRUNCATED, f"truncated: {path}: {message}") from error
        raise ImageError(
            KIND_DECODE_ERROR, f"cannot decode {path}: {message}"
        ) from error


def _check_header(image: Image.Image, path: str, limits: DecodeLimits) -> None:
    allowed = {name.upper() for name in limits.allowed_formats}
    if image.format not in allowed:
        raise ImageError(
            KIND_FORMAT_REFUSED,
            f"{path} is {image.format}, not one of {', '.join(limits.allowed_formats)}",
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageError(
            KIND_TOO_LARGE,
            f"{path} is {width}x{height} pixels, over the limit of {limits.max_pixels}",
        )


def image_to_pixels(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """One decoded image at the model's size and channels: uint8, (h, w, c).

    :func:`scale_pixels` of the result is the model's input; the worker
    scales a whole batch at once instead.
    """
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    image = _to_8bit_mode(image, spec)
    if spec.channels not in (1, 3):
        raise ImageError(KIND_UNSUPPORTED_MODE, f"models with {spec.channels} channels")
    wanted_mode = "L" if spec.channels == 1 else "RGB"
    if image.mode != wanted_mode:
        image = image.convert(wanted_mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), _resample(spec.resample))

    pixels = np.asarray(image)
    if spec.channels == 1:
        # add the channel axis
        pixels = pixels[:, :, np.newaxis]
    return pixels


def scale_pixels(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 pixels (or float32 copies of them) scaled to float32 in [0, 1]."""
    return np.divide(pixels, np.float32(255.0), out=out, dtype=np.float32)


def image_to_array(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The model's input for one decoded image: float32, (height, width, channels)."""
    return scale_pixels(image_to_pixels(image, spec))


def preprocess_pixels(
    path: str, spec: PreprocessSpec, limits: DecodeLimits | None = None
) -> np.ndarray:
    """Decode ``path`` into :func:`image_to_pixels`' uint8 pixels."""
    image = open_image(path, limits or DecodeLimits())
    try:
        return image_to_pixels(image, spec)
    finally:
        image.close()


def preprocess_file(
    path: str, spec: PreprocessSpec, limits: DecodeLimits | None = None
) -> np.ndarray:
    """Decode ``path`` and turn it into the model's input."""
    return scale_pixels(preprocess_pixels(path, spec, limits))


def _to_8bit_mode(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """An 8-bit image without transparency, with every mode's range kept."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        return _scale_16bit(image)
    if mode == "F":
        raise ImageError(
            KIND_UNSUPPORTED_MODE, "floating-point images are not supported"
        )
    if mode in ("P", "PA") or image.info.get("transparency") is not None:
        # a palette or a transparent colour becomes an alpha channel
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        fill = (spec.background,) * 3 + (255,)
        backdrop = Image.new("RGBA", image.size, fill)
        return Image.alpha_composite(backdrop, image.convert("RGBA")).convert("RGB")
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    # CMYK, YCbCr, LAB, HSV: Pillow's own conversions to RGB.
    return image.convert("RGB")


def _scale_16bit(image: Image.Image) -> Image.Image:
    """Greyscale 'L' from 16-bit (or 32-bit integer) pixels, 65535 -> 255."""
    values = np.asarray(image, dtype=np.float64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageError(
            KIND_UNSUPPORTED_MODE,
            f"{image.mode} image with values from {values.min():.0f} to "
            f"{values.max():.0f}, outside the 16-bit range 0..65535",
        )
    return Image.fromarray(np.round(values * (255.0 / 65535.0)).astype(np.uint8))


def _resample(name: str) -> Image.Resampling:
    try:
        return Image.Resampling[name.upper()]
    except KeyError as error:
        raise ValueError(f"unknown resampling filter {name!r}") from error
