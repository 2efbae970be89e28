"""The synthetic competition: deterministic, in the real formats, with the real defects planted."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iwc.data.categories import EMPTY
from iwc.data.competition import (
    CLAMP_TOLERANCE,
    MD_JSON,
    SAMPLE_CSV,
    TEST_JSON,
    TRAIN_JSON,
    Competition,
    check_images,
)
from iwc.errors import IwcError
from iwc.host.cli import main
from iwc.host.synth import DemoInfo, demo_root, write_demo
from iwc.host.synth.world import HUMAN
from iwc.io import sha256_file

IMAGE_FIELDS = {"id": str, "file_name": str, "location": int, "seq_id": str, "seq_num_frames": int,
                "frame_num": int, "datetime": str, "width": int, "height": int}
DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


@pytest.fixture(scope="module")
def demo(small_demo: DemoInfo) -> DemoInfo:
    """The session's small seed-0 demo: `write_demo(folder, seed=0, scale="small")`."""
    return small_demo


@pytest.fixture(scope="module")
def files(demo: DemoInfo) -> dict:
    comp = demo.competition_dir
    return {name: json.loads((comp / name).read_text()) for name in (TRAIN_JSON, TEST_JSON, MD_JSON)}


@pytest.fixture(scope="module")
def labels(demo: DemoInfo, files: dict) -> dict[str, int]:
    """Every image id -> its true category (train annotations + the ground-truth test labels)."""
    out = {a["image_id"]: a["category_id"] for a in files[TRAIN_JSON]["annotations"]}
    out |= {row["Id"]: int(row["Category"]) for row in _csv(demo.ground_truth)[1]}
    return out


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _is_night(image: dict) -> bool:
    hour = int(image["datetime"][11:13])
    return hour >= 19 or hour < 6


def test_same_seed_gives_identical_bytes_and_another_seed_differs(demo: DemoInfo, tmp_path: Path) -> None:
    again = write_demo(tmp_path / "again", seed=0, scale="small", progress=False)
    other = write_demo(tmp_path / "other", seed=1, scale="small", progress=False)
    first = _tree(demo.root)
    assert len(first) > 1000
    assert _tree(again.root) == first
    assert again.missing_train == demo.missing_train and again.corrupt_train == demo.corrupt_train
    second = _tree(other.root)
    assert second.keys() != first.keys()
    assert second[f"iwildcam-2020-fgvc7/{TRAIN_JSON}"] != first[f"iwildcam-2020-fgvc7/{TRAIN_JSON}"]


# sha256 of the small seed-0 demo's file tree (path -> sha256, as JSON) as iwc/host/demo.py wrote it before it was
# split into iwc/host/synth/. A change that means to alter the demo data updates it (and says so); any other
# change to the demo code must leave it alone. Pillow's JPEG encoder is pinned by docker/requirements.lock.
SMALL_SEED0_TREE = "d24b569f9f3c3da03bb3595e5bba240948c0e5981974d8c43d2005376ad42e60"


def test_the_small_seed0_demo_is_the_same_bytes_as_before_the_split(demo: DemoInfo) -> None:
    tree = _tree(demo.root)
    assert len(tree) == 1112
    assert hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest() == SMALL_SEED0_TREE


def test_refuses_a_used_folder_and_an_unknown_scale(demo: DemoInfo, tmp_path: Path) -> None:
    with pytest.raises(IwcError, match="already holds"):
        write_demo(demo.root, seed=0, progress=False)
    with pytest.raises(IwcError, match="unknown demo scale"):
        write_demo(tmp_path, scale="huge", progress=False)
    assert not any(tmp_path.iterdir())


