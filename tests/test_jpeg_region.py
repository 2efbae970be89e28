"""The band decoder (`_iwc_jpeg`, iwc/data/jpeg_region.py) gives exactly PIL's pixels, so crops are the same bytes
whether or not it is built.

These run where the decoder is built, and fail rather than skip under IWC_REQUIRE_BAND_DECODER=1 (`.ci/run`
installs libjpeg-turbo's headers and sets it).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iwc.data import jpeg_region
from iwc.data.crops import extract_crops


@pytest.fixture(scope="module")
def native():
    """The compiled module; a failure (not a skip) under IWC_REQUIRE_BAND_DECODER=1."""
    if jpeg_region._iwc_jpeg is None:
        if os.environ.get("IWC_REQUIRE_BAND_DECODER") == "1":
            pytest.fail("IWC_REQUIRE_BAND_DECODER=1 but _iwc_jpeg is not built: install gcc and libjpeg-turbo's "
                        "headers (Debian: libjpeg62-turbo-dev), then `pip install -e .` again")
        pytest.skip("_iwc_jpeg is not built here (no C compiler or libjpeg-turbo headers at install)")
    return jpeg_region._iwc_jpeg


# Chroma subsampling and coding: each takes a different upsampling path through libjpeg.
ENCODINGS = {"420": {}, "422": {"subsampling": 1}, "444": {"subsampling": 0}, "progressive": {"progressive": True}}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Noisy photos (odd sizes: partial iMCUs at the right and bottom), one per encoding: {name: path}."""
    folder = tmp_path_factory.mktemp("band")
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.uniform(30, 220, (5, 7, 3)).astype(np.uint8)).resize((611, 453)))
    pixels = (smooth + rng.normal(0, 12, smooth.shape)).clip(0, 255).astype(np.uint8)
    paths = {}
    for name, options in ENCODINGS.items():
        paths[name] = folder / f"{name}.jpg"
        Image.fromarray(pixels).save(paths[name], quality=90, **options)
    return paths


def _pil(path, scale: int) -> np.ndarray:
    with Image.open(path) as img:
        if scale > 1:
            img.draft("RGB", (img.width // scale, img.height // scale))
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_regions_are_pil_pixels_exactly(native, photos, encoding, scale):
    whole = _pil(photos[encoding], scale)
    height, width = whole.shape[:2]
    rng = np.random.default_rng(scale)
    regions = []
    for _ in range(12):
        left, top = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
        regions.append((left, top, int(rng.integers(left + 1, width + 1)), int(rng.integers(top + 1, height + 1))))
    regions += [(0, 0, width, height), (width - 1, height - 1, width, height)]  # all of it; the last pixel
    with Image.open(photos[encoding]) as img:
        got = [jpeg_region.decode_regions(photos[encoding], img, scale, [r]) for r in regions]
        together = jpeg_region.decode_regions(photos[encoding], img, scale, regions)  # one band for all
    for (left, top, right, bottom), alone, joint in zip(regions, got, together, strict=True):
        assert np.array_equal(np.asarray(alone[0]), whole[top:bottom, left:right])
        assert np.array_equal(np.asarray(joint), whole[top:bottom, left:right])


def test_crops_are_the_same_bytes_with_and_without_the_band_decoder(native, photos, tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for name in photos:
        for k in range(4):  # several boxes per image, some at the edges, small to large (every draft scale)
            w, h = rng.uniform(0.05, 0.6, 2)
            x, y = [(0.0, 0.0), (1 - w, 1 - h)][k] if k < 2 else (rng.uniform(0, 1 - w), rng.uniform(0, 1 - h))
            rows.append((f"{name}_{k}", name, 0.9, x, y, w, h))
    selection = pd.DataFrame(rows, columns=["crop_id", "image_id", "conf", "x", "y", "w", "h"])
    folder = next(iter(photos.values())).parent
    for margin in (0.0, 0.2):
        band = extract_crops(selection, folder, tmp_path / f"band{margin}", size=48, margin=margin, progress=False)
        pil = extract_crops(selection, folder, tmp_path / f"pil{margin}", size=48, margin=margin, progress=False,
                            band=False)
        assert band.failed == pil.failed == [] and len(band.index) == len(selection)
        for a, b in zip(band.index["path"], pil.index["path"], strict=True):
            assert Path(a).read_bytes() == Path(b).read_bytes(), a


def test_decoder_declines_what_pil_must_decide(native, photos, tmp_path):
    Image.new("L", (64, 48), 90).save(tmp_path / "gray.jpg")
    Image.new("RGB", (64, 48)).save(tmp_path / "flat.png")
    (tmp_path / "cut.jpg").write_bytes(photos["420"].read_bytes()[:-2000])  # truncated: no end-of-image marker
    for name in ("gray.jpg", "flat.png", "cut.jpg"):
        with Image.open(tmp_path / name) as img:
            assert jpeg_region.decode_regions(tmp_path / name, img, 1, [(0, 0, 8, 8)]) is None, name


def test_what_the_band_decoder_cannot_decode_goes_to_pil(native, photos, tmp_path, monkeypatch):
    def refuse(*args):
        raise ValueError("Unsupported JPEG process")

    monkeypatch.setattr(native, "decode_rows", refuse)
    selection = pd.DataFrame([("c", "444", 0.9, 0.1, 0.1, 0.3, 0.3)],
                             columns=["crop_id", "image_id", "conf", "x", "y", "w", "h"])
    with Image.open(photos["444"]) as img:
        assert jpeg_region.decode_regions(photos["444"], img, 1, [(0, 0, 8, 8)]) is None
    folder = photos["444"].parent
    refused = extract_crops(selection, folder, tmp_path / "refused", size=16, progress=False)
    pil = extract_crops(selection, folder, tmp_path / "pil", size=16, progress=False, band=False)
    assert refused.failed == [] and Path(refused.index.loc[0, "path"]).read_bytes() == \
        Path(pil.index.loc[0, "path"]).read_bytes()


def test_truncated_original_fails_the_same_with_and_without_the_band_decoder(native, photos, tmp_path):
    (tmp_path / "cut.jpg").write_bytes(photos["444"].read_bytes()[:-4000])
    selection = pd.DataFrame([("c", "cut", 0.9, 0.0, 0.0, 0.2, 0.2)],
                             columns=["crop_id", "image_id", "conf", "x", "y", "w", "h"])
    for band in (True, False):
        result = extract_crops(selection, tmp_path, tmp_path / f"out{band}", size=16, progress=False, band=band)
        assert result.failed == ["cut"] and result.index.empty


def test_bad_requests_raise_value_error(native, photos):
    data = photos["420"].read_bytes()
    for args, message in [((b"not a jpeg", 1, 0, 0, 8, 8), "Not a JPEG"), ((data, 3, 0, 0, 8, 8), "scale must be"),
                          ((data, 1, 0, 0, 612, 8), "not inside the 611x453"), ((data, 2, 5, 5, 5, 9), "not inside"),
                          ((data[:len(data) // 2], 1, 0, 440, 8, 453), "Premature end")]:
        with pytest.raises(ValueError, match=message):
            native.decode_rows(*args)
    pixels, x0, width, out_width, out_height = native.decode_rows(data, 2, 100, 10, 120, 20)
    assert (out_width, out_height) == (306, 227) and x0 <= 100 and x0 + width >= 120
    assert len(pixels) == width * 3 * 10
