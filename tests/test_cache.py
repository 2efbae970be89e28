import numpy as np
import pytest
from PIL import Image
from test_decode import bomb_jpeg, gray16_png

import iwc.data.cache as cache
from iwc.data.cache import ImageCache, build_cache
from iwc.errors import IwcError


def _photo(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, np.sin(6 * xx * yy + seed)], -1) * 120 + rng.integers(40, 100, 3)
    return (base + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture
def jpegs(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    paths = []
    for i in range(12):
        path = folder / f"img{i}.jpg"
        Image.fromarray(_photo(i)).save(path, quality=90)
        paths.append(path)
    return paths, [p.stem for p in paths]


def _direct(path, size):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=float)


def test_roundtrip_matches_direct_resize(jpegs, tmp_path):
    paths, ids = jpegs
    built = build_cache(paths, ids, 40, tmp_path / "c", progress=False)
    opened = ImageCache.open(tmp_path / "c")
    assert opened.ids == ids and opened.size == 40 and opened.failed == [] and len(opened) == 12
    assert opened.images.shape == (12, 40, 40, 3) and opened.images.dtype == np.uint8
    assert not opened.images.flags.writeable
    assert np.array_equal(built.images, opened.images)
    for i in (0, 5, 11):
        assert np.abs(opened.images[i] - _direct(paths[i], 40)).mean() < 1.5


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.fromarray(_photo(1)[..., 0]).save(path)
    png = tmp_path / "rgba.png"
    Image.fromarray(_photo(2)).convert("RGBA").save(png)
    c = build_cache([path, png], ["g", "p"], 32, tmp_path / "c", progress=False)
    gray = c.images[0].astype(int)
    assert gray.std() > 5
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    assert np.abs(c.images[1] - _direct(png, 32)).mean() < 1


def test_failures_recorded_rows_zero(jpegs, tmp_path):
    paths, ids = jpegs
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [*paths[:3], tmp_path / "broken.jpg", tmp_path / "missing.jpg"]
    ids = [*ids[:3], "broken", "missing"]
    c = build_cache(paths, ids, 24, tmp_path / "c", progress=False)
    assert c.failed == ["broken", "missing"]
    assert not c.images[3:].any() and (c.images[:3].mean(axis=(1, 2, 3)) > 20).all()


def test_a_decompression_bomb_is_a_failed_row_not_a_crash(jpegs, tmp_path):
    paths, _ = jpegs
    c = build_cache([paths[0], bomb_jpeg(tmp_path / "bomb.jpg")], ["ok", "bomb"], 24, tmp_path / "c", progress=False)
    assert c.failed == ["bomb"]
    assert not c.images[1].any() and c.images[0].any()


def test_a_sixteen_bit_png_named_jpg_caches_mid_grey_not_white(tmp_path):
    c = build_cache([gray16_png(tmp_path / "deep.jpg")], ["deep"], 24, tmp_path / "c", progress=False)
    assert c.failed == []
    assert c.images[0].min() == c.images[0].max() == 128


def test_complete_cache_reused_without_rewriting(jpegs, tmp_path, monkeypatch):
    paths, ids = jpegs
    build_cache(paths, ids, 24, tmp_path / "c", progress=False)
    files = [tmp_path / "c" / cache.IMAGES_FILE, tmp_path / "c" / cache.META_FILE]
    before = [f.stat().st_mtime_ns for f in files]

    def no_decode(path, size):
        raise AssertionError("a complete cache must not decode again")

    monkeypatch.setattr(cache, "decode_image", no_decode)
    again = build_cache(paths, ids, 24, tmp_path / "c", progress=False)
    assert [f.stat().st_mtime_ns for f in files] == before
    assert again.ids == ids


def test_interrupted_build_resumes(jpegs, tmp_path, monkeypatch):
    paths, ids = jpegs
    reference = build_cache(paths, ids, 24, tmp_path / "whole", progress=False).images
    monkeypatch.setattr(cache, "FLUSH_EVERY", 4)
    real_decode = cache.decode_image
    decoded = []

    def crash_on_ninth(path, size):
        if path == paths[9]:
            raise KeyboardInterrupt
        decoded.append(path)
        return real_decode(path, size)

    monkeypatch.setattr(cache, "decode_image", crash_on_ninth)
    with pytest.raises(KeyboardInterrupt):
        build_cache(paths, ids, 24, tmp_path / "c", progress=False)
    with pytest.raises(IwcError, match="no complete image cache"):
        ImageCache.open(tmp_path / "c")

    def counting(path, size):
        decoded.append(path)
        return real_decode(path, size)

    monkeypatch.setattr(cache, "decode_image", counting)
    decoded.clear()
    resumed = build_cache(paths, ids, 24, tmp_path / "c", progress=False)
    assert sorted(decoded) == sorted(paths[8:])  # the two flushed blocks of 4 are not decoded again
    assert np.array_equal(resumed.images, reference)
    assert not (tmp_path / "c" / cache.STATE_FILE).exists()


def test_changed_source_rebuilds(jpegs, tmp_path):
    paths, ids = jpegs
    build_cache(paths, ids, 24, tmp_path / "c", progress=False)
    Image.fromarray(np.full((96, 96, 3), 255, np.uint8)).save(paths[0])
    c = build_cache(paths, ids, 24, tmp_path / "c", progress=False)
    assert c.images[0].min() > 250
    smaller = build_cache(paths, ids, 16, tmp_path / "c", progress=False)
    assert smaller.images.shape == (12, 16, 16, 3)


def test_bad_arguments_raise(jpegs, tmp_path):
    paths, ids = jpegs
    with pytest.raises(IwcError, match="one id per path"):
        build_cache(paths, ids[:-1], 24, tmp_path / "c")
    with pytest.raises(IwcError, match="repeat"):
        build_cache(paths[:2], ["a", "a"], 24, tmp_path / "c")