def test_layout_and_sizes_match_the_scale(demo: DemoInfo, files: dict) -> None:
    assert sorted(p.name for p in demo.root.iterdir()) == ["ground_truth", "iwildcam-2020-fgvc7", "iwildcam2020-256"]
    assert (demo.resized_dir / "256_images" / "train" / "images").is_dir()
    assert 350 <= demo.n_train == len(files[TRAIN_JSON]["images"]) <= 450
    assert 130 <= demo.n_test == len(files[TEST_JSON]["images"]) <= 180
    assert len(demo.train_locations) == 8 and len(demo.test_locations) == 3
    assert "planted 2 missing and 2 corrupt" in demo.summary()


def test_json_fields_and_types(files: dict) -> None:
    train, test = files[TRAIN_JSON], files[TEST_JSON]
    assert set(train) == {"info", "images", "annotations", "categories"}
    assert set(test) == {"info", "images", "categories"}
    for info in (train["info"], test["info"]):
        assert {"year", "version", "description", "contributor"} <= set(info)
    for image in train["images"] + test["images"]:
        assert set(image) == set(IMAGE_FIELDS)
        assert all(type(image[k]) is t for k, t in IMAGE_FIELDS.items()), image
        assert image["file_name"] == f"{image['id']}.jpg"
        assert DATETIME.match(image["datetime"]), image["datetime"]
        datetime.strptime(image["datetime"], "%Y-%m-%d %H:%M:%S.%f")
        assert image["width"] > 256 and image["height"] > 256
    assert len({i["id"] for i in train["images"] + test["images"]}) == len(train["images"]) + len(test["images"])
    annotations = train["annotations"]
    assert [a["image_id"] for a in annotations] == [i["id"] for i in train["images"]]
    for a in annotations:
        assert set(a) == {"id", "image_id", "category_id", "count"}
        assert type(a["id"]) is str and type(a["category_id"]) is int and type(a["count"]) is int
        assert (a["count"] == 0) == (a["category_id"] == EMPTY)


def test_categories_are_sparse_and_counted(files: dict) -> None:
    categories = files[TRAIN_JSON]["categories"]
    assert categories == files[TEST_JSON]["categories"]
    ids = [c["id"] for c in categories]
    assert ids == sorted(ids) and ids[0] == EMPTY and HUMAN in ids and max(ids) > 300
    assert 12 <= len(ids) <= 16
    counts = Counter(a["category_id"] for a in files[TRAIN_JSON]["annotations"])
    assert {c["id"]: c["count"] for c in categories} == {i: counts.get(i, 0) for i in ids}
    assert any(c["count"] == 0 for c in categories)  # listed but never seen, as in the real list
    assert all(isinstance(c["name"], str) and c["name"] for c in categories)


def test_test_locations_are_new(demo: DemoInfo, files: dict) -> None:
    train_locs = {i["location"] for i in files[TRAIN_JSON]["images"]}
    test_locs = {i["location"] for i in files[TEST_JSON]["images"]}
    assert train_locs == set(demo.train_locations) and test_locs == set(demo.test_locations)
    assert not train_locs & test_locs


def test_files_on_disk_match_the_json_minus_planted_defects(demo: DemoInfo, files: dict) -> None:
    comp, resized = demo.competition_dir, demo.resized_dir / "256_images"
    train_ids = {i["id"] for i in files[TRAIN_JSON]["images"]}
    test_ids = {i["id"] for i in files[TEST_JSON]["images"]}
    missing, corrupt = set(demo.missing_train), set(demo.corrupt_train)
    assert len(missing) == 2 and len(corrupt) == 2 and missing <= train_ids and corrupt <= train_ids
    assert not missing & corrupt

    def stems(folder: Path) -> set[str]:
        return {p.stem for p in folder.glob("*.jpg")}

    assert stems(comp / "train") == train_ids - missing
    assert stems(comp / "test") == test_ids
    assert stems(resized / "train" / "images") == train_ids - missing - corrupt
    assert stems(resized / "test" / "images") == test_ids
    # the competition reader sees exactly the planted defects
    images = Competition.load(comp).train
    check = check_images(images, comp / "train", progress=False, workers=1)
    assert sorted(check.missing) == sorted(missing) and sorted(check.corrupt) == sorted(corrupt)


