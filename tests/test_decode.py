"""The shared decode point: hostile image files are `Unreadable` (never another exception), 16-bit gray scales."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iwc.data.decode import Unreadable, opened, problem, to_rgb

MID_GREY_16 = 0x8080  # 8-bit 128 widened to 16 bits (128 * 257)


def bomb_jpeg(path: Path, side: int = 30000) -> Path:
    """A small JPEG whose header claims side x side pixels (PIL refuses it as a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    return path


def gray16_png(path: Path, size: tuple[int, int] = (64, 48), level: int = MID_GREY_16) -> Path:
    """A 16-bit grayscale PNG of one level, under whatever name (`.jpg` too: PIL reads the content)."""
    Image.fromarray(np.full(size[::-1], level, dtype=np.uint16)).save(path, format="PNG")
    return path


def test_a_decompression_bomb_is_unreadable_with_why(tmp_path):
    path = bomb_jpeg(tmp_path / "bomb.jpg")
    with pytest.raises(Unreadable, match="DecompressionBombError"), opened(path):
        pass
    assert problem(path).startswith("DecompressionBombError: Image size (900000000 pixels) exceeds limit")


@pytest.mark.parametrize(("content", "why"), [(None, "FileNotFoundError"), (b"", "UnidentifiedImageError"),
                                              (b"\xff\xd8 not really a jpeg", "UnidentifiedImageError")])
def test_missing_empty_and_garbage_files_are_unreadable(tmp_path, content, why):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    assert problem(path).startswith(why)
    assert "\n" not in problem(path)


def test_a_truncated_jpeg_is_caught_by_the_quick_check(tmp_path):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert problem(path).startswith("OSError")
    good = tmp_path / "good.jpg"
    good.write_bytes(buf.getvalue())
    assert problem(good) is None


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<i4"])  # PIL modes I;16, I;16B, I
def test_sixteen_bit_gray_scales_to_eight_bits(dtype):
    levels = np.array([[0, 257, MID_GREY_16, 65535]], dtype=dtype)
    img = Image.fromarray(levels)
    rgb = np.asarray(to_rgb(img))
    assert to_rgb(img).mode == "RGB"
    assert rgb[..., 0].tolist() == [[0, 1, 128, 255]]
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_a_sixteen_bit_png_named_jpg_decodes_mid_grey(tmp_path):
    with opened(gray16_png(tmp_path / "deep.jpg")) as img:
        assert img.mode == "I;16"
        assert np.asarray(img.convert("RGB")).mean() == 255  # what PIL alone makes of it: white
        assert np.asarray(to_rgb(img)).mean() == 128
