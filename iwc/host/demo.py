"""A synthetic iWildCam 2020 competition, in the exact real layout and formats (`iwc demo-data`).

`write_demo(out, seed, scale)` writes, under `out/`:
- `iwildcam-2020-fgvc7/`: `train/<id>.jpg`, `test/<id>.jpg` originals (640x480, 600x400 or 640x360),
  the train annotations, the test information, the MegaDetector results (train and test in one file)
  and `sample_submission.csv`;
- `iwildcam2020-256/256_images/{train,test}/images/<id>.jpg`: the same images squashed to 256x256;
- `ground_truth/test_labels.csv` (`Id,Category`): the true test labels, read only by evaluation;
- `ground_truth/data_issues.json`: what was planted, as the data issues a run must report (reason -> ids).

It is a miniature of the real problem: camera locations with their own backgrounds (test locations
disjoint from train), sparse category ids, about a third of the frames empty, small animals whose species
shows in shape and coat pattern (visible in a crop, hard to see in a 64 px full frame), grayscale night
frames, bursts of frames moving through the scene, noisy MegaDetector boxes (misses, false boxes, person
boxes for humans) and the real defects: train images listed but missing, truncated train JPEGs that the
resized dataset lacks, test images left out of the sample submission. Same seed => byte-identical files.

`quirks=True` plants the rest of what real files hold (see `_plant_quirks`): boxes a hair past the frame and
detections that are no box, images without a MegaDetector entry, sample Ids without a test image, single-
channel grayscale night frames, and truncated, zero-byte and missing JPEGs in train and test. The quirks
draw from their own random stream, so a quirks demo is the plain demo of the same seed plus the quirks.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from iwc.data.categories import EMPTY
from iwc.data.competition import DATETIME_FORMAT, MD_JSON, SAMPLE_CSV, TEST_JSON, TRAIN_JSON
from iwc.errors import IwcError
from iwc.io import write_json, write_text
from iwc.layout import COMPETITION_SLUG, RESIZED_DATASET, RESIZED_MARKER

COMPETITION = COMPETITION_SLUG  # folder names as the Kaggle downloads name them
RESIZED = RESIZED_DATASET.split("/")[1]
GROUND_TRUTH = "ground_truth"
PLANTED_JSON = "data_issues.json"  # in GROUND_TRUTH
RESIZED_SIZE = 256
CROP_THRESHOLD = 0.3  # the demo and reference recipes' crops.threshold: which originals the crop stage reads
QUIRK_STREAM = 7  # the quirks' random generator is seeded (seed, QUIRK_STREAM), apart from the plain demo's
# Quirks planted with --quirks (each count per split where the defect concerns files of both splits)
QUIRK_FILES = {"unreadable": 1, "zero_byte": 1}  # per split: original AND its 256 px copy broken
QUIRK_MISSING_TEST = 1  # test images absent from both folders (the plain demo already misses train images)
QUIRK_NO_DETECTOR = 2  # per split: MegaDetector entry removed
QUIRK_CLAMPED = 3  # boxes moved a hair past the frame (left, right, bottom)
QUIRK_DROPPED = 2  # detections that are no box, added (zero width; far outside the frame)
QUIRK_SAMPLE_ONLY = 2  # sample_submission.csv Ids with no test image


def demo_root(parent: Path, seed: int, scale: str, quirks: bool = False) -> Path:
    """Where the synthetic competition of this seed, scale and quirks setting lives under `parent`."""
    return Path(parent) / f"{scale}-seed{seed}{'-quirks' if quirks else ''}"


@dataclass(frozen=True)
class Scale:
    """How big a demo competition is."""

    train_images: int  # about this many train images (the last burst at a location may overshoot)
    test_images: int
    train_locations: int
    test_locations: int
    missing: int  # train images listed in the JSON but absent on disk
    corrupt: int  # truncated train originals, absent from the resized dataset
    omitted: int  # test images left out of sample_submission.csv


SCALES = {
    "small": Scale(400, 150, 8, 3, missing=2, corrupt=2, omitted=3),  # tests
    "medium": Scale(1500, 500, 30, 6, missing=3, corrupt=4, omitted=6),  # the demo
}

FRAME_SIZES = ((640, 480), (600, 400), (640, 360))  # original (width, height); one per location
EMPTY_SHARE = 0.35  # share of visits that are empty triggers
NIGHT_SKIP = 0.5  # chance to push a visit that falls at night to a later time (~30% night frames)
HUMAN = 75


@dataclass(frozen=True)
class Species:
    """How one category looks: sizes are relative to the body length, which is relative to the frame."""

    id: int
    name: str
    weight: float  # overall relative frequency
    length: float  # body length as a fraction of the frame width (mid depth)
    aspect: float  # body height / body length
    leg: float  # leg length / body height
    neck: float  # how far the head is raised, in body heights
    tail: float  # tail length / body length
    snout: bool
    colour: tuple[int, int, int]
    pattern: str  # "plain" | "spots" | "stripes" | "collar" | "vest"
    herd: int  # most individuals in one visit


SPECIES = (
    Species(2, "tayassu pecari", 10, 0.29, 0.55, 0.45, 0.05, 0.0, True, (72, 62, 56), "collar", 3),
    Species(3, "dasyprocta punctata", 14, 0.21, 0.60, 0.70, 0.25, 0.0, False, (168, 102, 48), "plain", 1),
    Species(6, "puma concolor", 3, 0.37, 0.38, 0.85, 0.15, 0.8, False, (178, 140, 96), "plain", 1),
    Species(8, "mazama americana", 8, 0.29, 0.50, 1.25, 0.75, 0.1, False, (142, 68, 42), "plain", 1),
    Species(24, "tapirus terrestris", 4, 0.40, 0.55, 0.60, 0.10, 0.0, True, (46, 43, 41), "plain", 1),
    Species(72, "leopardus pardalis", 5, 0.26, 0.40, 0.65, 0.15, 0.6, False, (192, 156, 82), "spots", 1),
    Species(96, "tamandua mexicana", 3, 0.26, 0.45, 0.55, 0.05, 0.6, True, (204, 182, 122), "vest", 1),
    Species(101, "crax rubra", 6, 0.14, 1.05, 0.60, 0.45, 0.3, False, (28, 27, 32), "plain", 2),
    Species(372, "tragelaphus scriptus", 4, 0.32, 0.50, 1.10, 0.70, 0.1, False, (122, 76, 46), "stripes", 1),
)
# The rest of the category list, real ids: empty and human occur (humans drawn as people), the others are
# listed but never seen, as many entries of the real list are.
OTHER_CATEGORIES = ((EMPTY, "empty"), (4, "cuniculus paca"), (HUMAN, "human"), (79, "unknown"),
                    (290, "unidentifiable"), (404, "misfire"))


@dataclass(frozen=True)
class DemoInfo:
    """What `write_demo` wrote, and which defects it planted (image ids)."""

    root: Path
    seed: int
    scale: str
    n_train: int  # images listed in the train JSON
    n_test: int
    train_locations: tuple[int, ...]
    test_locations: tuple[int, ...]
    missing_train: tuple[str, ...]  # listed, no file in either folder
    corrupt_train: tuple[str, ...]  # truncated original JPEG, absent from the 256 set
    omitted_from_sample: tuple[str, ...]  # test images not in sample_submission.csv
    quirks: bool = False
    planted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # data-issue reason -> image ids

    @property
    def planted_file(self) -> Path:
        return self.root / GROUND_TRUTH / PLANTED_JSON

    @property
    def competition_dir(self) -> Path:
        return self.root / COMPETITION

    @property
    def resized_dir(self) -> Path:
        """The resized dataset's folder; it holds `256_images/`."""
        return self.root / RESIZED

    @property
    def ground_truth(self) -> Path:
        return self.root / GROUND_TRUTH / "test_labels.csv"

    def summary(self) -> str:
        return (f"demo competition ({self.scale}, seed {self.seed}) in {self.root}: {self.n_train} train images "
                f"at {len(self.train_locations)} locations, {self.n_test} test images at "
                f"{len(self.test_locations)} new locations; planted {len(self.missing_train)} missing and "
                f"{len(self.corrupt_train)} corrupt train images, {len(self.omitted_from_sample)} test images "
                f"left out of the sample submission" + (", and the real files' quirks" if self.quirks else "")
                + f" (all listed in {self.planted_file})")


