"""Every policy of imgq.models.preprocessing, on files the tests write."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgq.errors import ImageError
from imgq.models.preprocessing import (
    KIND_FORMAT_REFUSED,
    KIND_MISSING,
    KIND_NOT_AN_IMAGE,
    KIND_TOO_LARGE,
    KIND_TRUNCATED,
    KIND_UNREADABLE,
    KIND_UNSUPPORTED_MODE,
    DecodeLimits,
    PreprocessSpec,
    image_to_array,
    open_image,
    preprocess_file,
)

LIMITS = DecodeLimits()
# EXIF tag 0x0112: how a viewer must turn the stored pixels
ORIENTATION_TAG = 0x0112
ROTATE_90_CLOCKWISE = 6


def failure_kind(path: Path, limits: DecodeLimits = LIMITS) -> str:
    with pytest.raises(ImageError) as caught:
        open_image(str(path), limits)
    return caught.value.kind


def to_array(path: Path, spec: PreprocessSpec) -> np.ndarray:
    return preprocess_file(str(path), spec, LIMITS)


def noise_image(mode: str, size: tuple[int, int] = (64, 48)) -> Image.Image:
    channels = {"L": 1, "RGB": 3}[mode]
    pixels = np.random.default_rng(7).integers(
        0, 256, (size[1], size[0], channels), dtype=np.uint8
    )
    return Image.fromarray(pixels.squeeze(), mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def write_blank_png(path: Path, *, width: int, height: int, bit_depth: int) -> Path:
    """A black greyscale PNG written row by row: huge in pixels, tiny on disk."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height))
    body += compressor.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )
    return path


# Peak resident memory of this process image only: ru_maxrss would also count
# the memory of the forked test runner before the exec.
MEASURE_DECODE = """
import sys
from PIL import Image
from imgq.errors import ImageError
from imgq.models.preprocessing import DecodeLimits, open_image


def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])


Image.new("L", (8, 8)).save(sys.argv[1] + ".warm.png")
open_image(sys.argv[1] + ".warm.png", DecodeLimits())
# start the peak afresh at the memory in use now
with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")
before = status_kib("VmRSS")
try:
    open_image(sys.argv[1], DecodeLimits(max_pixels=int(sys.argv[2])))
    outcome = "decoded"
except ImageError as error:
    outcome = error.kind
print(outcome, (status_kib("VmHWM") - before) // 1024)
"""


def decode_in_fresh_process(path: Path, *, max_pixels: int) -> tuple[str, int]:
    """The outcome of open_image, and the process's peak resident memory over
    its resident memory before the call, in MiB."""
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE_DECODE, str(path), str(max_pixels)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    outcome, growth = completed.stdout.split()
    return outcome, int(growth)


def test_format_outside_the_allow_list_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    # a BMP cut in half: decoding it would fail as truncated
    bitmap = tmp_path / "photo.bmp"
    noise_image("RGB").save(bitmap)
    bitmap.write_bytes(bitmap.read_bytes()[:200])

    kind = failure_kind(bitmap, DecodeLimits(allowed_formats=("PNG", "JPEG")))

    assert kind == KIND_FORMAT_REFUSED


def test_format_is_read_from_the_header_not_from_the_name(tmp_path: Path) -> None:
    jpeg_named_png = tmp_path / "really-a-jpeg.png"
    noise_image("RGB").save(jpeg_named_png, format="JPEG")
    png_named_jpg = tmp_path / "really-a-png.jpg"
    noise_image("RGB").save(png_named_jpg, format="PNG")
    only_png = DecodeLimits(allowed_formats=("PNG",))

    assert failure_kind(jpeg_named_png, only_png) == KIND_FORMAT_REFUSED
    assert open_image(str(png_named_jpg), only_png).format == "PNG"


def test_allow_list_matches_format_names_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "digit.png"
    noise_image("L").save(path)

    image = open_image(str(path), DecodeLimits(allowed_formats=("png",)))

    assert image.size == (64, 48)