def test_image_sizes_and_night_frames_are_grayscale(demo: DemoInfo, files: dict) -> None:
    comp, resized = demo.competition_dir, demo.resized_dir / "256_images"
    test_images = files[TEST_JSON]["images"]
    for path in (resized / "test" / "images").glob("*.jpg"):
        with Image.open(path) as im:
            assert im.size == (256, 256) and im.mode == "RGB"
    sizes = set()
    gray_by_night = []
    for image in test_images:
        with Image.open(comp / "test" / image["file_name"]) as im:
            assert im.size == (image["width"], image["height"])
            sizes.add(im.size)
            pixels = np.asarray(im.convert("RGB"), dtype=np.int16)
        gray = bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
        gray_by_night.append((_is_night(image), gray))
    assert all(gray for night, gray in gray_by_night if night)
    assert not any(gray for night, gray in gray_by_night if not night)
    night_share = np.mean([night for night, _ in gray_by_night])
    assert 0.1 < night_share < 0.6
    assert len(sizes) >= 2  # cameras differ in resolution


def test_sequences_are_consistent(files: dict, labels: dict[str, int]) -> None:
    for split in (TRAIN_JSON, TEST_JSON):
        by_seq = defaultdict(list)
        for image in files[split]["images"]:
            by_seq[image["seq_id"]].append(image)
        for frames in by_seq.values():
            frames.sort(key=lambda i: i["frame_num"])
            assert [i["frame_num"] for i in frames] == list(range(1, len(frames) + 1))
            assert {i["seq_num_frames"] for i in frames} == {len(frames)}
            assert len({i["location"] for i in frames}) == 1 and len({labels[i["id"]] for i in frames}) == 1
            times = [datetime.strptime(i["datetime"], "%Y-%m-%d %H:%M:%S.%f") for i in frames]
            assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(times))
    test_lengths = Counter(i["seq_num_frames"] for i in files[TEST_JSON]["images"])
    assert test_lengths[1] > 0 and len(test_lengths) > 1


def test_megadetector_results(files: dict, labels: dict[str, int]) -> None:
    md = files[MD_JSON]
    assert set(md) == {"info", "images", "detection_categories"}
    assert md["detection_categories"] == {"1": "animal", "2": "person"}
    assert {"detector", "detection_completion_time", "format_version"} <= set(md["info"])
    assert sorted(m["id"] for m in md["images"]) == sorted(labels)  # one file for train and test
    widths, person_frames = [], set()
    for m in md["images"]:
        confs = [d["conf"] for d in m["detections"]]
        assert m["max_detection_conf"] == max(confs, default=0.0)
        for d in m["detections"]:
            assert d["category"] in {"1", "2"} and 0 <= d["conf"] <= 1
            x, y, w, h = d["bbox"]
            assert min(x, y) >= 0 and min(w, h) > 0 and x + w <= 1.0001 and y + h <= 1.0001
            if d["conf"] > 0.3 and d["category"] == "1":
                widths.append(w)
            if d["category"] == "2":
                person_frames.add(m["id"])
    human_frames = {i for i, c in labels.items() if c == HUMAN}
    assert person_frames <= human_frames and len(person_frames) > len(human_frames) / 2
    # animals take a minority of the frame (large enough for a random-init CPU model to see at 64 px)
    assert 0.1 < np.median(widths) < 0.35
    best = {m["id"]: m["max_detection_conf"] for m in md["images"]}
    missed = np.mean([best[i] <= 0.3 for i, c in labels.items() if c != EMPTY])
    false_boxes = np.mean([best[i] > 0.3 for i, c in labels.items() if c == EMPTY])
    assert 0.05 < missed < 0.3 and 0.02 < false_boxes < 0.3
    low = [d["conf"] for m in md["images"] for d in m["detections"] if d["conf"] <= 0.3]
    assert len(low) > 10  # a spread of confidences, not only confident boxes


