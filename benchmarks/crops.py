"""Crop extraction throughput: the parallel draft path (every core) against a single-thread full decode.

Generates photo-like originals (smooth gradients + sensor-like noise, camera-trap sizes) with one
plausible animal box each, extracts the crops four ways (draft + band decoding on every core, the same on one
thread, draft through PIL alone on one thread, full PIL decode on one thread: the baseline; a warm-up, then the
best of a few repeats), and reports images/s side by side plus the mean absolute pixel difference between the
draft and the full-decode crops. The band decoder gives PIL's pixels exactly: the run checks that its crops
are the same bytes as PIL's.

    python benchmarks/crops.py --out benchmarks/results/crops.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from iwc.data import jpeg_region
from iwc.data.crops import draft_scale, extract_crops, select_boxes
from iwc.io import write_json

SIZES = ((1920, 1080), (2048, 1536))  # common camera-trap resolutions
BOX_WIDTH = (0.05, 0.40)  # box width as a fraction of the image width


def make_originals(image_dir: Path, count: int, seed: int) -> pd.DataFrame:
    """Write `count` photo-like JPEGs (quality 90) and return one animal detection per image."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        coarse = rng.uniform(30, 220, size=(6, 8, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
        noisy = smooth + rng.normal(0, 8, size=smooth.shape)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(image_dir / f"img{i:03d}.jpg", quality=90)
        w = rng.uniform(*BOX_WIDTH)
        h = min(w * width / height * rng.uniform(0.6, 1.4), 0.9)  # pixel aspect ratio 0.6 .. 1.4
        rows.append((f"img{i:03d}", 1, rng.uniform(0.5, 1.0), rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h))
    return pd.DataFrame(rows, columns=["image_id", "category", "conf", "x", "y", "w", "h"])


def time_extraction(selection: pd.DataFrame, image_dir: Path, out_dir: Path, size: int, draft: bool,
                    workers: int, band: bool) -> float:
    """Seconds to extract every crop into an empty `out_dir` on `workers` threads."""
    shutil.rmtree(out_dir, ignore_errors=True)
    start = time.perf_counter()
    result = extract_crops(selection, image_dir, out_dir, size=size, draft=draft, progress=False, workers=workers,
                           band=band)
    elapsed = time.perf_counter() - start
    if result.failed or len(result.index) != len(selection):
        raise SystemExit(f"benchmark broken: {result.summary()} for {len(selection)} boxes")
    return elapsed


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.int16)


def mean_abs_diff(dir_a: Path, dir_b: Path, names: list[str]) -> float:
    """Mean absolute difference (0..255 scale) over every pixel of same-named crops in two folders."""
    return float(np.mean([np.abs(_pixels(dir_a / n) - _pixels(dir_b / n)).mean() for n in names]))


def scales_used(selection: pd.DataFrame, image_dir: Path, size: int) -> Counter:
    """How many images `extract_crops` decodes at each JPEG reduction (1 = full size)."""
    scales = Counter()
    for image_id, box in zip(selection["image_id"], selection[["x", "y", "w", "h"]].to_numpy(), strict=True):
        with Image.open(image_dir / f"{image_id}.jpg") as img:
            scales[draft_scale(img.size, [box], size)] += 1
    return scales


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "pillow": importlib.metadata.version("pillow"),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine shares its cores
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/crops.json"))
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="iwc-bench-crops-") as tmp:
        tmp = Path(tmp)
        (tmp / "originals").mkdir()
        selection = select_boxes(make_originals(tmp / "originals", args.images, args.seed), rule="best")
        cores = os.cpu_count() or 1
        modes = {"parallel": (True, cores, True), "draft": (True, 1, True), "pil_draft": (True, 1, False),
                 "full": (False, 1, False)}  # name: (draft, workers, band)
        best = {}
        for mode, settings in modes.items():  # warm-up: page cache, imports, allocator
            time_extraction(selection, tmp / "originals", tmp / mode, args.size, *settings)
        for mode, settings in modes.items():
            best[mode] = min(time_extraction(selection, tmp / "originals", tmp / mode, args.size, *settings)
                             for _ in range(args.repeats))
        names = [f"{c}.jpg" for c in selection["crop_id"]]
        diff = mean_abs_diff(tmp / "draft", tmp / "full", names)
        same = all((tmp / "draft" / n).read_bytes() == (tmp / "pil_draft" / n).read_bytes() for n in names)
        scales = scales_used(selection, tmp / "originals", args.size)

    n = len(selection)
    report = {
        "machine": machine(),
        "settings": {
            "images": n,
            "image_sizes": [list(s) for s in SIZES],
            "box_width_fraction": list(BOX_WIDTH),
            "crop_size": args.size,
            "repeats": args.repeats,
            "seed": args.seed,
            "draft_scales": {str(s): scales[s] for s in sorted(scales)},
        },
        "decoder": jpeg_region.decoder(),
        "workers": cores,
        "parallel_draft_images_per_s": round(n / best["parallel"], 1),
        "draft_images_per_s": round(n / best["draft"], 1),
        "pil_draft_images_per_s": round(n / best["pil_draft"], 1),
        "full_decode_images_per_s": round(n / best["full"], 1),
        "speedup": round(best["full"] / best["parallel"], 2),  # parallel draft vs single-thread full decode
        "draft_speedup": round(best["full"] / best["draft"], 2),  # both on one thread
        "pil_draft_speedup": round(best["full"] / best["pil_draft"], 2),  # draft without band decoding
        "band_crops_equal_pil_crops": same,
        "mean_abs_diff": round(diff, 3),
    }
    write_json(args.out, report)
    print(f"{'mode':<28}{'images/s':>10}")
    print(f"{f'draft, {cores} threads':<28}{report['parallel_draft_images_per_s']:>10}")
    print(f"{'draft, 1 thread':<28}{report['draft_images_per_s']:>10}")
    print(f"{'draft through PIL, 1 thread':<28}{report['pil_draft_images_per_s']:>10}")
    print(f"{'full decode, 1 thread':<28}{report['full_decode_images_per_s']:>10}")
    print(f"decoder: {report['decoder']}; its crops equal PIL's: {same}")
    print(f"speedup {report['speedup']}x (one thread {report['draft_speedup']}x), "
          f"mean |draft - full| = {report['mean_abs_diff']} (0..255)")
    print(f"draft scales used: {report['settings']['draft_scales']}  ->  {args.out}")


if __name__ == "__main__":
    main()
