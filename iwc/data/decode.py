"""The one place image files are decoded (cache, crops, image checks): a file -> 8-bit RGB, or why not.

`opened(path)` opens a file with PIL for a block and turns any failure of the file inside it (missing,
truncated, not an image, a header claiming more pixels than PIL allows: `DecompressionBombError`) into
`Unreadable`, whose message says why on one line. `to_rgb(img)` converts to 8-bit RGB, scaling 16-bit
gray (PNG modes I;16, I;16B, ..., and I, read as 0..65535) to 0..255, where PIL's own convert clips it
to white. `problem(path)` is the quick check: why a file does not decode, or None.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
MAX_WHY = 160  # characters of an error message kept in a data-issue detail


class Unreadable(Exception):
    """An image file that does not decode; the message says why."""


@contextlib.contextmanager
def opened(path: str | os.PathLike) -> Iterator[Image.Image]:
    """`Image.open(path)` for the block; any error of the file meanwhile becomes `Unreadable`.

    Keep the block to decoding: PIL raises many types on hostile bytes (OSError, SyntaxError, ValueError,
    DecompressionBombError, struct.error, ...), so every `Exception` inside is taken for the file's.
    """
    try:
        with Image.open(path) as img:
            yield img
    except Unreadable:
        raise
    except Exception as e:
        why = f"{type(e).__name__}: {e}".splitlines()[0]
        raise Unreadable(why if len(why) <= MAX_WHY else why[:MAX_WHY - 3] + "...") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` decoded, as 8-bit RGB (usable once its file is closed); 16-bit gray is scaled (65535 -> 255,
    0x8080 -> 128), not clipped."""
    img.load()
    if img.mode in SIXTEEN_BIT:
        levels = np.asarray(img, dtype=np.float64) / 257.0  # 8 -> 16 bits multiplies by 257: its inverse
        img = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")


def problem(path: str | os.PathLike) -> str | None:
    """Why `path` does not decode, or None when it does (JPEG draft mode: a 1/8-scale decode, which still
    reads every byte, so a truncated file is caught)."""
    try:
        with opened(path) as img:
            img.draft("RGB", (64, 64))
            img.load()
    except Unreadable as e:
        return str(e)
    return None