def test_sample_submission_ground_truth_and_empty_share(demo: DemoInfo, files: dict, labels: dict) -> None:
    test_ids = [i["id"] for i in files[TEST_JSON]["images"]]
    header, rows = _csv(demo.competition_dir / SAMPLE_CSV)
    assert header == ["Id", "Category"]
    assert {r["Category"] for r in rows} == {"0"}
    sample_ids = [r["Id"] for r in rows]
    assert len(sample_ids) == len(set(sample_ids)) == len(test_ids) - 3
    assert set(test_ids) - set(sample_ids) == set(demo.omitted_from_sample)
    header, truth = _csv(demo.ground_truth)
    assert header == ["Id", "Category"] and sorted(r["Id"] for r in truth) == sorted(test_ids)
    listed = {c["id"] for c in files[TRAIN_JSON]["categories"]}
    assert {int(r["Category"]) for r in truth} <= listed
    train_labels = [labels[i["id"]] for i in files[TRAIN_JSON]["images"]]
    assert 0.2 < np.mean(np.array(train_labels) == EMPTY) < 0.45
    assert len(set(train_labels)) >= 8  # several species, imbalanced
    assert max(Counter(train_labels).values()) > 5 * min(Counter(train_labels).values())


def test_the_competition_reader_loads_it(demo: DemoInfo) -> None:
    comp = Competition.load(demo.competition_dir, detections=True)
    assert len(comp.train) == demo.n_train and len(comp.test) == demo.n_test
    assert len(comp.sample) == demo.n_test - len(demo.omitted_from_sample)
    assert set(comp.detections["category"]) == {1, 2}
    assert comp.train["category_id"].isin(comp.categories["id"]).all()
    assert len(comp.issues) == 0  # the plain demo's boxes and detector entries are all clean


def test_the_plain_demo_records_its_planted_defects(demo: DemoInfo) -> None:
    planted = json.loads(demo.planted_file.read_text())
    assert planted["data_issues"] == {k: list(v) for k, v in demo.planted.items()}
    assert set(demo.planted) == {"missing", "unreadable", "not_in_sample"}
    assert demo.planted["missing"] == tuple(sorted(demo.missing_train + demo.corrupt_train))
    assert demo.planted["unreadable"] == demo.corrupt_train  # both have a crop-worthy box here
    assert demo.planted["not_in_sample"] == demo.omitted_from_sample
    assert planted["grayscale"] == []


# --- quirks ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quirky(quirky_demo: DemoInfo) -> DemoInfo:
    """The session's quirks demo: `write_demo(folder, seed=0, scale="small", quirks=True)`."""
    return quirky_demo


def test_quirks_have_their_own_folder_and_keep_the_plain_demo_underneath(demo: DemoInfo, quirky: DemoInfo,
                                                                        tmp_path: Path) -> None:
    assert demo_root(Path("d"), 3, "small") == Path("d/small-seed3")
    assert demo_root(Path("d"), 3, "small", quirks=True) == Path("d/small-seed3-quirks")
    plain, quirks = _tree(demo.root), _tree(quirky.root)
    removed = set(quirky.planted["missing"]) - set(demo.planted["missing"])
    assert len(removed) == 1 and quirks.keys() <= plain.keys()
    assert plain.keys() - quirks.keys() == {p for i in removed for p in (
        f"iwildcam-2020-fgvc7/test/{i}.jpg", f"iwildcam2020-256/256_images/test/images/{i}.jpg")}
    same = {k for k in plain.keys() & quirks.keys() if plain[k] == quirks[k]}
    assert len(same) > len(plain) / 2  # the same images: quirks change only what they plant
    assert f"iwildcam-2020-fgvc7/{TRAIN_JSON}" not in same and "ground_truth/test_labels.csv" in same
    # `iwc demo-data --quirks` (seed 0 by default) writes the same bytes, and its record is what write_demo returned
    assert main(["demo-data", str(tmp_path / "again"), "--scale", "small", "--quirks", "--quiet"]) == 0
    assert _tree(tmp_path / "again") == quirks
    again = json.loads((tmp_path / "again" / quirky.planted_file.relative_to(quirky.root)).read_text())
    assert again["data_issues"] == {k: list(v) for k, v in quirky.planted.items()}
    assert "quirks" in quirky.summary()


