import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iwc.data.competition import (
    MD_JSON,
    SAMPLE_CSV,
    TEST_JSON,
    TRAIN_JSON,
    Competition,
    check_images,
    check_megadetector,
    read_megadetector,
    read_sample_submission,
    read_test,
    read_train,
)
from iwc.data.issues import DataIssues
from iwc.errors import IwcError

IMAGE_DTYPES = {"id": "str", "file_name": "str", "location": "int64", "seq_id": "str", "seq_num_frames": "int64",
                "frame_num": "int64", "datetime": "datetime64[ns]", "width": "int64", "height": "int64"}
CATEGORIES = [{"id": 0, "name": "empty", "count": 3}, {"id": 372, "name": "tayassu pecari", "count": 1},
              {"id": 675, "name": "zebra", "count": 0}]


def image(i, location=3, when="2013-08-02 21:44:00.000", prefix="img"):
    image_id = f"{prefix}{i}"
    return {"id": image_id, "file_name": f"{image_id}.jpg", "location": location, "seq_id": f"seq{i // 2}",
            "seq_num_frames": 2, "frame_num": 1 + i % 2, "datetime": when, "width": 2048, "height": 1536}


def train_data(n=3, labels=(0, 372, 0)):
    """Train annotations in the exact competition layout: image i is labelled labels[i]."""
    return {"info": {"version": "1.0"}, "images": [image(i) for i in range(n)],
            "annotations": [{"id": f"ann{i}", "image_id": f"img{i}", "category_id": c, "count": 1}
                            for i, c in enumerate(labels)],
            "categories": [dict(c) for c in CATEGORIES]}


