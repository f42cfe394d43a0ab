"""Bad input, made on the fly: every file of RELIABILITY.md's bad-input table.

Each writer takes the path to write and returns it. The converted images
(16-bit, palette, RGBA, CMYK) hold exactly the pixels of a digit, so a
correct conversion gives the digit's own prediction.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from support_jobs import digit_image

SQL_LOOKING = "x'; DROP TABLE images; --"
# EXIF orientation 6: the viewer turns the stored pixels 90 degrees clockwise
EXIF_ORIENTATION = 0x0112
ROTATED_CLOCKWISE = 6


def _digit_pixels(index: int) -> np.ndarray:
    image, _ = digit_image(index)
    return np.asarray(image, dtype=np.uint8)


def write_zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_text(path: Path) -> Path:
    path.write_text("this is a shopping list, not a picture\n")
    return path


def write_truncated_jpeg(path: Path, index: int = 0) -> Path:
    image, _ = digit_image(index)
    image.resize((112, 112)).save(path, "JPEG", quality=95)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) * 6 // 10])
    return path


def write_png_bomb(path: Path, side: int = 20_000) -> Path:
    """A black 1-bit PNG of side x side pixels: tens of KB on disk."""
    row = b"\x00" * (1 + side // 8)  # filter byte, then 8 pixels a byte
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side))
    pixels += compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def write_16bit(path: Path, index: int) -> Path:
    """The digit as a 16-bit greyscale PNG (each value times 257)."""
    wide = _digit_pixels(index).astype(np.uint16) * 257
    Image.fromarray(wide).save(path)
    return path


def write_palette(path: Path, index: int) -> Path:
    """The digit as a palette PNG with a grey palette."""
    image = Image.new("P", (28, 28))
    image.putpalette([value for grey in range(256) for value in (grey,) * 3])
    image.putdata(_digit_pixels(index).flatten().tolist())
    image.save(path)
    return path


def write_rgba(path: Path, index: int) -> Path:
    """The digit on a white background that is fully transparent.

    Composited onto black, as the policy says, it is the digit again; an
    alpha channel simply dropped would leave a white background.
    """
    pixels = _digit_pixels(index)
    colour = np.where(pixels > 0, pixels, 255).astype(np.uint8)
    alpha = np.where(pixels > 0, 255, 0).astype(np.uint8)
    channels = np.stack([colour, colour, colour, alpha], axis=-1)
    Image.fromarray(channels, "RGBA").save(path)
    return path


def write_cmyk(path: Path, index: int) -> Path:
    """The digit as a CMYK TIFF."""
    image, _ = digit_image(index)
    image.convert("RGB").convert("CMYK").save(path, "TIFF")
    return path


def write_float(path: Path, index: int) -> Path:
    """The digit as a 32-bit floating-point TIFF: refused with a reason."""
    Image.fromarray(_digit_pixels(index).astype(np.float32)).save(path, "TIFF")
    return path


def write_exif_rotated(path: Path, index: int) -> Path:
    """A photo stored turned a quarter left, with the EXIF tag that turns it back."""
    image, _ = digit_image(index)
    stored = image.resize((112, 112)).rotate(90, expand=True)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATED_CLOCKWISE
    stored.save(path, "JPEG", quality=95, exif=exif)
    return path


def write_ico(path: Path, red: int = 200) -> Path:
    """A real Windows icon, whatever the name says."""
    Image.new("RGB", (32, 32), (red, 30, 30)).save(path, "ICO")
    return path


def write_truncated_tga(path: Path, index: int = 0) -> Path:
    """A TGA cut in half: refused from its header before any pixel is read."""
    image, _ = digit_image(index)
    image.save(path, "TGA")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path
