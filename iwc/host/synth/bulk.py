"""The full-size synthetic competition (`--scale full`): the real counts, planned with numpy in one pass, and
tiny image files.

`plan_bulk(rng, scale)` gives every image's metadata, label and MegaDetector boxes (`BulkPlan`, no files);
`write_bulk` writes them. Each frame is its camera's small background (`THUMB_WIDTH` px wide, the real
aspect ratios) under the hour's light, with a blob in its category's colour in each confident box: cheap
enough for 280k files in minutes on one core. There is no 256 px copy: the full stage reads the originals.
As the real data: 267 sparse categories (the demo's real ids and others, 216 of them seen in train, a
long tail), about a third of the train frames empty, bursts of 1-5 frames, detections long-tailed up to
`MAX_BOXES` per image and mostly of low confidence (about 60% of images with a box above 0.3), the 24 test
images that do not decode absent from the sample submission, truncated train JPEGs.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from iwc.data.categories import EMPTY
from iwc.host.synth.folders import COMPETITION
from iwc.host.synth.world import HUMAN, OTHER_CATEGORIES, SPECIES, Scale

REAL_FRAME_SIZES = ((2048, 1536), (1920, 1080), (2771, 1779))  # (width, height) of real originals
THUMB_WIDTH = 48  # px across the written files
N_CATEGORIES = 267
SEEN_IN_TRAIN = 216
EXTRA_NAMED = {347: "start", 348: "end"}  # real non-species ids beside the demo's
EMPTY_SHARE = 0.34
MAX_BOXES = 100
BURST = ((1, 2, 3, 4, 5), (0.25, 0.15, 0.35, 0.1, 0.15))  # frames per sequence and their odds
EPOCH_2012 = np.datetime64("2012-01-01T00:00:00", "s")


@dataclass(frozen=True)
class BulkPlan:
    """Every image of a full-size competition, before any file is written."""

    categories: list[dict]  # {"id", "name", "count"} in id order
    train: pd.DataFrame  # the image records' columns + category_id, size (index into REAL_FRAME_SIZES)
    test: pd.DataFrame
    boxes: dict[str, np.ndarray]  # per detection, in image order (train then test): image, category, bbox, conf
    corrupt: tuple[str, ...]  # train ids written truncated
    undecodable: tuple[str, ...]  # test ids written truncated and left out of the sample

    def detections_per_image(self) -> np.ndarray:
        return np.bincount(self.boxes["image"], minlength=len(self.train) + len(self.test))


def plan_bulk(rng: np.random.Generator, sc: Scale) -> BulkPlan:
    """The whole competition of scale `sc` drawn from `rng`: exact image and location counts."""
    known = sorted({s.id for s in SPECIES} | {i for i, _ in OTHER_CATEGORIES} | set(EXTRA_NAMED))
    others = rng.choice(np.setdiff1d(np.arange(1, 676), known), N_CATEGORIES - len(known), replace=False)
    ids = np.sort(np.r_[known, others]).astype(int)
    names = dict(OTHER_CATEGORIES) | EXTRA_NAMED | {s.id: s.name for s in SPECIES}
    seen = np.r_[EMPTY, HUMAN, [s.id for s in SPECIES],
                 rng.choice(np.setdiff1d(ids, [EMPTY, HUMAN, *(s.id for s in SPECIES)]),
                            SEEN_IN_TRAIN - 2 - len(SPECIES), replace=False)]
    tail = 1.0 / np.arange(1, len(seen)) ** 1.1  # every category but empty: a long tail
    weights = np.r_[EMPTY_SHARE, (1 - EMPTY_SHARE) * tail / tail.sum()]
    loc_ids = rng.choice(np.arange(0, 600), sc.train_locations + sc.test_locations, replace=False)
    train = _split(rng, loc_ids[: sc.train_locations], sc.train_images, seen, weights)
    test = _split(rng, loc_ids[sc.train_locations:], sc.test_images, seen, weights)
    boxes = _detections(rng, np.r_[train["category_id"], test["category_id"]])
    counts = train["category_id"].value_counts()
    categories = [{"id": int(i), "name": names.get(int(i), f"species {i}"), "count": int(counts.get(i, 0))}
                  for i in ids]
    confident = np.unique(boxes["image"][boxes["conf"] > 0.3])
    corrupt = rng.choice(train["id"].to_numpy()[confident[confident < len(train)]], sc.corrupt, replace=False)
    undecodable = rng.choice(test["id"].to_numpy(), sc.omitted, replace=False)
    return BulkPlan(categories, train, test, boxes, tuple(sorted(corrupt)), tuple(sorted(undecodable)))


def _split(rng: np.random.Generator, locations: np.ndarray, total: int, seen: np.ndarray,
           weights: np.ndarray) -> pd.DataFrame:
    """`total` frames over `locations` (uneven shares, at least 12 each), in bursts under one seq_id and label,
    minutes to days apart; rows in id order, as the real files list them."""
    per_loc = 12 + rng.multinomial(total - 12 * len(locations), rng.dirichlet(np.full(len(locations), 3.0)))
    loc = np.repeat(np.arange(len(locations)), per_loc)
    lengths = rng.choice(BURST[0], size=total, p=BURST[1])
    burst = np.searchsorted(np.cumsum(lengths), np.arange(total), side="right")
    new_seq = np.r_[True, (burst[1:] != burst[:-1]) | (loc[1:] != loc[:-1])]
    seq = np.cumsum(new_seq) - 1
    seq_start = np.flatnonzero(new_seq)
    frame_num = np.arange(total) - seq_start[seq]
    seq_frames = np.diff(np.r_[seq_start, total])[seq]
    gaps = np.exp(rng.uniform(np.log(120), np.log(4 * 86400), len(seq_start))).astype(np.int64)
    first = np.r_[True, loc[seq_start][1:] != loc[seq_start][:-1]]
    gaps[first] = rng.integers(0, 2700 * 86400, len(locations))  # each camera's own start
    ends = np.cumsum(gaps)
    starts = ends - (ends - gaps)[first][np.cumsum(first) - 1]  # seconds since 2012 from each camera's clock
    when = EPOCH_2012 + (starts[seq] + frame_num).astype("timedelta64[s]")
    labels = rng.choice(seen, size=len(seq_start), p=weights)[seq]
    sizes = rng.integers(len(REAL_FRAME_SIZES), size=len(locations))[loc]
    real = np.array(REAL_FRAME_SIZES)[sizes]
    frame = pd.DataFrame({
        "id": _uuids(rng, total), "location": locations[loc].astype(int), "seq_id": _uuids(rng, len(seq_start))[seq],
        "seq_num_frames": seq_frames, "frame_num": frame_num + 1,
        "datetime": pd.to_datetime(when).strftime("%Y-%m-%d %H:%M:%S.000"), "width": real[:, 0],
        "height": real[:, 1], "category_id": labels, "size": sizes, "loc_index": loc})
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.bytes(16 * n)
    return np.array([str(uuid.UUID(bytes=raw[i:i + 16], version=4)) for i in range(0, 16 * n, 16)], dtype=object)


def _detections(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boxes of every image: a confident one for most non-empty frames (a person box for humans) and a few
    empty ones, plus a long tail of low-confidence boxes (most images a handful, a few `MAX_BOXES`)."""
    n = len(labels)
    confident = rng.random(n) < np.where(labels == EMPTY, 0.08, 0.85)
    low = np.minimum(rng.geometric(0.3, n) - 1 + (rng.random(n) < 0.01) * rng.pareto(0.8, n).astype(np.int64) * 10,
                     MAX_BOXES - confident)
    image = np.r_[np.flatnonzero(confident), np.repeat(np.arange(n), low)]
    conf = np.r_[0.301 + 0.698 * rng.beta(3.0, 1.2, confident.sum()), 0.299 * rng.beta(0.6, 4.0, low.sum())]
    category = np.where((labels[image] == HUMAN) & (conf > 0.3), "2", "1")
    w, h = rng.uniform(0.05, 0.5, len(image)), rng.uniform(0.05, 0.5, len(image))
    bbox = np.round(np.c_[rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h], 4)
    order = np.lexsort((-conf, image))  # per image, most confident first
    return {"image": image[order], "category": category[order], "bbox": bbox[order], "conf": np.round(conf[order], 3)}


