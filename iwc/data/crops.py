"""MegaDetector boxes -> square crops of the original images.

`select_boxes` picks which animal boxes become crops; `box_to_pixels` maps a normalized box onto an
image; `extract_crops` cuts, resizes and writes the crops, decoding each original once and, when the
boxes allow, at a reduced JPEG scale (PIL draft mode: the decoder skips most of the work), and where the band
decoder is built only the rows its boxes need (`jpeg_region`). Each crop
carries its content key (`crop_key`) in its JPEG comment, so a rerun reuses exactly the crops whose box,
settings and original are unchanged and cuts the others again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from iwc.data import jpeg_region
from iwc.data.decode import Unreadable, opened, to_rgb
from iwc.data.scratch import require_free
from iwc.errors import IwcError
from iwc.io import atomic_write, child_path, sha256_json

ANIMAL = 1  # MegaDetector category id (2 = person, 3 = vehicle)
RULES = ("best", "all")
SELECTION_COLUMNS = ["crop_id", "image_id", "conf", "x", "y", "w", "h"]
DRAFT_SCALES = (8, 4, 2)  # the reductions libjpeg can decode directly, largest first
JPEG_QUALITY = 95
SQUASH = "bilinear from the box's region"  # how `_write_crop` resizes: in a crop's key, so older crops are cut again
KEY_COMMENT = b"iwc-crop-key "  # JPEG comment of a crop: this prefix + its content key
_ORIENTATION = 0x0112  # EXIF tag
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees
_MOVES = range(2, 9)  # EXIF orientations that move pixels (ImageOps.exif_transpose ignores any other value)

Box = Sequence[float]  # normalized [x, y, w, h], top-left origin


def box_to_pixels(bbox: Box, width: int, height: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    """Normalized [x, y, w, h] -> pixel (left, top, right, bottom) of a `width` x `height` image.

    The box grows by `margin` times its own size on every side, is clipped to the image, and keeps at
    least 1 px in each dimension (a degenerate or outside box becomes the nearest edge pixel).
    """
    x, y, w, h = bbox
    left, right = _span(x, w, margin, width)
    top, bottom = _span(y, h, margin, height)
    return left, top, right, bottom


def _span(start: float, length: float, margin: float, extent: int) -> tuple[int, int]:
    """One axis of `box_to_pixels`: rounded, clipped to [0, extent], at least 1 px long."""
    lo = math.floor((start - margin * length) * extent + 0.5)
    hi = math.floor((start + length + margin * length) * extent + 0.5)
    lo = min(max(lo, 0), extent - 1)
    return lo, min(max(hi, lo + 1), extent)


def select_boxes(detections: pd.DataFrame, rule: str = "best", threshold: float = 0.3) -> pd.DataFrame:
    """Detections (image_id, category, conf, x, y, w, h) -> crops to cut, DataFrame(SELECTION_COLUMNS).

    "best": the most confident animal box per image with conf > threshold; crop_id = image_id.
    "all": every animal box with conf >= threshold; crop_id = f"{image_id}_{k}", k = 0, 1, ... by
    descending conf. Person and vehicle boxes are never selected. Rows are sorted by image_id, then k.
    """
    missing = [c for c in ("image_id", "category", *SELECTION_COLUMNS[2:]) if c not in detections]
    if missing:
        raise IwcError(f"detections lack columns {missing}; read them with competition.read_megadetector")
    if rule not in RULES:
        raise IwcError(f"unknown crop rule {rule!r}; use one of {', '.join(RULES)}")
    animals = detections[detections["category"] == ANIMAL]
    conf = animals["conf"]
    boxes = animals[conf > threshold if rule == "best" else conf >= threshold]
    # Ties in conf are broken by the box itself, so the order never depends on the input order.
    boxes = boxes.assign(image_id=boxes["image_id"].astype(str)).sort_values(
        ["image_id", "conf", "x", "y", "w", "h"],
        ascending=[True, False, True, True, True, True],
        kind="mergesort",
    )
    rank = boxes.groupby("image_id", sort=False).cumcount()
    if rule == "best":
        boxes = boxes[rank == 0].assign(crop_id=lambda b: b["image_id"])
    else:
        boxes = boxes.assign(crop_id=boxes["image_id"] + "_" + rank.astype(str))
    return boxes[SELECTION_COLUMNS].reset_index(drop=True)


def draft_scale(image_size: tuple[int, int], bboxes: Iterable[Box], size: int, margin: float = 0.0) -> int:
    """Largest JPEG reduction (8, 4, 2, else 1) of an image at which every box still spans >= `size` px.

    `image_size` is the full (width, height) as the boxes see it, i.e. after EXIF orientation.
    """
    bboxes = list(bboxes)
    width, height = image_size
    for scale in DRAFT_SCALES:
        reduced = (-(-width // scale), -(-height // scale))  # libjpeg rounds the reduced size up
        spans = [box_to_pixels(b, *reduced, margin) for b in bboxes]
        if all(r - le >= size and b - t >= size for le, t, r, b in spans):
            return scale
    return 1


@dataclass(frozen=True)
class CropResult:
    """What `extract_crops` produced: one index row per crop on disk, and the images it could not read."""

    index: pd.DataFrame  # crop_id, image_id, conf, path
    failed: list[str]  # image ids whose original is missing or undecodable
    reused: int = 0  # crops already in out_dir, cut by an earlier run from the same box, settings and original

    def summary(self) -> str:
        """One line of counts, for logs."""
        return (
            f"{len(self.index)} crops ({self.reused} reused from an earlier run), "
            f"{len(self.failed)} images missing or undecodable"
        )


def extract_crops(
    selection: pd.DataFrame,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    size: int = 128,
    margin: float = 0.0,
    draft: bool = True,
    progress: bool = True,
    workers: int | None = None,
    band: bool = True,
) -> CropResult:
    """Cut each selected box from `image_dir/<image_id>.jpg`, squash it to size x size, and write it to
    `out_dir/<crop_id>.jpg` (fixed JPEG quality, atomically).

    Boxes are mapped onto the image as decoded (EXIF orientation applied), never onto JSON metadata.
    `draft=True` decodes at the largest JPEG reduction that keeps every box of the image >= `size` px;
    `band=True` decodes only the rows the boxes need where the band decoder is built (`jpeg_region`: the same
    pixels, so the same crops either way).
    A crop already in `out_dir` is reused only when its stored `crop_key` matches (same box, settings and
    original); any other is cut again. Missing or undecodable originals are listed in `CropResult.failed`;
    their crops are skipped. Images are cut on `workers` threads (default: every core; PIL decodes, resizes
    and encodes without the GIL); each image's crops depend on that image alone, so the files and the index
    (sorted by image id) are the same for any number of workers.
    """
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    require_free(out_dir, max(0, crops_bytes(len(selection), size) - _bytes_in(out_dir)),
                 f"cutting {len(selection)} crops at {size}px")
    groups = _per_image(selection)
    rows: list[tuple[str, str, float, str]] = []
    failed: list[str] = []
    reused = 0

    def cut(group: tuple[str, list, np.ndarray, np.ndarray]) -> tuple[list, bool, int]:
        return _cut_image(*group, image_dir=image_dir, out_dir=out_dir, size=size, margin=margin, draft=draft,
                          band=band)

    bar = tqdm(total=len(groups), desc="crops", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool, bar:
        for start in range(0, len(groups), _BATCH):  # bounded: a batch of images in flight, in order
            batch = groups[start:start + _BATCH]
            for (image_id, *_), (image_rows, ok, image_reused) in zip(batch, pool.map(cut, batch), strict=True):
                if not ok:
                    failed.append(image_id)
                rows += image_rows
                reused += image_reused
                bar.update()
    index = pd.DataFrame(rows, columns=["crop_id", "image_id", "conf", "path"])
    return CropResult(index=index, failed=failed, reused=reused)


_BATCH = 256  # images handed to the pool at a time


def _per_image(selection: pd.DataFrame) -> list[tuple[str, list, np.ndarray, np.ndarray]]:
    """Each image's boxes as (image id, crop ids, confs, (k, 4) x y w h), images in id order, boxes in their
    order: one stable sort and slices (a pandas groupby loop takes a minute at the real size's 100k images)."""
    if selection.empty:
        return []
    ordered = selection.sort_values("image_id", kind="stable")
    ids = ordered["image_id"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]).tolist()
    crop_ids, confs = ordered["crop_id"].tolist(), ordered["conf"].to_numpy(float)
    boxes = ordered[["x", "y", "w", "h"]].to_numpy(float)
    ends = [*starts[1:], len(ids)]
    return [(ids[a], crop_ids[a:b], confs[a:b], boxes[a:b]) for a, b in zip(starts, ends, strict=True)]