def test_every_planted_quirk_is_on_disk(quirky: DemoInfo) -> None:
    comp, resized = quirky.competition_dir, quirky.resized_dir / "256_images"
    planted = quirky.planted
    assert set(planted) == {"missing", "unreadable", "zero_byte", "no_detector_entry", "box_clamped", "box_dropped",
                            "not_in_sample", "sample_without_image"}
    test_ids = {i["id"] for i in json.loads((comp / TEST_JSON).read_text())["images"]}
    train_ids = {i["id"] for i in json.loads((comp / TRAIN_JSON).read_text())["images"]}
    files = [i for r in ("missing", "unreadable", "zero_byte") for i in planted[r]]
    # each image carries one defect, but for the truncated train originals the resized dataset lacks
    assert len(files) == len(set(files)) + len(quirky.corrupt_train)
    for reason in ("unreadable", "zero_byte"):  # in train AND test, original AND 256 px copy
        assert set(planted[reason]) & train_ids and set(planted[reason]) & test_ids
    assert set(planted["missing"]) & test_ids
    for image_id in planted["zero_byte"]:
        split = "test" if image_id in test_ids else "train"
        assert (comp / split / f"{image_id}.jpg").stat().st_size == 0
        assert (resized / split / "images" / f"{image_id}.jpg").stat().st_size == 0
    for image_id in set(planted["unreadable"]) - set(quirky.corrupt_train):
        split = "test" if image_id in test_ids else "train"
        for path in (comp / split / f"{image_id}.jpg", resized / split / "images" / f"{image_id}.jpg"):
            with pytest.raises(OSError), Image.open(path) as im:
                im.load()
    for image_id in planted["missing"]:  # from the 256 px set (and but for the corrupt ones, the originals)
        split = "test" if image_id in test_ids else "train"
        assert not (resized / split / "images" / f"{image_id}.jpg").exists()
        assert (comp / split / f"{image_id}.jpg").exists() == (image_id in quirky.corrupt_train)
    sample = [row["Id"] for row in _csv(comp / SAMPLE_CSV)[1]]
    assert set(sample) - test_ids == set(planted["sample_without_image"])
    assert test_ids - set(sample) == set(planted["not_in_sample"])
    md = {m["id"]: m for m in json.loads((comp / MD_JSON).read_text())["images"]}
    assert (train_ids | test_ids) - md.keys() == set(planted["no_detector_entry"])
    for image_id in planted["box_clamped"]:
        x, y, w, h = md[image_id]["detections"][0]["bbox"]
        past = max(-x, -y, x + w - 1, y + h - 1)
        assert 0.001 < past <= CLAMP_TOLERANCE
    for image_id in planted["box_dropped"]:
        assert md[image_id]["detections"][-1]["conf"] < 0.3
    grayscale = json.loads(quirky.planted_file.read_text())["grayscale"]
    assert len(grayscale) > 10
    shown = next(i for i in grayscale if (comp / "test" / f"{i}.jpg").is_file() and i in test_ids
                 and i not in files)
    with Image.open(comp / "test" / f"{shown}.jpg") as im:
        assert im.mode == "L"


def test_the_reader_finds_exactly_the_planted_detector_quirks(quirky: DemoInfo) -> None:
    comp = Competition.load(quirky.competition_dir, detections=True)
    detector = ("no_detector_entry", "box_clamped", "box_dropped")
    assert comp.issues.ids() == {r: list(quirky.planted[r]) for r in detector}