def md_images(plan: BulkPlan) -> list[dict]:
    """The MegaDetector file's `images` list, train then test, in the plan's order."""
    b = plan.boxes
    bounds = np.r_[0, np.cumsum(plan.detections_per_image())]
    dets = [{"category": c, "bbox": box, "conf": p}
            for c, box, p in zip(b["category"].tolist(), b["bbox"].tolist(), b["conf"].tolist(), strict=True)]
    ids = [*plan.train["id"], *plan.test["id"]]
    return [{"id": image_id, "max_detection_conf": dets[lo]["conf"] if hi > lo else 0.0, "detections": dets[lo:hi]}
            for image_id, lo, hi in zip(ids, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]


def write_images(rng: np.random.Generator, root: Path, plan: BulkPlan, progress: bool) -> None:
    """One small JPEG per image of the plan under `root`/<competition>/{train,test}/; corrupt and undecodable
    ones truncated to a part of their header."""
    colours = {c["id"]: rng.integers(30, 230, 3) for c in plan.categories}
    first = np.r_[0, np.cumsum(plan.detections_per_image())]
    strong = plan.boxes["conf"] > 0.3
    broken = {*plan.corrupt, *plan.undecodable}
    offset = 0
    for split, frame in (("train", plan.train), ("test", plan.test)):
        folder = root / COMPETITION / split
        folder.mkdir(parents=True, exist_ok=True)
        backgrounds = [_background(rng, REAL_FRAME_SIZES[s]) for s in
                       frame.drop_duplicates("loc_index").sort_values("loc_index")["size"]]
        hours = pd.to_datetime(frame["datetime"]).dt.hour.to_numpy()
        gains = rng.uniform(0.7, 1.2, len(frame))
        rows = zip(frame["id"], frame["loc_index"], frame["category_id"], hours, gains, strict=True)
        for i, (image_id, loc, category, hour, gain) in enumerate(tqdm(
                rows, total=len(frame), desc=f"demo {split} images", unit="img", disable=not progress)):
            pixels = backgrounds[loc] * gain
            height, width = pixels.shape[:2]
            lo, hi = first[offset + i], first[offset + i + 1]
            for x, y, w, h in plan.boxes["bbox"][lo:hi][strong[lo:hi]]:
                pixels[int(y * height):int((y + h) * height) + 1, int(x * width):int((x + w) * width) + 1] = \
                    colours[category]
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            if hour >= 19 or hour < 6:
                image = image.convert("L").convert("RGB")
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=85)
            data = buf.getvalue()
            (folder / f"{image_id}.jpg").write_bytes(data[: len(data) * 2 // 5] if image_id in broken else data)
        offset += len(frame)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A camera's view at THUMB_WIDTH px: sky or canopy above a horizon, ground below, blotchy noise."""
    width = THUMB_WIDTH
    height = max(8, round(width * size[1] / size[0]))
    horizon = int(height * rng.uniform(0.2, 0.5))
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:horizon] = rng.uniform([20, 45, 15], [170, 190, 230])
    pixels[horizon:] = rng.uniform(70, 150) * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.8)])
    return pixels * rng.uniform(0.8, 1.2, (height, width, 1))


def metadata_json(obj: object) -> str:
    """Compact JSON, as the real (hundreds of MB) files are written."""
    return json.dumps(obj, separators=(",", ":"))