def _cut_image(image_id: str, crop_ids: list, confs: np.ndarray, bboxes: np.ndarray, *, image_dir: Path,
               out_dir: Path, size: int, margin: float, draft: bool, band: bool) -> tuple[list, bool, int]:
    """One original's crops: (index rows, whether the original was readable, crops reused)."""
    paths = [child_path(out_dir, f"{crop_id}.jpg", f"crop id {crop_id!r}") for crop_id in crop_ids]
    original = child_path(image_dir, f"{image_id}.jpg", f"image id {image_id!r}")
    source = _file_stamp(original)
    keys = [crop_key(bbox, size, margin, draft, source) for bbox in bboxes]
    todo = [i for i, path in enumerate(paths) if _stored_key(path) != keys[i]]
    if todo:
        try:
            regions = _decode_regions(original, bboxes[todo], size, margin, draft, band)
        except Unreadable:
            return [], False, 0
        for i, (region, box) in zip(todo, regions, strict=True):
            _write_crop(region, box, paths[i], size, keys[i])
    rows = [(c, image_id, float(p), str(path)) for c, p, path in zip(crop_ids, confs, paths, strict=True)]
    return rows, True, len(paths) - len(todo)


def crops_bytes(n: int, size: int) -> int:
    """Scratch `n` crops at `size` px take, a bound: a photo's JPEG at JPEG_QUALITY holds well under half its
    raw pixels' bytes; plus a file system block each."""
    return n * (size * size * 3 // 2 + 4096)


def _bytes_in(folder: Path) -> int:
    """Bytes of the crops already in `folder` (reused or overwritten: their space is not needed again)."""
    return sum(p.stat().st_size for p in folder.glob("*.jpg")) if folder.is_dir() else 0


def _decode_regions(path: Path, bboxes: np.ndarray, size: int, margin: float, draft: bool, band: bool) -> \
        list[tuple[Image.Image, tuple[int, int, int, int]]]:
    """Each box's region of an original (the box and the pixels around it its resize reads), decoded as 8-bit RGB,
    upright (EXIF orientation applied), reduced when `draft` allows, with the box in the region's pixels;
    `Unreadable` if it does not decode. `band`: through the band decoder where it applies (the same pixels)."""
    with opened(path) as img:
        width, height = img.size
        orientation = img.getexif().get(_ORIENTATION)
        upright = (height, width) if orientation in _SWAPS_AXES else (width, height)
        scale = draft_scale(upright, bboxes, size, margin) if draft else 1
        reduced = (-(-upright[0] // scale), -(-upright[1] // scale))  # libjpeg rounds a reduced size up
        boxes = [box_to_pixels(bbox, *reduced, margin) for bbox in bboxes]
        regions = [_region(box, size, reduced) for box in boxes]
        pixels = None
        if band and orientation not in _MOVES:
            pixels = jpeg_region.decode_regions(path, img, scale, regions)
        if pixels is None:
            if scale > 1:
                # PIL picks the reduction from size // request, so ask for exactly the floor.
                img.draft("RGB", (width // scale, height // scale))
            ImageOps.exif_transpose(img, in_place=True)
            whole = to_rgb(img)
            pixels = [whole.crop(region) for region in regions]
    return [(p, (le - rl, t - rt, r - rl, b - rt)) for p, (le, t, r, b), (rl, rt, *_) in
            zip(pixels, boxes, regions, strict=True)]


def _region(box: tuple[int, int, int, int], size: int, extent: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixels a bilinear squash of `box` to size x size reads: the box and, on each side, the filter's
    support (one source pixel per output pixel, at least one) plus one; clipped to the image (`extent`)."""
    left, top, right, bottom = box
    dx, dy = math.ceil(max((right - left) / size, 1.0)) + 1, math.ceil(max((bottom - top) / size, 1.0)) + 1
    return max(left - dx, 0), max(top - dy, 0), min(right + dx, extent[0]), min(bottom + dy, extent[1])


def _write_crop(region: Image.Image, box: tuple[int, int, int, int], path: Path, size: int, key: str) -> None:
    """Squash `box` of `region` to size x size (bilinear, antialiased); write it as JPEG with `key`."""
    crop = region.resize((size, size), Image.Resampling.BILINEAR, box=box)
    with atomic_write(path, "wb") as f:
        crop.save(f, format="JPEG", quality=JPEG_QUALITY, comment=KEY_COMMENT + key.encode("ascii"))


def crop_key(bbox: Box, size: int, margin: float, draft: bool, source: tuple[int, int] | None) -> str:
    """Content key of one crop: everything that decides its pixels. `source` = the original's (byte size,
    mtime in ns), None when it is absent. (The crop threshold and rule only choose WHICH box: the box is here.)"""
    return sha256_json({"bbox": [float(v) for v in bbox], "size": int(size), "margin": float(margin),
                        "draft": bool(draft), "quality": JPEG_QUALITY, "squash": SQUASH, "source": source})


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _stored_key(path: Path) -> str | None:
    """The content key a crop file carries (writes are atomic, so a readable header means a whole file)."""
    try:
        with opened(path) as img:
            comment = img.info.get("comment", b"")
    except Unreadable:
        return None
    return comment[len(KEY_COMMENT):].decode("ascii", "replace") if comment.startswith(KEY_COMMENT) else None
