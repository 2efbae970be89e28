"""A small `fit` run for tests/test_distributed.py: one process, or each process under torchrun.

`python tests/distributed_worker.py OUT [--seed S] [--stop-after K]` trains the demo recipe's full model,
shrunk (timm's test_resnet, its smallest ResNet, BatchNorm included, at 32 px, 1 + 2 epochs), on synthetic
images whose class is the colour of a square placed at random. Each process writes `OUT/rank<R>.json` (its
history and a digest of its weights); `--stop-after K` makes every process fail right after the K-th epoch is
saved, as an interrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from iwc.recipe import DEMO
from iwc.train import distributed
from iwc.train.fit import FitResult, fit
from iwc.train.model import create_model

CLASSES = 4
COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 60, 230], [230, 220, 40]], dtype=np.int16)
M = dataclasses.replace(DEMO.models["full"], arch="test_resnet", image_size=32, cache_size=36, batch_size=16,
                        stages=(
    dataclasses.replace(DEMO.models["full"].stages[0], epochs=1),
    dataclasses.replace(DEMO.models["full"].stages[1], epochs=2),
))


class Interrupted(RuntimeError):
    pass


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 (36, 36, 3) noise images, each with a 20 px square in its class's colour; and the labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = rng.integers(0, 120, (n, 36, 36, 3)).astype(np.int16)
    for i, (top, left) in enumerate(rng.integers(0, 16, (n, 2))):
        x[i, top:top + 20, left:left + 20] = COLOURS[labels[i]] + rng.integers(-20, 20, 3)
    return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.int64)


TRAIN, VAL = images(212, 1), images(81, 2)  # 13 batches of 16 + one of 4 (2 per process: BatchNorm needs 2)


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(out: Path, seed: int = 0, stop_after: int | None = None) -> tuple[torch.nn.Module, FitResult]:
    """`fit` as a model stage calls it (same initial weights on every process); writes `rank<R>.json`."""
    torch.manual_seed(seed)
    model = create_model(M, CLASSES)
    epochs = []

    def on_epoch_end(record: dict) -> None:
        epochs.append(record)
        if stop_after is not None and len(epochs) == stop_after:
            raise Interrupted(f"stopped after epoch {len(epochs)} (a test of resuming)")

    result = fit(model, *TRAIN, *VAL, m=M, seed=seed, out_dir=out, device="cpu", progress=False,
                 on_epoch_end=on_epoch_end)
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps({
        "world": distributed.world_size(), "history": result.history, "weights": digest(model)}))
    return model, result


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", type=int)
    args = p.parse_args()
    torch.set_num_threads(1)
    try:
        train(args.out, args.seed, args.stop_after)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(3)
