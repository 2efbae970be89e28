"""Time the aggregator's steps at the real test-set size on synthetic probabilities.

    python benchmarks/aggregate.py --out benchmarks/results/aggregate.json

Defaults mirror iWildCam 2020: 62,894 test images, a full model with 216 classes and a crop model with
7 fewer (sparse ids in 0..675), crops for ~75% of the images, sequences of 1-10 frames, a sample
submission 24 rows short. Each step is timed best-of-`repeats`; `total` is `combine` (blend, argmax,
majority vote).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from iwc.aggregate import align, blend, combine, mean_prob_vote, sequence_vote
from iwc.io import write_json
from iwc.probs import ProbTable
from iwc.recipe import REFERENCE, Sequences
from iwc.submission import assemble, validate


def make_inputs(images: int, full_classes: int, crop_classes: int, crop_share: float, max_seq: int,
                seed: int) -> dict[str, Any]:
    """Synthetic full/crop tables, sequence keys by image id, and a sample submission."""
    rng = np.random.default_rng(seed)
    ids = np.array([str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(images)])
    full_ids = np.sort(np.r_[0, rng.choice(np.arange(1, 676), full_classes - 1, replace=False)])
    crop_ids = np.sort(np.r_[0, rng.choice(full_ids[1:], crop_classes - 1, replace=False)])

    def probs(n: int, c: int) -> np.ndarray:
        p = rng.random((n, c), dtype=np.float32) ** 8  # peaked rows, like a trained model's
        return p / p.sum(axis=1, keepdims=True)

    crop_rows = rng.permutation(images)[: round(crop_share * images)]
    lengths = rng.integers(1, max_seq + 1, size=images)
    keys = rng.permutation(np.repeat(np.arange(images), lengths)[:images])  # sequences scattered in row order
    return {
        "full": ProbTable(ids, full_ids, probs(images, full_classes)),
        "crop": ProbTable(ids[crop_rows], crop_ids, probs(len(crop_rows), crop_classes)),
        "seq_keys": pd.Series(keys, index=ids),
        "sample": pd.DataFrame({"Id": rng.permutation(ids)[: images - 24], "Category": 0}),
    }


def best_times(steps: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each step over `repeats` rounds (steps interleaved, so a burst of load on a
    shared machine spoils one round of every step rather than every round of one)."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: round(s, 4) for name, s in best.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = make_inputs(args.images, args.full_classes, args.crop_classes, args.crop_share, args.max_seq,
                       args.seed)
    full, crop, seq_keys, sample = data["full"], data["crop"], data["seq_keys"], data["sample"]
    union = np.union1d(full.category_ids, crop.category_ids)
    tables, weights = {"full": full, "crop": crop}, REFERENCE.blend.weights
    blended = blend(tables, weights, full.image_ids)
    predicted = blended.argmax_category()
    keys = seq_keys.reindex(blended.image_ids).to_numpy()
    predictions = combine(tables, full.image_ids, seq_keys, REFERENCE)
    submission = assemble(sample, predictions)
    mean_recipe = replace(REFERENCE, sequences=Sequences(vote="mean_prob"))
    steps: dict[str, Callable[[], Any]] = {
        "align_crop": lambda: align(crop, union),
        "blend": lambda: blend(tables, weights, full.image_ids),
        "argmax": blended.argmax_category,
        "sequence_vote": lambda: sequence_vote(predicted, keys),
        "mean_prob_vote": lambda: mean_prob_vote(blended, keys),
        "total": lambda: combine(tables, full.image_ids, seq_keys, REFERENCE),
        "total_mean_prob": lambda: combine(tables, full.image_ids, seq_keys, mean_recipe),
        "assemble": lambda: assemble(sample, predictions),
        "validate": lambda: validate(submission, sample, union),
    }
    seconds = best_times(steps, args.repeats)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings["sequences"] = int(seq_keys.nunique())
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    return {"machine": machine, "settings": settings, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/aggregate.json")
    parser.add_argument("--images", type=int, default=62_894)
    parser.add_argument("--full-classes", type=int, default=216)
    parser.add_argument("--crop-classes", type=int, default=209)
    parser.add_argument("--crop-share", type=float, default=0.75)
    parser.add_argument("--max-seq", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args)
    write_json(args.out, result)
    print(f"{'step':<16} {'seconds':>8}")
    for name, s in result["seconds"].items():
        print(f"{name:<16} {s:>8.4f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
