"""Crops from MegaDetector boxes: box geometry, box selection, and extraction on synthetic originals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_decode import bomb_jpeg, gray16_png

from iwc.data import crops, jpeg_region
from iwc.data.crops import (
    SELECTION_COLUMNS,
    box_to_pixels,
    draft_scale,
    extract_crops,
    select_boxes,
)
from iwc.errors import IwcError

WIDTH, HEIGHT = 2000, 1500
RED = (600, 450, 1000, 750)  # pixel rectangle of the known object
RED_BOX = [0.3, 0.3, 0.2, 0.2]  # the same rectangle, normalized [x, y, w, h]


def _photo(path, size=(WIDTH, HEIGHT), red=RED, exif=None):
    """A grey JPEG with a solid red rectangle at `red` (pixels)."""
    img = Image.new("RGB", size, (128, 128, 128))
    img.paste((220, 20, 20), red)
    img.save(path, quality=90, **({"exif": exif} if exif else {}))


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def _red_mask(a: np.ndarray) -> np.ndarray:
    return (a[..., 0] > 170) & (a[..., 1] < 80) & (a[..., 2] < 80)


def _selection(rows):
    """Selection frame from (crop_id, image_id, bbox) tuples."""
    return pd.DataFrame(
        [(c, i, 0.9, *bbox) for c, i, bbox in rows],
        columns=SELECTION_COLUMNS,
    )


# --- box_to_pixels ---------------------------------------------------------------------------------


def test_box_to_pixels_inside_the_image():
    assert box_to_pixels(RED_BOX, WIDTH, HEIGHT) == RED


def test_box_to_pixels_margin_grows_every_side_by_box_size():
    assert box_to_pixels(RED_BOX, WIDTH, HEIGHT, margin=0.25) == (500, 375, 1100, 825)


def test_box_to_pixels_clips_to_the_image():
    assert box_to_pixels([-0.1, 0.9, 0.3, 0.3], WIDTH, HEIGHT) == (0, 1350, 400, 1500)
    assert box_to_pixels([0.0, 0.0, 1.0, 1.0], WIDTH, HEIGHT, margin=0.5) == (0, 0, WIDTH, HEIGHT)


def test_box_to_pixels_degenerate_boxes_keep_one_pixel():
    assert box_to_pixels([0.5, 0.5, 0.0, 0.0], WIDTH, HEIGHT) == (1000, 750, 1001, 751)
    assert box_to_pixels([1.2, 0.5, 0.1, 0.0], WIDTH, HEIGHT) == (1999, 750, 2000, 751)
    assert box_to_pixels([-0.5, -0.5, 0.1, 0.1], WIDTH, HEIGHT) == (0, 0, 1, 1)


# --- select_boxes ----------------------------------------------------------------------------------


def _detections():
    rows = [
        ("b", 1, 0.2, 0.5, 0.5, 0.1, 0.1),
        ("a", 1, 0.5, 0.1, 0.1, 0.2, 0.2),
        ("c", 2, 0.99, 0.0, 0.0, 0.5, 0.5),  # person only
        ("a", 2, 0.99, 0.0, 0.0, 0.5, 0.5),  # person beats every animal box of a
        ("b", 1, 0.3, 0.2, 0.2, 0.1, 0.1),  # exactly at the threshold
        ("a", 1, 0.9, 0.4, 0.4, 0.3, 0.3),
        ("d", 3, 0.8, 0.0, 0.0, 0.5, 0.5),  # vehicle
    ]
    return pd.DataFrame(rows, columns=["image_id", "category", "conf", "x", "y", "w", "h"])


def test_select_best_keeps_the_most_confident_animal_above_threshold():
    got = select_boxes(_detections(), rule="best", threshold=0.3)
    assert list(got.columns) == SELECTION_COLUMNS
    assert got["crop_id"].tolist() == ["a"]  # b's 0.3 box is not > 0.3; c, d have no animal
    assert got.loc[0, ["conf", "x", "y", "w", "h"]].tolist() == [0.9, 0.4, 0.4, 0.3, 0.3]


def test_select_all_keeps_every_animal_at_or_above_threshold_by_descending_conf():
    got = select_boxes(_detections(), rule="all", threshold=0.3)
    assert got["crop_id"].tolist() == ["a_0", "a_1", "b_0"]
    assert got["image_id"].tolist() == ["a", "a", "b"]
    assert got["conf"].tolist() == [0.9, 0.5, 0.3]


def test_select_is_independent_of_input_order():
    dets = _detections()
    shuffled = dets.sample(frac=1.0, random_state=3)
    for rule in ("best", "all"):
        pd.testing.assert_frame_equal(select_boxes(shuffled, rule, 0.1), select_boxes(dets, rule, 0.1))


def test_select_rejects_unknown_rule_and_missing_columns():
    with pytest.raises(IwcError, match="unknown crop rule"):
        select_boxes(_detections(), rule="largest")
    with pytest.raises(IwcError, match="conf"):
        select_boxes(_detections().drop(columns="conf"))


def test_select_on_no_detections_is_empty_with_the_right_columns():
    got = select_boxes(_detections().iloc[:0], rule="all")
    assert list(got.columns) == SELECTION_COLUMNS and got.empty


# --- draft_scale -----------------------------------------------------------------------------------


def test_draft_scale_keeps_every_box_at_least_size_pixels():
    assert draft_scale((WIDTH, HEIGHT), [RED_BOX], size=128) == 2  # 400x300 px: /4 would give 75 rows
    assert draft_scale((WIDTH, HEIGHT), [RED_BOX], size=32) == 8
    assert draft_scale((WIDTH, HEIGHT), [RED_BOX, [0.0, 0.0, 0.05, 0.05]], size=32) == 2
    assert draft_scale((WIDTH, HEIGHT), [[0.0, 0.0, 0.01, 0.01]], size=128) == 1
    assert draft_scale((WIDTH, HEIGHT), [RED_BOX], size=128, margin=0.5) == 4  # 800x600 px


# --- extract_crops ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("originals")
    _photo(d / "img1.jpg")
    _photo(d / "edge.jpg", red=(1700, 1200, 2000, 1500))  # object touching the bottom-right corner
    return d


@pytest.mark.parametrize("draft", [True, False])
def test_crop_covers_the_known_object(originals, tmp_path, draft):
    sel = _selection([("img1", "img1", RED_BOX), ("beside", "img1", [0.55, 0.3, 0.2, 0.2])])
    result = extract_crops(sel, originals, tmp_path, size=64, draft=draft, progress=False)
    assert result.failed == [] and result.index["crop_id"].tolist() == ["img1", "beside"]
    inside, beside = (_pixels(p) for p in result.index["path"])
    assert inside.shape == (64, 64, 3)
    assert _red_mask(inside).mean() > 0.97
    assert _red_mask(beside).mean() < 0.02


def test_margin_shows_the_surroundings_around_the_object(originals, tmp_path):
    result = extract_crops(_selection([("m", "img1", RED_BOX)]), originals, tmp_path, 96, 0.25, progress=False)
    red = _red_mask(_pixels(result.index.loc[0, "path"]))
    # The box grows by a quarter on each side: the object fills the middle 2/3 in each direction.
    assert abs(red.mean() - (2 / 3) ** 2) < 0.03
    assert red[20:76, 20:76].all()
    assert not red[:, :12].any() and not red[:, 84:].any() and not red[:12].any() and not red[84:].any()


def test_draft_and_full_decode_crops_are_close(originals, tmp_path):
    sel = _selection([("a", "img1", [0.25, 0.25, 0.3, 0.3])])  # half grey, half red: edges matter
    draft = extract_crops(sel, originals, tmp_path / "draft", size=64, draft=True, progress=False)
    full = extract_crops(sel, originals, tmp_path / "full", size=64, draft=False, progress=False)
    a, b = _pixels(draft.index.loc[0, "path"]), _pixels(full.index.loc[0, "path"])
    assert np.abs(a - b).mean() < 3.0


def test_box_partly_outside_the_image_is_clipped(originals, tmp_path):
    sel = _selection([("e", "edge", [0.85, 0.8, 0.3, 0.4])])
    result = extract_crops(sel, originals, tmp_path, size=32, progress=False)
    assert _red_mask(_pixels(result.index.loc[0, "path"])).mean() > 0.95


def test_exif_orientation_is_applied_before_cutting(tmp_path):
    # Stored sideways with orientation 6 ("rotate 90 deg clockwise to view"): upright it is 1500x2000.
    upright = Image.new("RGB", (HEIGHT, WIDTH), (128, 128, 128))
    upright.paste((220, 20, 20), (300, 1000, 600, 1400))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rot.jpg", quality=90, exif=exif)
    sel = _selection([("rot", "rot", [0.2, 0.5, 0.2, 0.2])])
    for draft in (True, False):
        result = extract_crops(sel, tmp_path, tmp_path / f"out{draft}", size=64, draft=draft, progress=False)
        assert _red_mask(_pixels(result.index.loc[0, "path"])).mean() > 0.97


def test_grayscale_original_gives_rgb_crop(tmp_path):
    Image.new("L", (WIDTH, HEIGHT), 90).save(tmp_path / "night.jpg", quality=90)
    result = extract_crops(_selection([("n", "night", RED_BOX)]), tmp_path, tmp_path / "out", 32, progress=False)
    with Image.open(result.index.loc[0, "path"]) as crop:
        assert (crop.mode, crop.size) == ("RGB", (32, 32))


def test_missing_and_corrupt_originals_are_reported_not_fatal(originals, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "garbage.jpg").write_bytes(b"not a jpeg")
    full = (originals / "img1.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (images / "good.jpg").write_bytes(full)
    sel = _selection([(i, i, RED_BOX) for i in ("garbage", "good", "missing", "truncated")])
    result = extract_crops(sel, images, tmp_path / "out", size=32, progress=False)
    assert result.failed == ["garbage", "missing", "truncated"]
    assert result.index["crop_id"].tolist() == ["good"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == ["good.jpg"]
    assert "3 images missing or undecodable" in result.summary()


def test_a_decompression_bomb_original_is_reported_not_fatal(originals, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.jpg").write_bytes((originals / "img1.jpg").read_bytes())
    bomb_jpeg(images / "bomb.jpg")
    result = extract_crops(_selection([("bomb", "bomb", RED_BOX), ("good", "good", RED_BOX)]), images,
                           tmp_path / "out", size=32, progress=False)
    assert result.failed == ["bomb"]
    assert result.index["crop_id"].tolist() == ["good"]


def test_a_sixteen_bit_png_named_jpg_gives_a_mid_grey_crop(tmp_path):
    gray16_png(tmp_path / "deep.jpg", size=(400, 300))
    result = extract_crops(_selection([("deep", "deep", RED_BOX)]), tmp_path, tmp_path / "out", 32, progress=False)
    crop = _pixels(result.index.loc[0, "path"])
    assert result.failed == [] and crop.shape == (32, 32, 3)
    assert np.abs(crop - 128).max() <= 1  # JPEG rounding; PIL's own convert would give 255


@pytest.mark.parametrize(("crop_id", "image_id"), [("../../victim", "img1"), ("img1", "../img1"),
                                                   ("/tmp/victim", "img1"), ("a\\b", "img1")])
def test_a_path_from_an_id_never_leaves_its_folder(originals, tmp_path, crop_id, image_id):
    images, out = tmp_path / "a" / "images", tmp_path / "a" / "out"
    images.mkdir(parents=True)
    (images / "img1.jpg").write_bytes((originals / "img1.jpg").read_bytes())
    (tmp_path / "img1.jpg").write_bytes((originals / "img1.jpg").read_bytes())  # what '../img1' would reach
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(IwcError, match="is not a plain file name"):
        extract_crops(_selection([(crop_id, image_id, RED_BOX)]), images, out, size=32, progress=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_same_inputs_give_identical_bytes(originals, tmp_path):
    sel = _selection([("x_0", "img1", RED_BOX), ("x_1", "img1", [0.1, 0.2, 0.3, 0.1])])
    for out in ("one", "two"):
        extract_crops(sel, originals, tmp_path / out, size=48, progress=False)
    for name in ("x_0.jpg", "x_1.jpg"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_rerun_reuses_crops_cut_with_the_same_settings_and_recuts_on_other_settings(originals, tmp_path):
    sel = _selection([("r", "img1", RED_BOX)])
    first = extract_crops(sel, originals, tmp_path, size=32, progress=False)
    stamp = (tmp_path / "r.jpg").stat().st_mtime_ns
    again = extract_crops(sel, originals, tmp_path, size=32, progress=False)
    assert (first.reused, again.reused) == (0, 1)
    assert (tmp_path / "r.jpg").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(first.index, again.index)
    wider = extract_crops(sel, originals, tmp_path, size=32, margin=0.25, progress=False)
    assert wider.reused == 0
    assert _red_mask(_pixels(tmp_path / "r.jpg")).mean() < 0.6  # cut again: the margin shows grey around it
    assert extract_crops(sel, originals, tmp_path, size=32, margin=0.25, progress=False).reused == 1


def test_crops_squashed_another_way_are_cut_again(originals, tmp_path, monkeypatch):
    sel = _selection([("r", "img1", RED_BOX)])
    extract_crops(sel, originals, tmp_path, size=32, progress=False)
    monkeypatch.setattr(crops, "SQUASH", "an older squash")  # what crops cut before a change of `_write_crop` hold
    assert extract_crops(sel, originals, tmp_path, size=32, progress=False).reused == 0


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.jpg")}


def test_a_changed_box_is_cut_again_and_the_other_crops_are_reused(originals, tmp_path):
    boxes = {"a": RED_BOX, "b": [0.1, 0.1, 0.2, 0.2], "c": [0.55, 0.3, 0.2, 0.2]}
    extract_crops(_selection([(c, "img1", b) for c, b in boxes.items()]), originals, tmp_path, 32, progress=False)
    before = _mtimes(tmp_path)
    assert _red_mask(_pixels(tmp_path / "c.jpg")).mean() < 0.02
    boxes["c"] = RED_BOX  # new MegaDetector output moved this box onto the object
    result = extract_crops(_selection([(c, "img1", b) for c, b in boxes.items()]), originals, tmp_path, 32,
                           progress=False)
    after = _mtimes(tmp_path)
    assert result.reused == 2
    assert after["a.jpg"] == before["a.jpg"] and after["b.jpg"] == before["b.jpg"]
    assert after["c.jpg"] != before["c.jpg"]
    assert _red_mask(_pixels(tmp_path / "c.jpg")).mean() > 0.97  # cut from the new box, not reused stale


def test_a_crop_without_its_key_or_from_a_changed_original_is_cut_again(originals, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "img1.jpg").write_bytes((originals / "img1.jpg").read_bytes())
    sel = _selection([("k", "img1", RED_BOX)])
    extract_crops(sel, images, tmp_path / "out", size=32, progress=False)
    Image.new("RGB", (32, 32), (0, 0, 255)).save(tmp_path / "out" / "k.jpg")  # same name and size, no key
    redone = extract_crops(sel, images, tmp_path / "out", size=32, progress=False)
    assert redone.reused == 0 and _red_mask(_pixels(tmp_path / "out" / "k.jpg")).mean() > 0.97
    _photo(images / "img1.jpg", red=(0, 0, 10, 10))  # the original replaced: its crop is stale
    moved = extract_crops(sel, images, tmp_path / "out", size=32, progress=False)
    assert moved.reused == 0 and _red_mask(_pixels(tmp_path / "out" / "k.jpg")).mean() < 0.02
    (images / "img1.jpg").unlink()  # gone: its old crop is not passed off as current
    gone = extract_crops(sel, images, tmp_path / "out", size=32, progress=False)
    assert gone.failed == ["img1"] and gone.index.empty


@pytest.mark.parametrize("band", [True, False])
@pytest.mark.parametrize(("draft", "decoded"), [(True, (500, 375)), (False, (WIDTH, HEIGHT))])
def test_draft_decodes_at_the_reduced_scale(originals, tmp_path, monkeypatch, draft, decoded, band):
    sizes = []  # the size each decode gave: PIL's image, or the band decoder's output
    to_rgb = crops.to_rgb

    def pil_spy(img):
        sizes.append(img.size)
        return to_rgb(img)

    monkeypatch.setattr(crops, "to_rgb", pil_spy)
    native = jpeg_region._iwc_jpeg
    if native is not None:
        def band_spy(*args):
            done = native.decode_rows(*args)
            sizes.append(tuple(done[3:]))
            return done

        monkeypatch.setattr(jpeg_region, "_iwc_jpeg", SimpleNamespace(decode_rows=band_spy))
    extract_crops(_selection([("s", "img1", RED_BOX)]), originals, tmp_path, size=64, draft=draft, progress=False,
                  band=band)
    assert sizes == [decoded]  # 400x300 px box at 1/4 is 100x75 >= 64; at 1/8 it would be too small


def test_boxes_are_grouped_per_image_in_id_order_keeping_their_order():
    """The grouping `extract_crops` hands to its workers: as a pandas groupby gives it, without its per-group cost."""
    rng = np.random.default_rng(0)
    image_ids = rng.choice(["b", "a", "c", "e"], 40)
    selection = pd.DataFrame({"image_id": image_ids, "crop_id": [f"{i}_{k}" for k, i in enumerate(image_ids)],
                              "conf": rng.random(40), **{c: rng.random(40) for c in "xywh"}})
    expected = [(i, g["crop_id"].tolist(), g["conf"].to_numpy(), g[["x", "y", "w", "h"]].to_numpy())
                for i, g in selection.groupby("image_id", sort=True)]
    got = crops._per_image(selection)
    assert [(i, c) for i, c, _, _ in got] == [(i, c) for i, c, _, _ in expected]
    for (_, _, conf, box), (_, _, want_conf, want_box) in zip(got, expected, strict=True):
        assert np.array_equal(conf, want_conf) and np.array_equal(box, want_box)
    assert crops._per_image(selection.iloc[:0]) == []
