"""Writing the synthetic competition: `write_demo` plans the world, renders every frame, plants the defects
(and quirks), writes the metadata files and says what it planted (`DemoInfo`); every random draw of the plain
demo comes from one generator, in order, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from iwc.data.categories import EMPTY
from iwc.data.competition import DATETIME_FORMAT, MD_JSON, SAMPLE_CSV, TEST_JSON, TRAIN_JSON
from iwc.errors import IwcError
from iwc.host.synth import bulk
from iwc.host.synth.detector import CROP_THRESHOLD, has_crop
from iwc.host.synth.folders import COMPETITION, GROUND_TRUTH, PLANTED_JSON, RESIZED
from iwc.host.synth.quirks import QUIRK_STREAM, pick_ids, plant_defects, plant_quirks
from iwc.host.synth.render import render
from iwc.host.synth.world import OTHER_CATEGORIES, SCALES, SPECIES, Frame, Scale, is_night, plan, uid
from iwc.io import write_json, write_text
from iwc.layout import RESIZED_MARKER

RESIZED_SIZE = 256


def demo_root(parent: Path, seed: int, scale: str, quirks: bool = False) -> Path:
    """Where the synthetic competition of this seed, scale and quirks setting lives under `parent`."""
    return Path(parent) / f"{scale}-seed{seed}{'-quirks' if quirks else ''}"


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


def write_demo(out: str | os.PathLike, seed: int = 0, scale: str = "small", progress: bool = True,
               quirks: bool = False) -> DemoInfo:
    """Write a synthetic competition under `out` (see the package docstring, `iwc.host.synth`) and say what was planted.

    The three top folders are built in a staging folder and moved in at the end; if any of them already
    exists with content, nothing is written.
    """
    if scale not in SCALES:
        raise IwcError(f"unknown demo scale {scale!r}: use one of {sorted(SCALES)}")
    if not isinstance(seed, int) or seed < 0:
        raise IwcError(f"demo seed {seed!r} must be an integer >= 0")
    if quirks and scale == "full":
        raise IwcError("--quirks plants its defects in the small and medium demos: drop it with --scale full")
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
        build = _build_full if scale == "full" else _build
        info = build(stage, np.random.default_rng(seed), SCALES[scale], seed, scale, progress, quirks)
        for p in (p for p in parts if (stage / p).exists()):  # the full scale has no resized dataset
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
    frames = plan(rng, "train", train_locs, sc.train_images) + plan(rng, "test", test_locs, sc.test_images)
    md_images = [_write_images(rng, root, f, quirks) for f in tqdm(frames, desc="demo images", unit="img",
                                                                      disable=not progress)]
    md_images.sort(key=lambda m: m["id"])
    # the JSON files list images in id order, which scatters sequences as in the real files
    train = sorted((f for f in frames if f.split == "train"), key=lambda f: f.id)
    test = sorted((f for f in frames if f.split == "test"), key=lambda f: f.id)
    detected = {m["id"] for m in md_images if m["max_detection_conf"] > 0.3}
    corrupt = pick_ids(rng, [f.id for f in train if f.id in detected], sc.corrupt)  # so crop cutting meets them
    missing = pick_ids(rng, [f.id for f in train if f.id not in corrupt], sc.missing)
    plant_defects(root, corrupt, missing)
    omitted = pick_ids(rng, [f.id for f in test], sc.omitted)
    planted = {"missing": tuple(sorted(missing + corrupt)),  # the resized dataset lacks the corrupt ones
               "unreadable": tuple(i for i in corrupt if has_crop(md_images, i)),  # the crop stage reads those
               "not_in_sample": omitted}
    sample_ids = [f.id for f in test if f.id not in omitted]
    if quirks:
        quirk_rng = np.random.default_rng([seed, QUIRK_STREAM])
        clean = [f for f in train + test if f.id not in {*missing, *corrupt, *omitted}]
        for reason, ids in plant_quirks(quirk_rng, root, clean, md_images, sample_ids).items():
            planted[reason] = tuple(sorted({*planted.get(reason, ()), *ids}))
    annotations = [{"id": uid(rng), "image_id": f.id, "category_id": f.category_id, "count": len(f.actors)}
                   for f in train]
    _write_metadata(root, _categories(train), [_image_record(f) for f in train], annotations,
                    [_image_record(f) for f in test], md_images, sample_ids,
                    [(f.id, f.category_id) for f in test],
                    f"scale {scale}, seed {seed}{', with quirks' if quirks else ''}")
    planted = {reason: ids for reason, ids in planted.items() if ids}
    write_json(root / GROUND_TRUTH / PLANTED_JSON, {
        "data_issues": planted,
        "grayscale": sorted(f.id for f in frames if quirks and is_night(f.when)),
        "note": "data issues a run must report, by reason (iwc/data/issues.py), for a crop threshold of "
                f"{CROP_THRESHOLD}; grayscale: single-channel JPEGs (no data issue: they are read as RGB)"})
    return DemoInfo(root, seed, scale, len(train), len(test), tuple(train_locs), tuple(test_locs), missing,
                    corrupt, omitted, quirks, planted)


def _write_images(rng: np.random.Generator, root: Path, f: Frame, gray_nights: bool) -> dict:
    """Render one frame, write the original and its 256x256 copy; return its MegaDetector record.

    `gray_nights`: night frames are written as single-channel JPEGs, as some real ones are.
    """
    image, boxes = render(rng, f)
    if gray_nights and is_night(f.when):
        image = image.convert("L")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=88)
    _put(root / COMPETITION / f.split / f"{f.id}.jpg", buf.getvalue())
    buf = io.BytesIO()
    image.resize((RESIZED_SIZE, RESIZED_SIZE), Image.BOX).save(buf, "JPEG", quality=90)
    _put(root / RESIZED / RESIZED_MARKER / f.split / "images" / f"{f.id}.jpg", buf.getvalue())
    boxes.sort(key=lambda b: -b["conf"])
    return {"id": f.id, "max_detection_conf": boxes[0]["conf"] if boxes else 0.0, "detections": boxes}


def _write_metadata(root: Path, categories: list[dict], train: list[dict], annotations: list[dict],
                    test: list[dict], md_images: list[dict], sample_ids: list[str], truth: list[tuple[str, int]],
                    about: str, dump: Callable[[Path, object], None] = write_json) -> None:
    """The competition's four metadata files and the true test labels; `dump` writes each JSON file."""
    comp = root / COMPETITION
    info = {"year": "2020", "version": "1.0", "contributor": "iwc demo-data (synthetic)",
            "description": f"Synthetic miniature of the iWildCam 2020 data, {about}"}
    dump(comp / TRAIN_JSON, {"info": info, "categories": categories, "images": train, "annotations": annotations})
    dump(comp / TEST_JSON, {"info": info, "categories": categories, "images": test})
    dump(comp / MD_JSON, {
        "info": {"detector": "synthetic_megadetector_v3", "detection_completion_time": "2020-01-10 08:47:59",
                 "format_version": "1.0"},
        "images": md_images, "detection_categories": {"1": "animal", "2": "person"}})
    write_text(comp / SAMPLE_CSV, "Id,Category\n" + "".join(f"{i},{EMPTY}\n" for i in sample_ids))
    write_text(root / GROUND_TRUTH / "test_labels.csv", "Id,Category\n" + "".join(f"{i},{c}\n" for i, c in truth))


