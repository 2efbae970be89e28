"""The defects planted in the synthetic competition: the plain demo's (missing and truncated train images) and,
with `quirks=True`, the rest of what the real files hold (`plant_quirks`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from iwc.host.synth.folders import COMPETITION, RESIZED
from iwc.host.synth.world import Frame, uid
from iwc.layout import RESIZED_MARKER

QUIRK_STREAM = 7  # the quirks' random generator is seeded (seed, QUIRK_STREAM), apart from the plain demo's
# Quirks planted with --quirks (each count per split where the defect concerns files of both splits)
QUIRK_FILES = {"unreadable": 1, "zero_byte": 1}  # per split: original AND its 256 px copy broken
QUIRK_MISSING_TEST = 1  # test images absent from both folders (the plain demo already misses train images)
QUIRK_NO_DETECTOR = 2  # per split: MegaDetector entry removed
QUIRK_CLAMPED = 3  # boxes moved a hair past the frame (left, right, bottom)
QUIRK_DROPPED = 2  # detections that are no box, added (zero width; far outside the frame)
QUIRK_SAMPLE_ONLY = 2  # sample_submission.csv Ids with no test image


def plant_defects(root: Path, corrupt: tuple[str, ...], missing: tuple[str, ...]) -> None:
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


def plant_quirks(rng: np.random.Generator, root: Path, clean: list[Frame], md_images: list[dict],
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
        chosen = list(pick_ids(rng, [i for i in pool[split] if i not in taken and ok(i)], k))
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

    planted["sample_without_image"] = [uid(rng) for _ in range(QUIRK_SAMPLE_ONLY)]
    for image_id in planted["sample_without_image"]:
        sample_ids.insert(int(rng.integers(len(sample_ids) + 1)), image_id)
    return planted


def pick_ids(rng: np.random.Generator, ids: list[str], k: int) -> tuple[str, ...]:
    return tuple(sorted(rng.choice(sorted(ids), min(k, len(ids)), replace=False).tolist()))