def test_zero_byte_file_is_not_an_image(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()

    assert failure_kind(empty) == KIND_NOT_AN_IMAGE


def test_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("x'; DROP TABLE images; --\n")

    assert failure_kind(text) == KIND_NOT_AN_IMAGE


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
@pytest.mark.parametrize("kept_fraction", [0.5, 0.9])
def test_truncated_file_fails_as_truncated(
    tmp_path: Path, image_format: str, kept_fraction: float
) -> None:
    path = tmp_path / f"cut.{image_format.lower()}"
    noise_image("RGB", (200, 200)).save(path, format=image_format)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * kept_fraction)])

    assert failure_kind(path) == KIND_TRUNCATED


def test_missing_file_fails_as_missing(tmp_path: Path) -> None:
    assert failure_kind(tmp_path / "gone.png") == KIND_MISSING


def test_folder_given_as_an_image_is_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "looks-like.png"
    folder.mkdir()

    assert failure_kind(folder) == KIND_UNREADABLE


def test_file_over_the_byte_limit_is_too_large_without_decoding(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.png"
    noise_image("RGB").save(path)

    kind = failure_kind(path, DecodeLimits(max_bytes=path.stat().st_size - 1))

    assert kind == KIND_TOO_LARGE


def test_decompression_bomb_is_too_large_and_memory_stays_flat(
    tmp_path: Path,
) -> None:
    bomb = write_blank_png(
        tmp_path / "bomb.png", width=20_000, height=20_000, bit_depth=1
    )
    assert bomb.stat().st_size < 200_000

    outcome, growth_mib = decode_in_fresh_process(bomb, max_pixels=50_000_000)

    assert outcome == KIND_TOO_LARGE
    assert growth_mib < 20


def test_image_over_the_pixel_limit_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    # 64 million pixels: under Pillow's own bomb limit, over imgq's 50 million
    large = write_blank_png(
        tmp_path / "large.png", width=8_000, height=8_000, bit_depth=8
    )

    refused, refused_growth = decode_in_fresh_process(large, max_pixels=50_000_000)
    decoded, decoded_growth = decode_in_fresh_process(large, max_pixels=70_000_000)

    assert (refused, decoded) == (KIND_TOO_LARGE, "decoded")
    assert refused_growth < 20
    # the measurement does see a real decode of the same file
    assert decoded_growth > 50


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "scan16.png"
    row = np.array([0, 1000, 32768, 65535], dtype=np.uint16)
    Image.fromarray(np.tile(row, (4, 1))).save(path)
    assert Image.open(path).mode == "I;16"

    values = to_array(path, PreprocessSpec(height=4, width=4, channels=1))[0, :, 0]

    assert values[0] == 0.0
    assert values[1] == pytest.approx(1000 / 65535, abs=1 / 255)
    assert values[2] == pytest.approx(0.5, abs=0.01)
    assert values[3] == 1.0


def test_thirty_two_bit_values_beyond_sixteen_bits_are_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "counts.tif"
    values = np.array([[0, 70_000], [5, 1 << 20]], dtype=np.int32)
    Image.fromarray(values, "I").save(path)

    with pytest.raises(ImageError) as caught:
        to_array(path, PreprocessSpec(height=2, width=2, channels=1))

    assert caught.value.kind == KIND_UNSUPPORTED_MODE


def test_floating_point_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "depth.tif"
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(path)

    with pytest.raises(ImageError) as caught:
        to_array(path, PreprocessSpec(height=4, width=4, channels=1))

    assert caught.value.kind == KIND_UNSUPPORTED_MODE


def test_palette_image_is_expanded_to_its_colours(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.putpixel((1, 0), 1)
    image.save(path)

    colour = to_array(path, PreprocessSpec(height=1, width=2, channels=3))
    grey = to_array(path, PreprocessSpec(height=1, width=2, channels=1))

    np.testing.assert_allclose(colour[0], [[1, 0, 0], [0, 0, 1]])
    # ITU-R 601 luma, as Pillow's L conversion: red 0.299, blue 0.114
    np.testing.assert_allclose(grey[0, :, 0], [76 / 255, 29 / 255], atol=1 / 255)


def test_transparent_palette_entry_becomes_the_background(tmp_path: Path) -> None:
    path = tmp_path / "sprite.gif"
    image = Image.new("P", (2, 1))
    image.putpalette([255, 255, 255, 0, 255, 0])
    image.putpixel((1, 0), 1)
    image.save(path, transparency=0)

    pixels = to_array(path, PreprocessSpec(height=1, width=2, channels=3))

    np.testing.assert_allclose(pixels[0], [[0, 0, 0], [0, 1, 0]])


def test_rgba_is_composited_onto_the_background(tmp_path: Path) -> None:
    path = tmp_path / "overlay.png"
    pixels = np.array(
        [[[255, 255, 255, 255], [255, 255, 255, 0], [255, 255, 255, 128]]],
        dtype=np.uint8,
    )
    Image.fromarray(pixels, "RGBA").save(path)

    on_black = to_array(path, PreprocessSpec(height=1, width=3, channels=1))
    on_white = to_array(
        path, PreprocessSpec(height=1, width=3, channels=1, background=255)
    )

    np.testing.assert_allclose(on_black[0, :, 0], [1.0, 0.0, 0.5], atol=0.01)
    np.testing.assert_allclose(on_white[0, :, 0], [1.0, 1.0, 1.0], atol=0.01)


def test_transparent_colour_of_a_grey_png_becomes_the_background(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keyed.png"
    Image.fromarray(np.array([[200, 100]], dtype=np.uint8)).save(path, transparency=200)

    pixels = to_array(path, PreprocessSpec(height=1, width=2, channels=1))

    np.testing.assert_allclose(pixels[0, :, 0], [0.0, 100 / 255], atol=1 / 255)


def test_cmyk_is_converted_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "print.tif"
    cyan, white = (255, 0, 0, 0), (0, 0, 0, 0)
    pixels = np.array([[cyan, white]], dtype=np.uint8)
    Image.fromarray(pixels, "CMYK").save(path)

    colour = to_array(path, PreprocessSpec(height=1, width=2, channels=3))

    np.testing.assert_allclose(colour[0], [[0, 1, 1], [1, 1, 1]])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # stored 40 wide and 20 high, left half white; shown turned a quarter
    # clockwise, so 20 wide and 40 high with the white half on top
    stored = np.zeros((20, 40), dtype=np.uint8)
    stored[:, :20] = 255
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = ROTATE_90_CLOCKWISE
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)

    shown = to_array(path, PreprocessSpec(height=40, width=20, channels=1))

    assert shown.shape == (40, 20, 1)
    assert shown[:18].mean() > 0.95
    assert shown[22:].mean() < 0.05


def test_model_input_is_float32_in_unit_range_at_the_model_size(
    tmp_path: Path,
) -> None:
    path = tmp_path / "photo.jpg"
    noise_image("RGB", (300, 200)).save(path)

    pixels = to_array(path, PreprocessSpec(height=128, width=128, channels=3))

    assert pixels.shape == (128, 128, 3)
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_sixteen_bit_image_keeps_its_scaling_through_a_resize(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flat16.png"
    Image.fromarray(np.full((50, 50), 65535, dtype=np.uint16)).save(path)

    pixels = image_to_array(
        Image.open(path), PreprocessSpec(height=28, width=28, channels=1)
    )

    np.testing.assert_allclose(pixels, 1.0)


def test_the_decoded_file_is_closed_after_preprocessing(tmp_path: Path) -> None:
    path = tmp_path / "digit.png"
    noise_image("L").save(path)
    descriptors_before = len(os.listdir("/proc/self/fd"))

    for _ in range(20):
        to_array(path, PreprocessSpec(height=28, width=28, channels=1))

    assert len(os.listdir("/proc/self/fd")) <= descriptors_before


def test_named_pipe_given_as_an_image_is_unreadable_without_blocking(
    tmp_path: Path,
) -> None:
    pipe = tmp_path / "camera.png"
    os.mkfifo(pipe)

    assert failure_kind(pipe) == KIND_UNREADABLE