def _build_full(root: Path, rng: np.random.Generator, sc: Scale, seed: int, scale: str, progress: bool,
                quirks: bool) -> DemoInfo:
    """The full-size competition (`bulk`): the real counts, tiny originals, no resized dataset."""
    plan = bulk.plan_bulk(rng, sc)
    bulk.write_images(rng, root, plan, progress)
    columns = ["id", "file_name", "location", "seq_id", "seq_num_frames", "frame_num", "datetime", "width", "height"]

    def records(frame: pd.DataFrame) -> list[dict]:
        return frame.assign(file_name=frame["id"] + ".jpg")[columns].to_dict("records")

    train_ids = plan.train["id"].tolist()
    annotations = [{"id": a, "image_id": i, "category_id": c, "count": 1}
                   for a, i, c in zip([uid(rng) for _ in train_ids], train_ids,
                                      plan.train["category_id"].tolist(), strict=True)]
    omitted = set(plan.undecodable)
    test_ids = plan.test["id"].tolist()
    _write_metadata(root, plan.categories, records(plan.train), annotations, records(plan.test), bulk.md_images(plan),
                    [i for i in test_ids if i not in omitted], list(zip(test_ids, plan.test["category_id"].tolist(),
                                                                        strict=True)),
                    f"scale {scale}, seed {seed}", dump=lambda path, obj: write_text(path, bulk.metadata_json(obj)))
    planted = {"unreadable": tuple(sorted(plan.corrupt + plan.undecodable)), "not_in_sample": plan.undecodable}
    write_json(root / GROUND_TRUTH / PLANTED_JSON, {
        "data_issues": planted, "grayscale": [],
        "note": "data issues a run must report, by reason (iwc/data/issues.py); no resized dataset at this scale"})
    locations = (tuple(sorted(plan.train["location"].unique().tolist())),
                 tuple(sorted(plan.test["location"].unique().tolist())))
    return DemoInfo(root, seed, scale, len(plan.train), len(plan.test), *locations, (), plan.corrupt,
                    plan.undecodable, False, planted)


def _categories(train: list[Frame]) -> list[dict]:
    counts: dict[int, int] = {}
    for f in train:
        counts[f.category_id] = counts.get(f.category_id, 0) + 1
    names = dict(OTHER_CATEGORIES) | {s.id: s.name for s in SPECIES}
    return [{"id": i, "name": names[i], "count": counts.get(i, 0)} for i in sorted(names)]


def _image_record(f: Frame) -> dict:
    return {"id": f.id, "file_name": f"{f.id}.jpg", "location": f.location.id, "seq_id": f.seq_id,
            "seq_num_frames": f.seq_num_frames, "frame_num": f.frame_num,
            "datetime": f.when.strftime(DATETIME_FORMAT)[:-3],
            "width": f.location.size[0], "height": f.location.size[1]}


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
