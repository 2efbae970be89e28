"""Decode only the part of a JPEG that some boxes need: the band of rows from the highest box's top to the lowest
box's bottom, through libjpeg-turbo (`_iwc_jpeg`, built from `jpeg_region.c` at install where a C compiler and
libjpeg-turbo's headers are). The rows below the band are never entropy-decoded and the rows above skip the
IDCT, which is most of a decode for the small boxes of camera-trap photos.

The pixels are exactly those of a full PIL decode at the same scale (tests/test_jpeg_region.py), so crops do not
depend on whether the decoder was built: where it is not (Kaggle, the Docker image), `decode_regions` declines
and the caller decodes through PIL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image

try:
    import _iwc_jpeg
except ImportError:  # not built where iwc was installed
    _iwc_jpeg = None

Rect = tuple[int, int, int, int]  # left, top, right, bottom in pixels
EDGE = 16  # px decoded beyond the band on each side: fancy upsampling changes a band's own edge pixels
_EOI = b"\xff\xd9"


def decoder() -> str:
    """Which decoder cuts crops here, in words, for logs."""
    if _iwc_jpeg is None:
        return "PIL, whole images (the band decoder _iwc_jpeg is not built in this install)"
    return f"libjpeg-turbo {getattr(_iwc_jpeg, 'LIBJPEG_TURBO_VERSION', '?')} band decoding (_iwc_jpeg)"


def decode_regions(path: str | os.PathLike, img: Image.Image, scale: int, regions: Sequence[Rect]) -> \
        list[Image.Image] | None:
    """The RGB pixels of each of `regions` (in the image decoded at 1/`scale`) of the JPEG at `path`, whose
    header `img` is (opened, not loaded; any EXIF orientation is the caller's to apply); None when the band
    decoder does not apply (PIL decides what the file holds): not built, not a 3-channel JPEG, a file that does
    not end in an end-of-image marker (maybe truncated), or one libjpeg cannot band-decode."""
    if _iwc_jpeg is None or img.format != "JPEG" or img.mode != "RGB":
        return None
    with open(path, "rb") as f:
        data = f.read()
    if not data.endswith(_EOI):
        return None
    width, height = -(-img.width // scale), -(-img.height // scale)  # libjpeg rounds a reduced size up
    left, top = max(min(r[0] for r in regions) - EDGE, 0), max(min(r[1] for r in regions) - EDGE, 0)
    right, bottom = min(max(r[2] for r in regions) + EDGE, width), min(max(r[3] for r in regions) + EDGE, height)
    try:
        pixels, x0, band_width, *_ = _iwc_jpeg.decode_rows(data, scale, left, top, right, bottom)
    except ValueError:  # a broken stream, or a coding this build lacks: PIL's error (or pixels) then, as without it
        return None
    band = Image.frombuffer("RGB", (band_width, bottom - top), pixels, "raw", "RGB", 0, 1)
    return [band.crop((le - x0, t - top, r - x0, b - top)) for le, t, r, b in regions]