@dataclass(frozen=True)
class _Location:
    id: int
    size: tuple[int, int]
    horizon: float  # y of the horizon, px
    day: Image.Image  # background by day (RGB)
    night: Image.Image  # background under the infrared flash (gray RGB)
    weights: np.ndarray  # species frequencies here (sum 1)
    single: bool  # each trigger is its own one-frame sequence (frames of a visit seconds apart)
    start: datetime


@dataclass(frozen=True)
class _Actor:
    """One individual crossing the scene during a visit."""

    species: Species | None  # None: a person
    length: float  # body length (animals) or height (people), px
    aspect: float
    leg: float
    neck: float
    colour: tuple[int, int, int]
    clothes: tuple[int, int, int]
    marks: np.ndarray  # (k, 2) spot or stripe positions in body units
    facing: int  # +1 right, -1 left
    x: float  # feet position at the first frame, px
    y: float
    vx: float  # px per frame
    vy: float


@dataclass(frozen=True)
class _Frame:
    id: str
    split: str  # "train" | "test"
    location: _Location
    seq_id: str
    seq_num_frames: int
    frame_num: int
    when: datetime
    category_id: int
    actors: tuple[_Actor, ...]
    step: int  # frames since the visit began


def write_demo(out: str | os.PathLike, seed: int = 0, scale: str = "small", progress: bool = True,
               quirks: bool = False) -> DemoInfo:
    """Write a synthetic competition under `out` (see the module docstring) and say what was planted.

    The three top folders are built in a staging folder and moved in at the end; if any of them already
    exists with content, nothing is written.
    """
    if scale not in SCALES:
        raise IwcError(f"unknown demo scale {scale!r}: use one of {sorted(SCALES)}")
    if not isinstance(seed, int) or seed < 0:
        raise IwcError(f"demo seed {seed!r} must be an integer >= 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise IwcError(f"{out} is a file: give a folder for the demo competition")
    parts = (COMPETITION, RESIZED, GROUND_TRUTH)
    taken = [p for p in parts if (out / p).exists() and not ((out / p).is_dir() and not any((out / p).iterdir()))]
    if taken:
        raise IwcError(f"{out} already holds {', '.join(taken)}: delete it or choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".demo-"))
    try:
        info = _build(stage, np.random.default_rng(seed), SCALES[scale], seed, scale, progress, quirks)
        for p in parts:
            if (out / p).exists():
                (out / p).rmdir()
            os.replace(stage / p, out / p)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return replace(info, root=out)


def _build(root: Path, rng: np.random.Generator, sc: Scale, seed: int, scale: str, progress: bool,
           quirks: bool) -> DemoInfo:
    """Plan, render, plant the defects (and quirks), write the metadata; every random draw of the plain demo
    comes from `rng`, in order."""
    loc_ids = [int(i) for i in rng.choice(np.arange(1, 600), sc.train_locations + sc.test_locations, False)]
    train_locs, test_locs = loc_ids[: sc.train_locations], loc_ids[sc.train_locations:]
    frames = _plan(rng, "train", train_locs, sc.train_images) + _plan(rng, "test", test_locs, sc.test_images)
    md_images = [_write_images(rng, root, f, quirks) for f in tqdm(frames, desc="demo images", unit="img",
                                                                      disable=not progress)]
    md_images.sort(key=lambda m: m["id"])
    # the JSON files list images in id order, which scatters sequences as in the real files
    train = sorted((f for f in frames if f.split == "train"), key=lambda f: f.id)
    test = sorted((f for f in frames if f.split == "test"), key=lambda f: f.id)
    detected = {m["id"] for m in md_images if m["max_detection_conf"] > 0.3}
    corrupt = _pick(rng, [f.id for f in train if f.id in detected], sc.corrupt)  # so crop cutting meets them
    missing = _pick(rng, [f.id for f in train if f.id not in corrupt], sc.missing)
    _plant_defects(root, corrupt, missing)
    omitted = _pick(rng, [f.id for f in test], sc.omitted)
    planted = {"missing": tuple(sorted(missing + corrupt)),  # the resized dataset lacks the corrupt ones
               "unreadable": tuple(i for i in corrupt if _has_crop(md_images, i)),  # the crop stage reads those
               "not_in_sample": omitted}
    sample_ids = [f.id for f in test if f.id not in omitted]
    if quirks:
        quirk_rng = np.random.default_rng([seed, QUIRK_STREAM])
        clean = [f for f in train + test if f.id not in {*missing, *corrupt, *omitted}]
        for reason, ids in _plant_quirks(quirk_rng, root, clean, md_images, sample_ids).items():
            planted[reason] = tuple(sorted({*planted.get(reason, ()), *ids}))
    _write_metadata(rng, root, train, test, md_images, sample_ids,
                    f"scale {scale}, seed {seed}{', with quirks' if quirks else ''}")
    planted = {reason: ids for reason, ids in planted.items() if ids}
    write_json(root / GROUND_TRUTH / PLANTED_JSON, {
        "data_issues": planted,
        "grayscale": sorted(f.id for f in frames if quirks and _is_night(f.when)),
        "note": "data issues a run must report, by reason (iwc/data/issues.py), for a crop threshold of "
                f"{CROP_THRESHOLD}; grayscale: single-channel JPEGs (no data issue: they are read as RGB)"})
    return DemoInfo(root, seed, scale, len(train), len(test), tuple(train_locs), tuple(test_locs), missing,
                    corrupt, omitted, quirks, planted)


def _plan(rng: np.random.Generator, split: str, loc_ids: list[int], total: int) -> list[_Frame]:
    """Every frame of one split: cameras get uneven shares of `total`."""
    shares = rng.dirichlet(np.full(len(loc_ids), 3.0))
    frames: list[_Frame] = []
    for i, loc_id in enumerate(loc_ids):
        # the first test camera shoots one-frame sequences, as many real test cameras do; the first camera
        # of each split sees a person, so person boxes always exist
        loc = _location(rng, loc_id, single=rng.random() < 0.3 or (split == "test" and i == 0))
        frames += _plan_visits(rng, loc, split, max(12, round(shares[i] * total)), force_human=i == 0)
    return frames


def _write_images(rng: np.random.Generator, root: Path, f: _Frame, gray_nights: bool) -> dict:
    """Render one frame, write the original and its 256x256 copy; return its MegaDetector record.

    `gray_nights`: night frames are written as single-channel JPEGs, as some real ones are.
    """
    image, boxes = _render(rng, f)
    if gray_nights and _is_night(f.when):
        image = image.convert("L")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=88)
    _put(root / COMPETITION / f.split / f"{f.id}.jpg", buf.getvalue())
    buf = io.BytesIO()
    image.resize((RESIZED_SIZE, RESIZED_SIZE), Image.BOX).save(buf, "JPEG", quality=90)
    _put(root / RESIZED / RESIZED_MARKER / f.split / "images" / f"{f.id}.jpg", buf.getvalue())
    boxes.sort(key=lambda b: -b["conf"])
    return {"id": f.id, "max_detection_conf": boxes[0]["conf"] if boxes else 0.0, "detections": boxes}


def _plant_defects(root: Path, corrupt: tuple[str, ...], missing: tuple[str, ...]) -> None:
    """Truncate the `corrupt` originals (as an interrupted copy leaves them) and drop them from the 256
    set, as the real resized dataset lacks the corrupt files; delete the `missing` images everywhere."""
    originals, resized = root / COMPETITION / "train", root / RESIZED / RESIZED_MARKER / "train" / "images"
    for image_id in corrupt:
        path = originals / f"{image_id}.jpg"
        os.truncate(path, path.stat().st_size * 2 // 5)
        (resized / f"{image_id}.jpg").unlink()
    for image_id in missing:
        (originals / f"{image_id}.jpg").unlink()
        (resized / f"{image_id}.jpg").unlink()


def _has_crop(md_images: list[dict], image_id: str) -> bool:
    """Whether the crop stage cuts a crop of this image (an animal box above CROP_THRESHOLD)."""
    entry = next((m for m in md_images if m["id"] == image_id), None)
    return entry is not None and any(d["category"] == "1" and d["conf"] > CROP_THRESHOLD for d in entry["detections"])


def _plant_quirks(rng: np.random.Generator, root: Path, clean: list[_Frame], md_images: list[dict],
                  sample_ids: list[str]) -> dict[str, list[str]]:
    """Plant the real files' quirks on distinct `clean` images; edits `md_images` and `sample_ids` in place.

    Broken and missing files hit both the original and its 256 px copy, on images with a confident animal box
    (so the full stage and the crop stage both meet them). Returns data-issue reason -> image ids.
    """
    by_id = {m["id"]: m for m in md_images}
    confident = {m["id"] for m in md_images
                 if any(d["category"] == "1" and d["conf"] > 0.5 for d in m["detections"])}
    pool = {split: [f.id for f in clean if f.split == split] for split in ("train", "test")}
    taken: set[str] = set()

    def pick(split: str, k: int, ok: Callable[[str], bool]) -> list[str]:
        chosen = list(_pick(rng, [i for i in pool[split] if i not in taken and ok(i)], k))
        taken.update(chosen)
        return chosen

    planted: dict[str, list[str]] = {}
    for split in ("train", "test"):
        for reason, k in QUIRK_FILES.items():
            planted.setdefault(reason, []).extend(pick(split, k, confident.__contains__))
    planted["missing"] = pick("test", QUIRK_MISSING_TEST, confident.__contains__)
    folders = {f.id: (root / COMPETITION / f.split, root / RESIZED / RESIZED_MARKER / f.split / "images")
               for f in clean}
    for reason, ids in planted.items():
        for image_id in ids:
            for folder in folders[image_id]:
                path = folder / f"{image_id}.jpg"
                if reason == "missing":
                    path.unlink()
                else:  # truncated as an interrupted copy leaves it, or empty
                    os.truncate(path, path.stat().st_size * 2 // 5 if reason == "unreadable" else 0)

    planted["no_detector_entry"] = [*pick("train", QUIRK_NO_DETECTOR, bool), *pick("test", QUIRK_NO_DETECTOR, bool)]
    md_images[:] = [m for m in md_images if m["id"] not in planted["no_detector_entry"]]

    def has_boxes(image_id: str) -> bool:
        return bool(by_id[image_id]["detections"])

    planted["box_clamped"] = pick("train", QUIRK_CLAMPED - 1, has_boxes) + pick("test", 1, has_boxes)
    for k, image_id in enumerate(planted["box_clamped"]):  # real examples: x = -0.01; x + w = 1.004
        box = by_id[image_id]["detections"][0]
        x, y, w, h = box["bbox"]
        edges = [(-0.01, y, x + w + 0.01, h), (x, y, 1.004 - x, h), (x, y, w, 1.02 - y)][k % 3]
        box["bbox"] = [round(v, 4) for v in edges]
    planted["box_dropped"] = pick("train", 1, bool) + pick("test", QUIRK_DROPPED - 1, bool)
    for k, image_id in enumerate(planted["box_dropped"]):
        bbox = [[0.4, 0.5, 0.0, 0.1], [1.3, 0.2, 0.1, 0.1]][k % 2]  # no width; far past the right edge
        by_id[image_id]["detections"].append({"category": "1", "bbox": bbox, "conf": 0.012})

    planted["sample_without_image"] = [_uid(rng) for _ in range(QUIRK_SAMPLE_ONLY)]
    for image_id in planted["sample_without_image"]:
        sample_ids.insert(int(rng.integers(len(sample_ids) + 1)), image_id)
    return planted


def _write_metadata(rng: np.random.Generator, root: Path, train: list[_Frame], test: list[_Frame],
                    md_images: list[dict], sample_ids: list[str], about: str) -> None:
    comp = root / COMPETITION
    info = {"year": "2020", "version": "1.0", "contributor": "iwc demo-data (synthetic)",
            "description": f"Synthetic miniature of the iWildCam 2020 data, {about}"}
    categories = _categories(train)
    write_json(comp / TRAIN_JSON, {
        "info": info, "categories": categories, "images": [_image_record(f) for f in train],
        "annotations": [{"id": _uid(rng), "image_id": f.id, "category_id": f.category_id,
                         "count": len(f.actors)} for f in train]})
    write_json(comp / TEST_JSON, {"info": info, "categories": categories,
                                  "images": [_image_record(f) for f in test]})
    write_json(comp / MD_JSON, {
        "info": {"detector": "synthetic_megadetector_v3", "detection_completion_time": "2020-01-10 08:47:59",
                 "format_version": "1.0"},
        "images": md_images, "detection_categories": {"1": "animal", "2": "person"}})
    write_text(comp / SAMPLE_CSV, "Id,Category\n" + "".join(f"{i},{EMPTY}\n" for i in sample_ids))
    write_text(root / GROUND_TRUTH / "test_labels.csv",
               "Id,Category\n" + "".join(f"{f.id},{f.category_id}\n" for f in test))


def _categories(train: list[_Frame]) -> list[dict]:
    counts: dict[int, int] = {}
    for f in train:
        counts[f.category_id] = counts.get(f.category_id, 0) + 1
    names = dict(OTHER_CATEGORIES) | {s.id: s.name for s in SPECIES}
    return [{"id": i, "name": names[i], "count": counts.get(i, 0)} for i in sorted(names)]


def _image_record(f: _Frame) -> dict:
    return {"id": f.id, "file_name": f"{f.id}.jpg", "location": f.location.id, "seq_id": f.seq_id,
            "seq_num_frames": f.seq_num_frames, "frame_num": f.frame_num,
            "datetime": f.when.strftime(DATETIME_FORMAT)[:-3],
            "width": f.location.size[0], "height": f.location.size[1]}


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pick(rng: np.random.Generator, ids: list[str], k: int) -> tuple[str, ...]:
    return tuple(sorted(rng.choice(sorted(ids), min(k, len(ids)), replace=False).tolist()))


def _uid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


# --- scenes ---------------------------------------------------------------------------------------------

def _location(rng: np.random.Generator, loc_id: int, single: bool) -> _Location:
    """A camera's fixed view: sky or canopy, textured ground, trunks, bushes and rocks; its species mix."""
    w, h = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    horizon = h * rng.uniform(0.22, 0.5)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    ridge = horizon + h * 0.03 * np.sin(xs / w * rng.uniform(2, 9) + rng.uniform(0, 6))
    if rng.random() < 0.5:  # open country: hazy sky
        top, low = rng.uniform([90, 120, 150], [170, 190, 230]), rng.uniform([150, 160, 170], [225, 225, 230])
    else:  # forest: dark green canopy
        top, low = rng.uniform([20, 45, 15], [60, 95, 50]), rng.uniform([30, 60, 20], [80, 120, 60])
    ground = rng.uniform(70, 150) * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.8)])  # earth
    t = (ys / max(horizon, 1.0))[..., None]
    sky = top * (1 - t) + low * t
    depth = np.clip((ys - ridge) / (h - horizon), 0, 1)[..., None]
    land = ground * (0.75 + 0.35 * depth)
    img = np.where((ys >= ridge)[..., None], land, sky)
    img *= (0.8 + 0.4 * _smooth_noise(rng, w, h, 10))[..., None]
    img *= (0.9 + 0.2 * _smooth_noise(rng, w, h, 90))[..., None]
    day = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(day)
    for _ in range(int(rng.integers(1, 5))):  # trunks
        x, tw = rng.uniform(0, w), rng.uniform(0.015, 0.06) * w
        base = horizon + rng.uniform(0.05, 0.4) * (h - horizon)
        draw.rectangle((x, 0, x + tw, base), fill=tuple(int(c) for c in rng.uniform([35, 25, 15], [95, 75, 55])))
    for _ in range(int(rng.integers(3, 9))):  # bushes and rocks
        cx, cy = rng.uniform(0, w), horizon + rng.uniform(-0.05, 0.9) * (h - horizon)
        rx, ry = rng.uniform(0.03, 0.12) * w, rng.uniform(0.02, 0.07) * h
        rock = rng.random() < 0.35
        colour = rng.uniform([90, 90, 90], [150, 145, 140]) if rock else rng.uniform([20, 50, 15], [70, 110, 50])
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tuple(int(c) for c in colour))
    gray = np.asarray(day.convert("L"), dtype=np.float32)
    r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h * 0.6) / (h * 0.6)) ** 2
    flash = gray * (1.05 - 0.55 * np.clip(r2, 0, 1.3)) * 0.85  # the infrared flash lights the centre
    night = Image.fromarray(np.clip(flash, 0, 255).astype(np.uint8)).convert("RGB")
    weights = np.array([s.weight for s in SPECIES]) * rng.gamma(1.2, size=len(SPECIES))
    absent = rng.random(len(SPECIES)) < 0.3
    absent[np.argsort(-weights)[:3]] = False  # every location keeps at least its three commonest
    weights[absent] = 0.0
    start = datetime(2012, 1, 1) + timedelta(days=int(rng.integers(0, 2700)))
    return _Location(loc_id, (w, h), float(horizon), day, night, weights / weights.sum(),
                     single, start)


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Noise in [0, 1) with about `cells` features across the width, bicubically upsampled to (h, w)."""
    coarse = rng.random((max(2, cells * h // w), cells))
    small = Image.fromarray((coarse * 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0


def _plan_visits(rng: np.random.Generator, loc: _Location, split: str, n_frames: int,
                 force_human: bool) -> list[_Frame]:
    """Visits to one camera, in time order, until it holds at least `n_frames` frames.

    A visit is a burst of 1-5 frames one second apart under one seq_id, or, at a `single` camera,
    1-4 one-frame sequences a few seconds apart (only the time gap ties them together).
    """
    frames: list[_Frame] = []
    when, visit = loc.start, 0
    while len(frames) < n_frames:
        when = _next_visit(rng, when)
        if force_human and visit == 1:
            category = HUMAN
        elif rng.random() < EMPTY_SHARE:
            category = EMPTY
        else:
            category = SPECIES[int(rng.choice(len(SPECIES), p=loc.weights))].id
        if loc.single:
            n = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
            offsets = np.concatenate([[0], np.cumsum(rng.integers(3, 15, n - 1))]).astype(int)
        else:
            n = int(rng.choice([1, 2, 3, 4, 5], p=[0.1, 0.15, 0.45, 0.1, 0.2]))
            offsets = np.arange(n)
        actors = _actors(rng, loc, category, speed=3.0 if loc.single else 1.0)
        seq_id = _uid(rng)
        for k in range(n):
            if loc.single and k:
                seq_id = _uid(rng)
            frames.append(_Frame(_uid(rng), split, loc, seq_id, 1 if loc.single else n,
                                 1 if loc.single else k + 1, when + timedelta(seconds=int(offsets[k])),
                                 category, actors, k))
        when += timedelta(seconds=int(offsets[-1]))
        visit += 1
    return frames


def _next_visit(rng: np.random.Generator, after: datetime) -> datetime:
    """Minutes to days later; night times are partly skipped so about 30% of frames are at night."""
    while True:
        after += timedelta(seconds=int(math.exp(rng.uniform(math.log(120), math.log(4 * 86400)))))
        if not _is_night(after) or rng.random() > NIGHT_SKIP:
            return after


def _is_night(when: datetime) -> bool:
    return when.hour >= 19 or when.hour < 6


def _actors(rng: np.random.Generator, loc: _Location, category: int, speed: float) -> tuple[_Actor, ...]:
    """Who crosses the scene in one visit (nobody when empty): a herd walks in file, one speed and heading."""
    if category == EMPTY:
        return ()
    w, h = loc.size
    species = next((s for s in SPECIES if s.id == category), None)
    n = 1 if species is None else int(rng.integers(1, species.herd + 1))
    facing = 1 if rng.random() < 0.5 else -1
    vx = facing * rng.uniform(0.02, 0.12) * w * speed
    vy = rng.uniform(-0.01, 0.01) * h
    x0, y0 = rng.uniform(0.1, 0.9) * w, loc.horizon + rng.uniform(0.15, 0.95) * (h - loc.horizon)
    actors = []
    for i in range(n):
        y = float(np.clip(y0 + rng.normal(0, 0.04) * h * (i > 0), loc.horizon + 5, h - 2))
        near = 0.55 + 0.55 * (y - loc.horizon) / (h - loc.horizon)  # perspective: lower is nearer, larger
        x = x0 - facing * i * rng.uniform(0.6, 1.4) * (species.length if species else 0.05) * w
        if species is None:
            length, colour = rng.uniform(0.28, 0.42) * h * near, (196, 160, 130)
            aspect = leg = neck = 0.0
            marks = np.zeros((0, 2))
        else:
            length = species.length * w * near * math.exp(rng.normal(0, 0.12))
            aspect = species.aspect * rng.uniform(0.88, 1.12)
            leg, neck = species.leg * rng.uniform(0.85, 1.15), species.neck * rng.uniform(0.7, 1.3)
            colour = _jitter(rng, species.colour)
            marks = rng.uniform([0.1, 0.15], [0.9, 0.85], (int(rng.integers(5, 11)), 2))
        clothes = tuple(int(c) for c in rng.uniform(30, 200, 3))
        actors.append(_Actor(species, length, aspect, leg, neck, colour, clothes, marks, facing,
                             float(x), y, float(vx), float(vy)))
    return tuple(actors)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Per-individual coat: overall brightness +-20%, each channel +-8 levels."""
    c = np.array(colour) * rng.uniform(0.8, 1.2) + rng.uniform(-8, 8, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


# --- rendering ------------------------------------------------------------------------------------------

def _render(rng: np.random.Generator, f: _Frame) -> tuple[Image.Image, list[dict]]:
    """The frame's pixels and its MegaDetector detections (normalized [x, y, w, h], top-left origin)."""
    loc, night = f.location, _is_night(f.when)
    w, h = loc.size
    # exposure: the flash varies a little at night; by day light follows the hour, with a slight colour cast
    gain = rng.uniform(0.85, 1.1) if night else 1.15 - 0.04 * abs(f.when.hour + f.when.minute / 60 - 12.5)
    cast = np.ones(3) if night else rng.uniform(0.94, 1.06, 3)
    lut = np.minimum(255, np.arange(256)[None, :] * gain * cast[:, None]).astype(np.uint8)
    image = (loc.night if night else loc.day).point(lut.ravel().tolist())
    boxes = []
    for a in f.actors:
        sprite = _draw_person(a) if a.species is None else _draw_animal(a, a.species, night, f.step)
        x, y = a.x + a.vx * f.step, a.y + a.vy * f.step
        left, top = round(x - sprite.width / 2), round(y - sprite.height)
        image.paste(sprite, (left, top), sprite)
        bl, bt, br, bb = sprite.getbbox()
        full = (br - bl) * (bb - bt)
        x0, y0 = max(left + bl, 0), max(top + bt, 0)
        x1, y1 = min(left + br, w), min(top + bb, h)
        if x1 > x0 and y1 > y0:
            visible = (x1 - x0) * (y1 - y0) / full
            boxes += _detect(rng, (x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h), visible, night,
                             "1" if a.species else "2")
    if rng.random() < (0.25 if not f.actors else 0.06):  # a false box on a bush, rock or shadow
        bw, bh = rng.uniform(0.04, 0.2), rng.uniform(0.04, 0.2)
        bx, by = rng.uniform(0, 1 - bw), rng.uniform(loc.horizon / h - 0.1, 1 - bh)
        boxes.append(_box("1", (bx, max(by, 0.0), bw, bh), rng.beta(1.3, 2.6)))
    if night:
        image = image.convert("L").convert("RGB")
    return image, boxes


def _detect(rng: np.random.Generator, box: tuple[float, float, float, float], visible: float, night: bool,
            category: str) -> list[dict]:
    """MegaDetector on one individual: usually a confident, slightly misplaced box; sometimes a miss."""
    miss = 0.6 if visible < 0.4 else (0.3 if night else 0.18)
    if category == "2":
        miss /= 2
    if rng.random() < miss:
        return [_box(category, box, rng.uniform(0.02, 0.29))] if rng.random() < 0.5 else []
    x, y, bw, bh = box
    dx0, dy0, dx1, dy1 = rng.normal(0, 0.06, 4)
    jittered = (x + dx0 * bw, y + dy0 * bh, bw * (1 + dx1 - dx0), bh * (1 + dy1 - dy0))
    return [_box(category, jittered, 0.3 + 0.7 * rng.beta(3.0, 1.2))]


def _box(category: str, box: tuple[float, float, float, float], conf: float) -> dict:
    x, y, bw, bh = box
    x0, y0 = min(max(x, 0.0), 0.99), min(max(y, 0.0), 0.99)
    x1, y1 = min(max(x + bw, x0 + 0.005), 1.0), min(max(y + bh, y0 + 0.005), 1.0)
    return {"category": category, "bbox": [round(x0, 4), round(y0, 4), round(x1 - x0, 4), round(y1 - y0, 4)],
            "conf": round(min(float(conf), 0.999), 3)}


def _draw_animal(a: _Actor, s: Species, night: bool, step: int) -> Image.Image:
    """An RGBA sprite facing `a.facing`, feet on its bottom edge; drawn at 2x, then halved (smooth edges)."""
    bl = a.length * 2
    bh = bl * a.aspect
    left, top = bl * (s.tail + 0.05) + 2, bh * (a.neck + 0.4) + 2
    size = (int(left + bl * 1.55) + 2, int(top + bh * (1 + a.leg)) + 2)
    mask, coat = Image.new("L", size, 0), Image.new("RGB", size, a.colour)
    dm, dc = ImageDraw.Draw(mask), ImageDraw.Draw(coat)
    legw = max(2, int(bl * 0.08))
    for i, fx in enumerate((0.15, 0.3, 0.7, 0.85)):  # legs swing with the step
        swing = 0.35 * math.sin(step * 1.7 + i * 1.3)
        x0, y0, ln = left + fx * bl, top + 0.75 * bh, bh * (a.leg + 0.25)
        dm.line((x0, y0, x0 + ln * math.sin(swing), y0 + ln * math.cos(swing)), fill=255, width=legw)
    dm.ellipse((left, top, left + bl, top + bh), fill=255)
    hx, hy = left + bl * 1.05, top + bh * (0.25 - a.neck)
    hr, vr = bl * 0.17, bh * 0.28 if a.aspect < 0.9 else bl * 0.17
    dm.line((left + 0.8 * bl, top + 0.4 * bh, hx, hy), fill=255, width=max(2, int(bh * 0.3)))
    dm.ellipse((hx - hr, hy - vr, hx + hr, hy + vr), fill=255)
    if s.snout:
        dm.ellipse((hx, hy - vr * 0.2, hx + bl * 0.4, hy + vr * 0.45), fill=255)
    if s.tail:
        tx, ty = left + 0.03 * bl, top + 0.3 * bh
        dm.line((tx, ty, tx - s.tail * bl, ty + s.tail * bl * 0.35), fill=255, width=max(2, int(bl * 0.05)))
    belly = tuple(min(255, int(c * 1.25)) for c in a.colour)
    dc.ellipse((left + 0.15 * bl, top + 0.6 * bh, left + 0.85 * bl, top + 1.05 * bh), fill=belly)
    _pattern(dc, s.pattern, a, left, top, bl, bh)
    er = max(1.5, bl * 0.035)
    dc.ellipse((hx + hr * 0.3 - er, hy - vr * 0.3 - er, hx + hr * 0.3 + er, hy - vr * 0.3 + er),
               fill=(250, 250, 240) if night else (15, 12, 10))  # eye shine under the flash
    sprite = coat.convert("RGBA")
    sprite.putalpha(mask)
    return _finish(sprite, a.facing)


def _pattern(dc: ImageDraw.ImageDraw, pattern: str, a: _Actor, left: float, top: float, bl: float,
             bh: float) -> None:
    dark = tuple(int(c * 0.3) for c in a.colour)
    if pattern == "spots":
        r = bl * 0.045
        for u, v in a.marks:
            cx, cy = left + u * bl, top + v * bh
            dc.ellipse((cx - r, cy - r, cx + r, cy + r), fill=dark)
    elif pattern == "stripes":
        for u in a.marks[:5, 0]:
            x = left + u * bl
            dc.line((x, top + 0.1 * bh, x, top + 0.75 * bh), fill=(236, 230, 218), width=max(2, int(bl * 0.03)))
    elif pattern == "collar":
        dc.rectangle((left + 0.72 * bl, top, left + 0.84 * bl, top + bh), fill=(205, 198, 186))
    elif pattern == "vest":
        dc.polygon([(left + 0.3 * bl, top), (left + 0.75 * bl, top), (left + 0.5 * bl, top + bh),
                    (left + 0.1 * bl, top + bh)], fill=(22, 20, 20))


def _draw_person(a: _Actor) -> Image.Image:
    """An upright person `a.length` px tall: head, shirt, trousers, arms."""
    ht = a.length * 2
    wd = ht * 0.35
    size = (int(wd) + 4, int(ht) + 4)
    sprite = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(sprite)
    cx, hr = size[0] / 2, ht * 0.07
    trousers = (*(int(c * 0.6) for c in a.clothes), 255)
    d.line((cx - wd * 0.12, ht * 0.55, cx - wd * 0.18, ht), fill=trousers, width=max(2, int(wd * 0.18)))
    d.line((cx + wd * 0.12, ht * 0.55, cx + wd * 0.18, ht), fill=trousers, width=max(2, int(wd * 0.18)))
    d.rectangle((cx - wd * 0.25, ht * 0.16, cx + wd * 0.25, ht * 0.58), fill=(*a.clothes, 255))
    for sx in (-1, 1):
        d.line((cx + sx * wd * 0.25, ht * 0.18, cx + sx * wd * 0.45, ht * 0.5), fill=(*a.clothes, 255),
               width=max(2, int(wd * 0.1)))
    d.ellipse((cx - hr, ht * 0.16 - 2 * hr, cx + hr, ht * 0.16), fill=(*a.colour, 255))
    return _finish(sprite, a.facing)


def _finish(sprite: Image.Image, facing: int) -> Image.Image:
    sprite = sprite.reduce(2)
    return sprite if facing > 0 else sprite.transpose(Image.FLIP_LEFT_RIGHT)