def md_data():
    return {"info": {"detector": "megadetector_v3"},
            "images": [{"id": "img0", "max_detection_conf": 0.9,
                        "detections": [{"category": "1", "bbox": [0.1, 0.2, 0.3, 0.4], "conf": 0.9},
                                       {"category": "2", "bbox": [0.0, 0.5, 0.5, 0.5], "conf": 0.2}]},
                       {"id": "img1", "max_detection_conf": 0.0, "detections": []},
                       {"id": "t0", "max_detection_conf": 0.7,
                        "detections": [{"category": "1", "bbox": [0.5, 0.5, 0.25, 0.25], "conf": 0.7}]}],
            "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}}


def write_json(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_competition(root, train=None, md=None, sample="Id,Category\nt0,0\nt1,0\n"):
    """A competition folder in the real formats; pass a dict to replace one file's content."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / TRAIN_JSON, train or train_data())
    write_json(root / TEST_JSON, {"images": [image(0, location=9, prefix="t"), image(1, location=9, prefix="t")],
                                  "categories": CATEGORIES, "info": {"version": "1.0"}})
    write_json(root / MD_JSON, md or md_data())
    (root / SAMPLE_CSV).write_text(sample, encoding="utf-8")
    return root


def test_load_gives_typed_frames_with_original_category_ids(tmp_path):
    comp = Competition.load(write_competition(tmp_path / "comp"), detections=True)

    assert {c: str(t) for c, t in comp.train.dtypes.items()} == {**IMAGE_DTYPES, "category_id": "int64"}
    assert {c: str(t) for c, t in comp.test.dtypes.items()} == IMAGE_DTYPES
    assert comp.train["id"].tolist() == ["img0", "img1", "img2"]
    assert comp.train["category_id"].tolist() == [0, 372, 0]
    assert comp.train["datetime"].iloc[0] == pd.Timestamp("2013-08-02 21:44:00")
    assert comp.test["id"].tolist() == ["t0", "t1"]
    assert comp.categories["id"].tolist() == [0, 372, 675]
    assert {c: str(t) for c, t in comp.categories.dtypes.items()} == {"id": "int64", "name": "str",
                                                                      "count": "int64"}
    det = comp.detections
    assert {c: str(t) for c, t in det.dtypes.items()} == {"image_id": "str", "category": "int64", "conf": "float64",
                                                          "x": "float64", "y": "float64", "w": "float64",
                                                          "h": "float64"}
    assert det["image_id"].tolist() == ["img0", "img0", "t0"]
    assert det["category"].tolist() == [1, 2, 1]
    assert det.iloc[0][["x", "y", "w", "h"]].tolist() == [0.1, 0.2, 0.3, 0.4]
    assert det.attrs["failures"] == 0
    assert comp.sample["Id"].tolist() == ["t0", "t1"]
    assert str(comp.sample["Category"].dtype) == "int64"
    # train/test images the MegaDetector file does not cover are recorded, by id
    assert comp.issues.ids() == {"no_detector_entry": ["img2", "t1"]}


@pytest.mark.parametrize("md", [None, "{not json", '{"images": 5}'])
def test_load_without_detections_neither_needs_nor_reads_the_megadetector_file(tmp_path, md):
    root = write_competition(tmp_path / "comp")
    if md is None:
        (root / MD_JSON).unlink()
    else:
        (root / MD_JSON).write_text(md, encoding="utf-8")
    comp = Competition.load(root)
    assert comp.detections is None and len(comp.issues) == 0
    assert comp.train["id"].tolist() == ["img0", "img1", "img2"]
    with pytest.raises(IwcError, match=MD_JSON):
        Competition.load(root, detections=True)


def test_microseconds_parse_and_missing_category_count_defaults_to_zero(tmp_path):
    data = {"images": [image(0, when="2019-12-31 23:59:59.250")],
            "categories": [{"id": 5, "name": "deer"}]}
    images, categories = read_test(write_json(tmp_path / TEST_JSON, data))
    assert images["datetime"].iloc[0] == pd.Timestamp("2019-12-31 23:59:59.250")
    assert categories["count"].tolist() == [0]


def test_repeated_annotation_with_same_category_is_kept_once(tmp_path):
    data = train_data(labels=(0, 372, 0))
    data["annotations"].append({"id": "again", "image_id": "img1", "category_id": 372, "count": 2})
    images, _ = read_train(write_json(tmp_path / TRAIN_JSON, data))
    assert images["category_id"].tolist() == [0, 372, 0]


def test_missing_competition_file_names_it_and_says_what_to_do(tmp_path):
    root = write_competition(tmp_path / "comp")
    (root / MD_JSON).unlink()
    with pytest.raises(IwcError, match=MD_JSON) as err:
        Competition.load(root, detections=True)
    assert "iwc demo-data" in str(err.value)
    assert TRAIN_JSON not in str(err.value)


def test_megadetector_batch_format_keyed_by_file_with_failures(tmp_path, caplog):
    data = {"images": [{"file": "train/abc.jpg", "max_detection_conf": 0.8,
                        "detections": [{"category": "1", "bbox": [0.1, 0.1, 0.2, 0.2], "conf": 0.8}]},
                       {"file": "test/broken.jpg", "failure": "Failure image access"},
                       {"file": "test\\xyz.JPG", "detections": []},
                       {"file": "def.jpg", "detections": [{"category": 3, "bbox": [0, 0, 1, 1], "conf": 1}]}],
            "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}}
    with caplog.at_level(logging.WARNING):
        det = read_megadetector(write_json(tmp_path / "md.json", data))
    assert det["image_id"].tolist() == ["abc", "def"]
    assert det["category"].tolist() == [1, 3]
    assert det.attrs["failures"] == 1
    assert "skipped 1 image" in caplog.text


def test_megadetector_without_any_detection_has_typed_empty_frame(tmp_path):
    det = read_megadetector(write_json(tmp_path / "md.json", {"images": [{"id": "a", "detections": []}]}))
    assert len(det) == 0
    assert str(det["conf"].dtype) == "float64" and str(det["category"].dtype) == "int64"


DELETE = object()


def _break(data, path, value):
    """Set data[path[0]][path[1]]... = value, or delete the key when value is DELETE."""
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


TRAIN_PROBLEMS = [
    (("images", 1, "datetime"), "yesterday",
     "images[1] (id 'img1'): field 'datetime' = 'yesterday' is not '%Y-%m-%d %H:%M:%S.%f'"),
    (("images", 0, "location"), DELETE, "images[0] (id 'img0'): field 'location' is missing"),
    (("images", 0, "datetime"), "2013-08-02 21:44:00",
     "images[0] (id 'img0'): field 'datetime' = '2013-08-02 21:44:00' is not"),
    (("images", 0, "datetime"), "3013-08-02 21:44:00.000", "images[0] (id 'img0'): field 'datetime' = '3013-08-02"),
    (("images", 2, "width"), "2048", "images[2] (id 'img2'): field 'width' = '2048' is not an integer"),
    (("images", 2, "id"), "img0", "images[2] (id 'img0'): field 'id' repeats images[0] (id 'img0')"),
    (("images", 1), "img1", "images[1]: is 'img1', not an object"),
    (("annotations",), DELETE, "top level: field 'annotations' is missing"),
    (("annotations", 1, "image_id"), "ghost", "annotations[1] (id 'ann1'): field 'image_id' = 'ghost' names no image"),
    (("annotations", 2, "category_id"), 999, "annotations[2] (id 'ann2'): field 'category_id' = 999 is not a category"),
    (("annotations", 0, "category_id"), None, "annotations[0] (id 'ann0'): field 'category_id' is null"),
    (("categories", 1, "name"), 7, "categories[1] (id 372): field 'name' = 7 is not a string"),
    # ids become file names: one that is no plain file name would reach another folder
    (("images", 0, "id"), "../../victim",
     "images[0] (id '../../victim'): field 'id' = '../../victim' is not a plain file name"),
    *[(("images", 1, "id"), bad, f"images[1] (id {bad!r}): field 'id' = {bad!r} is not a plain file name")
      for bad in ("..", ".", "", "/abs/img1", "sub/img1", "sub\\img1", "img\x001")],
    (("images", 2, "file_name"), "../img2.jpg",
     "images[2] (id 'img2'): field 'file_name' = '../img2.jpg' is not a plain file name"),
    (("annotations", 1, "image_id"), "../img1",
     "annotations[1] (id 'ann1'): field 'image_id' = '../img1' is not a plain file name"),
    # JSON integers have no size limit: past int64 they are no integer field's value (not an OverflowError)
    (("images", 0, "location"), 2**70,
     f"images[0] (id 'img0'): field 'location' = {2**70} is not an integer (64-bit)"),
    (("images", 1, "height"), -2**63 - 1,
     f"images[1] (id 'img1'): field 'height' = {-2**63 - 1} is not an integer (64-bit)"),
    (("annotations", 2, "category_id"), 2**64,
     f"annotations[2] (id 'ann2'): field 'category_id' = {2**64} is not an integer (64-bit)"),
    (("categories", 1, "count"), 10**400, "categories[1] (id 372): field 'count' = 1000000000"),
]


@pytest.mark.parametrize(("path", "value", "message"), TRAIN_PROBLEMS)
def test_train_schema_error_names_file_record_and_field(tmp_path, path, value, message):
    file = write_json(tmp_path / TRAIN_JSON, _break(train_data(), path, value))
    with pytest.raises(IwcError) as err:
        read_train(file)
    assert f"{file}: {message}" in str(err.value)


def test_conflicting_annotations_name_the_image_and_the_annotations(tmp_path):
    data = train_data()
    data["annotations"].append({"id": "ann3", "image_id": "img0", "category_id": 675, "count": 1})
    with pytest.raises(IwcError, match=r"images\[0\] \(id 'img0'\): annotations\[0\], annotations\[3\] give "
                                       r"conflicting 'category_id' values \[0, 675\]"):
        read_train(write_json(tmp_path / TRAIN_JSON, data))


def test_image_without_annotation_is_an_error(tmp_path):
    data = train_data()
    del data["annotations"][2]
    with pytest.raises(IwcError, match=r"images\[2\] \(id 'img2'\): field 'id' = 'img2': no annotation"):
        read_train(write_json(tmp_path / TRAIN_JSON, data))


def test_several_problems_reported_at_once_first_few_spelled_out(tmp_path):
    data = {"images": [image(i, when="soon") for i in range(7)] + [image(7, location="x")],
            "categories": CATEGORIES}
    with pytest.raises(IwcError) as err:
        read_test(write_json(tmp_path / TEST_JSON, data))
    text = str(err.value)
    assert text.count("is not '%Y-%m-%d %H:%M:%S.%f'") == 4  # 5 spelled out: 1 location + 4 datetimes
    assert "images[7] (id 'img7'): field 'location' = 'x' is not an integer" in text
    assert "... and 3 more problem(s)" in text
    assert "download the competition data" in text


# One detection added to image t0 (after its good box): what the reader keeps, clamps or drops.
# (bbox, conf, category) -> ("kept" | "clamped" | "dropped", the box kept or the detail recorded)
BOX_CASES = [
    ([0.1, 0.2, 0.3, 0.4], 0.9, "1", "kept", [0.1, 0.2, 0.3, 0.4]),
    ([0.0, 0.0, 1.0, 1.0], 1, 2, "kept", [0.0, 0.0, 1.0, 1.0]),
    ([0.9, 0.5, 0.10005, 0.1], 0.5, "1", "kept", [0.9, 0.5, 0.1, 0.1]),  # 4-decimal rounding: clipped silently
    ([-0.01, 0.49, 1.02, 0.08], 0.9, "1", "clamped", [0.0, 0.49, 1.0, 0.08]),  # the issue's real box
    ([0.5, 0.2, 0.504, 0.3], 0.9, "1", "clamped", [0.5, 0.2, 0.5, 0.3]),  # x + w = 1.004
    ([0.2, -0.05, 0.3, 0.5], 0.9, "1", "clamped", [0.2, 0.0, 0.3, 0.45]),  # exactly the tolerance
    ([0.7, 0.8, 0.3, 0.22], 0.9, "1", "clamped", [0.7, 0.8, 0.3, 0.2]),
    ([0.5, 0.5, 0.0, 0.1], 0.9, "1", "dropped", "bbox [0.5, 0.5, 0.0, 0.1] has no width or height inside the frame"),
    ([0.5, 0.5, 0.2, -0.1], 0.9, "1", "dropped", "has no width or height inside the frame"),
    ([1.0, 0.5, 0.03, 0.1], 0.9, "1", "dropped", "has no width or height inside the frame"),  # all past the edge
    ([1.3, 0.5, 0.1, 0.1], 0.9, "1", "dropped", "lies more than 0.05 outside the frame"),
    ([-0.2, 0.1, 0.5, 0.5], 0.9, "1", "dropped", "lies more than 0.05 outside the frame"),
    ([10, 20, 300, 400], 0.9, "1", "dropped", "lies more than 0.05 outside the frame"),  # pixels, not normalized
    ([float("nan"), 0.5, 0.1, 0.1], 0.9, "1", "dropped", "has a coordinate that is not a finite number"),
    ([0.1, 0.5, float("inf"), 0.1], 0.9, "1", "dropped", "has a coordinate that is not a finite number"),
    ([0.1, 0.2, 0.3], 0.9, "1", "dropped", ": field 'bbox' = [0.1, 0.2, 0.3] is not [x, y, w, h] (4 numbers)"),
    ([0.1, "0.2", 0.3, 0.4], 0.9, "1", "dropped", "field 'bbox' = [0.1, '0.2', 0.3, 0.4] is not"),
    (None, 0.9, "1", "dropped", "field 'bbox' = None is not"),
    ([0.1, 0.2, 0.3, 0.4], 1.5, "1", "dropped", "field 'conf' = 1.5 is not a number in [0, 1]"),
    ([0.1, 0.2, 0.3, 0.4], float("nan"), "1", "dropped", "field 'conf' = nan is not a number in [0, 1]"),
    ([0.1, 0.2, 0.3, 0.4], "0.9", "1", "dropped", "field 'conf' = '0.9' is not a number in [0, 1]"),
    ([0.1, 0.2, 0.3, 0.4], 0.9, "animal", "dropped", "field 'category' = 'animal' is not an integer like 1"),
    ([0.1, 0.2, 0.3, 0.4], None, "1", "dropped", "field 'conf' is missing"),
    # numbers past int64 / float64 (JSON has no limit): dropped row by row, never an OverflowError
    ([0.1, 0.2, 0.3, 0.4], 0.9, "99999999999999999999", "dropped",
     "field 'category' = '99999999999999999999' is not an integer like 1 or '1' (64-bit)"),
    ([0.1, 0.2, 0.3, 0.4], 0.9, str(2**63), "dropped", f"field 'category' = '{2**63}' is not an integer like 1"),
    ([0.1, 0.2, 0.3, 0.4], 0.9, 2**64, "dropped", f"field 'category' = {2**64} is not an integer like 1"),
    ([0.1, 0.2, 0.3, 0.4], 0.9, str(2**63 - 1), "kept", [0.1, 0.2, 0.3, 0.4]),  # the largest int64 is one
    ([0.1, 0.2, 10**400, 0.4], 0.9, "1", "dropped", "has a coordinate that is not a finite number"),
    ([-(10**400), 0.2, 0.3, 0.4], 0.9, "1", "dropped", "has a coordinate that is not a finite number"),
    ([0.1, 0.2, 0.3, 0.4], 10**400, "1", "dropped", "field 'conf' = 100000000000"),
]


@pytest.mark.parametrize(("bbox", "conf", "category", "outcome", "expected"), BOX_CASES)
def test_megadetector_box_is_kept_clamped_or_dropped_and_the_file_still_read(tmp_path, bbox, conf, category,
                                                                            outcome, expected):
    data = md_data()
    detection = {"category": category, "bbox": bbox, "conf": conf}
    data["images"][2]["detections"].append({k: v for k, v in detection.items() if v is not None or k == "bbox"})
    issues = DataIssues("crop")
    det = read_megadetector(write_json(tmp_path / MD_JSON, data), issues)
    kept = det[det["image_id"] == "t0"]
    assert det["image_id"].tolist()[:2] == ["img0", "img0"]  # the other rows are untouched
    assert kept.iloc[0][["x", "y", "w", "h"]].tolist() == [0.5, 0.5, 0.25, 0.25]
    if outcome == "dropped":
        assert len(kept) == 1
        assert issues.ids() == {"box_dropped": ["t0"]}
        assert issues.records[0].detail.startswith("detections[1]") and expected in issues.records[0].detail
        assert issues.records[0].stage == "crop"
    else:
        assert len(kept) == 2
        assert kept.iloc[1][["x", "y", "w", "h"]].tolist() == pytest.approx(expected, abs=1e-12)
        assert kept.iloc[1]["conf"] == conf and kept.iloc[1]["category"] == int(category)
        assert issues.ids() == ({"box_clamped": ["t0"]} if outcome == "clamped" else {})
        if outcome == "clamped":
            assert f"bbox {bbox} clamped to" in issues.records[0].detail


def test_megadetector_not_an_object_detection_is_dropped_and_logged(tmp_path, caplog):
    data = md_data()
    data["images"][0]["detections"].insert(0, "box")
    issues = DataIssues()
    with caplog.at_level(logging.WARNING):
        det = read_megadetector(write_json(tmp_path / MD_JSON, data), issues)
    assert det["image_id"].tolist() == ["img0", "img0", "t0"]
    assert [(r.reason, r.image_id, r.detail) for r in issues.records] == [
        ("box_dropped", "img0", "detections[0]: is 'box', not an object")]
    assert "dropped 1 detection" in caplog.text


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(images=5), "top level: field 'images' is not a list"),
    (lambda d: d["images"].append("t9"), "images[3]: is 't9', not an object"),
    (lambda d: d["images"][1].pop("id"), "images[1]: field 'id' is missing"),
    (lambda d: d["images"][1].update(detections="none"),
     "images[1] (id 'img1'): field 'detections' = 'none' is not a list"),
    (lambda d: d["images"][1].update(id="img0"), "images[1] (id 'img0'): field 'id' repeats images[0] (id 'img0')"),
    (lambda d: d["images"][1].update(id="../../victim"),
     "images[1] (id '../../victim'): field 'id' = '../../victim' is not a plain file name"),
    (lambda d: d["images"][2].update(id=".."), "images[2] (id '..'): field 'id' = '..' is not a plain file name"),
    (lambda d: d.update(images=[{"file": "train/..", "detections": []}]),
     "images[0] (file 'train/..'): field 'file' = 'train/..': its stem '.' (the image id) is not a plain file name"),
    (lambda d: d.update(images=[{"file": "train/", "detections": []}]),
     "images[0] (file 'train/'): field 'file' = 'train/': its stem '' (the image id) is not a plain"),
    (lambda d: d.update(images=[{"file": "a\x00b.jpg", "detections": []}]),
     "images[0] (file 'a\\x00b.jpg'): field 'file' = 'a\\x00b.jpg': its stem 'a\\x00b' (the image id)"),
])
@pytest.mark.parametrize("reader", [read_megadetector, check_megadetector])
def test_megadetector_structurally_broken_file_is_rejected(tmp_path, change, message, reader):
    data = md_data()
    change(data)
    file = write_json(tmp_path / MD_JSON, data)
    with pytest.raises(IwcError) as err:
        reader(file)
    assert f"{file}: {message}" in str(err.value)


def test_megadetector_check_reads_the_structure_not_the_boxes(tmp_path, monkeypatch):
    """The host's pre-flight check: boxes that are no box are the crop stage's data issues, never an error."""
    data = md_data()
    data["images"][0]["detections"] = ["box", {"category": "1", "bbox": [0.1, "x", 0.2, 0.2], "conf": 2}]
    file = write_json(tmp_path / MD_JSON, data)
    monkeypatch.setattr("iwc.data.competition._detection_problems", lambda items: pytest.fail("read the boxes"))
    assert check_megadetector(file) is None


def test_megadetector_image_without_detections_list_is_an_error(tmp_path):
    data = md_data()
    del data["images"][1]["detections"]
    with pytest.raises(IwcError, match=r"images\[1\] \(id 'img1'\): field 'detections' is missing"):
        read_megadetector(write_json(tmp_path / MD_JSON, data))


@pytest.mark.parametrize(("text", "message"), [
    ("Id,Category\nt0,0\nt1,zebra\n", "line 3 (Id 't1'): field 'Category' = 'zebra' is not"),
    ("Id,Category\nt0,0\nt0,1\n", "line 3 (Id 't0'): field 'Id' repeats line 2 (Id 't0')"),
    ("Id,Predicted\nt0,0\n", "header: is 'Id,Predicted', expected 'Id,Category'"),
    ("Id,Category\nt0,0\nt1,99999999999999999999\n",
     "line 3 (Id 't1'): field 'Category' = '99999999999999999999' is not an integer like 1 or '1' (64-bit)"),
])
def test_sample_submission_schema_errors(tmp_path, text, message):
    file = tmp_path / SAMPLE_CSV
    file.write_text(text, encoding="utf-8")
    with pytest.raises(IwcError) as err:
        read_sample_submission(file)
    assert f"{file}: {message}" in str(err.value)


def test_invalid_json_is_an_iwc_error_naming_the_file(tmp_path):
    file = tmp_path / TRAIN_JSON
    file.write_text('{"images": [', encoding="utf-8")
    with pytest.raises(IwcError, match=f"{TRAIN_JSON}: not valid JSON"):
        read_train(file)


def test_test_json_location_past_int64_is_a_schema_error(tmp_path):
    data = {"images": [image(0, location=2**70, prefix="t")], "categories": CATEGORIES}
    with pytest.raises(IwcError, match=rf"images\[0\] \(id 't0'\): field 'location' = {2**70} is not an integer"):
        read_test(write_json(tmp_path / TEST_JSON, data))


def test_a_number_past_what_python_parses_is_invalid_json(tmp_path):
    file = tmp_path / TEST_JSON
    file.write_text('{"images": [{"id": "t0", "location": ' + "9" * 5000 + "}]}", encoding="utf-8")
    with pytest.raises(IwcError, match=f"{TEST_JSON}: not valid JSON"):
        read_test(file)


def test_check_images_refuses_a_file_name_that_leaves_the_folder(tmp_path):
    images = pd.DataFrame([{**image(0), "file_name": "../img0.jpg"}])
    _write_jpeg(tmp_path / "img0.jpg", seed=0)
    with pytest.raises(IwcError, match=r"file_name of image 'img0': '\.\./img0\.jpg' is not a plain file name"):
        check_images(images, tmp_path / "sub", progress=False)


def _write_jpeg(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


def test_check_images_excludes_missing_and_truncated_jpegs(tmp_path, caplog):
    images = pd.DataFrame([image(i) for i in range(4)])
    for i in range(3):
        _write_jpeg(tmp_path / f"img{i}.jpg", seed=i)
    data = (tmp_path / "img1.jpg").read_bytes()
    (tmp_path / "img1.jpg").write_bytes(data[: len(data) * 2 // 3])  # truncated, as in the real data

    with caplog.at_level(logging.WARNING):
        check = check_images(images, tmp_path, progress=False, workers=2)
    assert check.ok["id"].tolist() == ["img0", "img2"]
    assert check.missing == ["img3"]
    assert check.corrupt == ["img1"]
    assert check.summary().startswith("4 images checked: 2 ok, 1 missing, 1 corrupt")
    assert "1 corrupt" in caplog.text

    unchecked = check_images(images, tmp_path, decode=False, progress=False)
    assert unchecked.ok["id"].tolist() == ["img0", "img1", "img2"]
    assert unchecked.corrupt == []


def test_check_images_all_good_is_quiet(tmp_path, caplog):
    images = pd.DataFrame([image(0)])
    _write_jpeg(tmp_path / "img0.jpg", seed=0)
    with caplog.at_level(logging.WARNING):
        check = check_images(images, tmp_path, progress=False)
    assert check.summary() == "1 images checked: 1 ok, 0 missing, 0 corrupt"
    assert caplog.text == ""
