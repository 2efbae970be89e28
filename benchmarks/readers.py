"""Time the competition readers at the real size on synthetic files (the checks of every field included).

    python benchmarks/readers.py --out benchmarks/results/readers.json

Defaults mirror iWildCam 2020: 217,959 train and 62,894 test images (uuid ids), one annotation per train
image, 267 sparse categories, a MegaDetector entry per image with a long tail of detections (geometric,
mean `--boxes`, at most 100), a sample submission 24 rows short. Each reader is timed best-of-`repeats`;
`id_check_s` is the plain-file-name test of every train and test id alone. Peak RSS is the process's.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iwc.data import competition as comp
from iwc.io import write_json


def write_files(root: Path, train: int, test: int, boxes: float, seed: int) -> None:
    """The four competition files, real layout and size, under `root`."""
    rng = np.random.default_rng(seed)
    categories = np.sort(np.r_[0, rng.choice(np.arange(1, 676), 266, replace=False)])
    ids = [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(train + test)]

    def image(i: int) -> dict[str, Any]:
        return {"id": ids[i], "file_name": f"{ids[i]}.jpg", "location": int(i % 441), "seq_id": f"s{i // 3}",
                "seq_num_frames": 3, "frame_num": i % 3, "datetime": "2013-08-02 21:44:00.000",
                "width": 2048, "height": 1536}

    cats = [{"id": int(c), "name": f"c{c}", "count": 1} for c in categories]
    labels = rng.choice(categories, train)
    (root / comp.TRAIN_JSON).write_text(json.dumps({
        "info": {}, "images": [image(i) for i in range(train)], "categories": cats,
        "annotations": [{"id": f"a{i}", "image_id": ids[i], "category_id": int(labels[i]), "count": 1}
                        for i in range(train)]}))
    (root / comp.TEST_JSON).write_text(json.dumps({"info": {}, "categories": cats,
                                                   "images": [image(i) for i in range(train, train + test)]}))
    counts = np.minimum(rng.geometric(1 / boxes, train + test) - 1, 100)

    def detection() -> dict[str, Any]:
        x, y, w, h = (round(float(v), 4) for v in rng.uniform(0, 0.5, 4))
        return {"category": "1", "bbox": [x, y, w, h], "conf": round(float(rng.random()), 3)}

    (root / comp.MD_JSON).write_text(json.dumps({"info": {}, "images": [
        {"id": i, "max_detection_conf": 0.5, "detections": [detection() for _ in range(n)]}
        for i, n in zip(ids, counts, strict=True)]}))
    pd.DataFrame({"Id": ids[train:train + test - 24], "Category": 0}).to_csv(root / comp.SAMPLE_CSV, index=False)


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=217_959)
    parser.add_argument("--test", type=int, default=62_894)
    parser.add_argument("--boxes", type=float, default=5.0, help="mean detections per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_files(root, args.train, args.test, args.boxes, args.seed)
        train, _ = comp.read_train(root / comp.TRAIN_JSON)
        test, _ = comp.read_test(root / comp.TEST_JSON)
        ids = pd.concat([train["id"], test["id"]]).astype(object)
        result = {
            "read_train_s": best_of(args.repeats, lambda: comp.read_train(root / comp.TRAIN_JSON)),
            "read_test_s": best_of(args.repeats, lambda: comp.read_test(root / comp.TEST_JSON)),
            "read_megadetector_s": best_of(args.repeats, lambda: comp.read_megadetector(root / comp.MD_JSON)),
            "read_sample_s": best_of(args.repeats, lambda: comp.read_sample_submission(root / comp.SAMPLE_CSV)),
            "load_s": best_of(1, lambda: comp.Competition.load(root)),
            "load_with_detections_s": best_of(1, lambda: comp.Competition.load(root, detections=True)),
            "id_check_s": best_of(args.repeats, lambda: comp.NAME.valid(ids)),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        }
    result.update(images={"train": args.train, "test": args.test}, boxes_mean=args.boxes,
                  machine=platform.platform())
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
