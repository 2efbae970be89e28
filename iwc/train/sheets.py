"""A model stage's image sheets: its training inputs as the network sees them (fastai's `show_batch`) and its
validation images with the highest loss (fastai's `plot_top_losses`).

In: rows of the stage's uint8 image cache ((N, S, S, 3), anything with `len()` and index-array reads), their
category ids, the category names, the model's augmentation and its validation probabilities. Out: one PNG per
sheet, a fixed grid of at most `GRID` x `GRID` images whatever the counts (under 1,000 px a side), with stable
bytes (`iwc.io.save_png`); `top_losses` also returns its rows, for the stage's manifest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from iwc.io import save_png
from iwc.probs import ProbTable
from iwc.train.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment

GRID = 4  # images per side of a sheet: at most 16
_CELL_IN = 1.9  # inches per image, wide; its height adds the title's lines
_DPI = 100
_NAME_CHARS = 22  # a longer category name is cut, so titles stay inside their cell
_MIN_P = 1e-12  # the loss of a zero probability: -log(1e-12), as training's validation reports it


def show_batch(images: Any, category_ids: np.ndarray, names: Mapping[int, str], augment: BatchAugment,
               seed: int, path: Path) -> np.ndarray:
    """Up to `GRID`**2 training images drawn with `seed`, through `augment` (the stage's own training
    augmentation, its own generator seeded by `seed`), shown denormalised, each titled with its category.
    Returns what it shows: float (B, out, out, 3) in [0, 1]."""
    pick = _pick(len(images), GRID * GRID, seed)
    shown: list[np.ndarray] = []
    if len(pick):
        x = torch.from_numpy(np.asarray(images[pick]))
        shown = list(denormalise(augment(x, torch.Generator().manual_seed(seed))))
    titles = [label(names, c) for c in np.asarray(category_ids)[pick]]
    _sheet(shown, titles, ["black"] * len(shown), path,
           f"{len(shown)} training inputs as the network sees them: {augment.out_size} px after augmentation "
           "(mixup, where a stage uses it, blends them further)")
    return np.stack(shown) if shown else np.zeros((0, augment.out_size, augment.out_size, 3), np.float32)


def top_losses(images: Any, truth: np.ndarray, table: ProbTable, names: Mapping[int, str], path: Path,
               noun: str = "images") -> list[dict[str, Any]]:
    """The `GRID`**2 rows of `table` (validation probabilities; `images` and `truth`, category ids, aligned
    with its rows) with the highest loss, -log p(true category), ties broken by row id, as thumbnails titled
    predicted / true / loss / probabilities; rows whose category the model never trained on are left out
    (counted in the sheet's title). Returns those rows, highest loss first."""
    truth = np.asarray(truth, dtype=np.int64)
    column = pd.Index(table.category_ids).get_indexer(truth)
    known = column >= 0
    rows = np.arange(len(table))
    p_true = np.where(known, table.probs[rows, np.maximum(column, 0)], 0.0) if len(table) else np.zeros(0)
    loss = -np.log(np.maximum(p_true.astype(np.float64), _MIN_P))
    order = np.lexsort((table.image_ids, -loss))
    order = order[known[order]][:GRID * GRID]
    predicted, p_predicted = table.argmax_category(), table.probs.max(1, initial=0.0)
    top = [{"id": str(table.image_ids[i]), "true": int(truth[i]), "predicted": int(predicted[i]),
            "loss": round(float(loss[i]), 4), "p_true": round(float(p_true[i]), 4)} for i in order]
    titles = [f"pred {label(names, r['predicted'])} {p_predicted[i]:.2f}\ntrue {label(names, r['true'])} "
              f"{r['p_true']:.2f}\nloss {r['loss']:.2f}" for i, r in zip(order, top, strict=True)]
    colors = ["darkred" if r["predicted"] != r["true"] else "darkgreen" for r in top]
    unknown = int((~known).sum())
    left_out = f"; {unknown} of categories it never trained on left out" if unknown else ""
    shown = list(np.asarray(images[order])) if len(order) else []
    _sheet(shown, titles, colors, path,
           f"the {len(top)} validation {noun} with the highest loss, of {len(table)}{left_out} "
           "(predicted, true: name (id) probability)")
    return top


def denormalise(x: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised float (B, 3, H, W) -> float (B, H, W, 3) in [0, 1], for display."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).contiguous().numpy()


def label(names: Mapping[int, str], category: int) -> str:
    """'name (id)', the name cut to fit a thumbnail's title."""
    name = names.get(int(category), "?")
    return f"{name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + '…'} ({int(category)})"


def _pick(n: int, k: int, seed: int) -> np.ndarray:
    """`min(n, k)` distinct indexes of range(n) drawn with `seed`, increasing."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, k), replace=False))


def _sheet(images: list[np.ndarray], titles: list[str], colors: list[str], path: Path, title: str) -> None:
    """A `GRID`-wide grid of `images` (HxWx3, uint8 or float in [0, 1]) with their titles; a fixed size per row."""
    rows = max(1, math.ceil(len(images) / GRID))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig = Figure(figsize=(GRID * _CELL_IN, rows * (_CELL_IN + 0.15 * lines) + 0.4))
    axes = fig.subplots(rows, GRID, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, text, color in zip(axes, images, titles, colors, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(text, fontsize=7, color=color)
    if not images:
        axes[0].text(0, 0.5, "no images", fontsize=9)
    fig.suptitle(title, fontsize=8)
    save_png(fig, path, dpi=_DPI)
