"""An lr range test (fastai's `lr_find`): train a few hundred batches with the learning rate growing
exponentially from `start` to `end`, record the loss, stop when it diverges, and suggest a rate.

In: a model, uint8 training images (N, S, S, 3) and class indexes, the recipe's model (its first stage says
frozen or not, mixup and weight decay; its augmentation and label smoothing are used as training uses them).
Out: `LrFind` (rates, losses, the smoothed losses, the suggestion: the steepest descent of the smoothed loss,
as fastai v1 marks it) and `plot_lr_find` (loss against rate, log scale, the suggestion
marked). The model's weights change: train a fresh one afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from iwc.errors import IwcError
from iwc.io import save_png
from iwc.recipe import Model
from iwc.train.augment import BatchAugment
from iwc.train.fit import TrainRandom, epoch_batches, mixup, soft_cross_entropy, soft_targets
from iwc.train.model import amp_dtype, autocast, place, set_frozen
from iwc.train.predict import to_device

SMOOTHING = 0.98  # fastai's exponential moving average of the loss (debiased)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum (fastai's rule)
_MIN_BATCHES = 10  # batches before the divergence rule applies
SKIP_START, SKIP_END = 10, 5  # batches the suggestion leaves out at each end (fastai v1's defaults)


@dataclass(frozen=True)
class LrFind:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float  # steepest descent of the smoothed loss
    min_loss_lr: float  # where the smoothed loss is lowest (fastai v1's other hint: a tenth of it)

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed, "suggestion": self.suggestion,
                "min_loss_lr": self.min_loss_lr}


def lr_range_test(model: nn.Module, images: np.ndarray, labels: np.ndarray, m: Model, seed: int,
                  device: torch.device, batches: int = 200, start: float = 1e-7, end: float = 10.0,
                  progress: bool = True) -> LrFind:
    """Train `model` on `batches` batches of `m.batch_size` (several passes over `images` when it has fewer)
    with every layer group at one rate, growing from `start` to `end`; see the module docstring."""
    if batches < 2 or not 0 < start < end:
        raise IwcError(f"lr-find: needs at least 2 batches and 0 < start < end (got {batches}, {start}, {end})")
    if not m.stages:
        raise IwcError("lr-find: the model has no training stages in the recipe; add one")
    stage = m.stages[0]
    rng = TrainRandom(seed)
    torch.manual_seed(rng.seed)
    set_frozen(model, stage.frozen)
    place(model, device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=start,
                                  betas=(0.9, 0.99), weight_decay=stage.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)
    augment = BatchAugment(m.augment, m.image_size)
    rates = start * (end / start) ** (np.arange(batches) / (batches - 1))
    order: list[np.ndarray] = []
    lrs, losses, smoothed, average = [], [], [], 0.0
    for i, lr in enumerate(tqdm(rates, desc="lr-find", unit="batch", disable=not progress)):
        order = order or epoch_batches(len(images), m.batch_size, rng.order)
        idx = order.pop(0)
        x, y = to_device(np.asarray(images[idx]), device), to_device(np.asarray(labels[idx]), device)
        inputs, targets = augment(x, rng.generator), soft_targets(y, model.num_classes, m.label_smoothing)
        if stage.mixup > 0:
            inputs, targets = mixup(inputs, targets, stage.mixup, rng.numpy)
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        with autocast(device):
            logits = model(inputs)
        loss = soft_cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        value = float(loss.item())
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        lrs.append(float(lr))
        losses.append(value)
        smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
        if not np.isfinite(value) or (i >= _MIN_BATCHES and smoothed[-1] > DIVERGED * min(smoothed)):
            break
    return _suggest(lrs, losses, smoothed)


def _suggest(lrs: list[float], losses: list[float], smoothed: list[float]) -> LrFind:
    """fastai v1's suggestion: the steepest descent (most negative gradient, central differences against log lr)
    of the smoothed loss, leaving out the first `SKIP_START` and the last `SKIP_END` batches (where the moving
    average still settles, and where it diverges); too few batches for that: a tenth of the minimum's rate."""
    s = np.asarray(smoothed)
    lowest = int(np.nanargmin(s))
    kept = slice(SKIP_START, len(s) - SKIP_END)
    if len(s) - SKIP_END - SKIP_START < 3:
        return LrFind(lrs, losses, smoothed, lrs[lowest] / 10, lrs[lowest])
    steepest = SKIP_START + int(np.nanargmin(np.gradient(s[kept], np.log(lrs[kept]))))
    return LrFind(lrs, losses, smoothed, lrs[steepest], lrs[lowest])


def plot_lr_find(result: LrFind, path: Path, title: str) -> None:
    """Loss (raw, faint; smoothed) against the learning rate on a log axis, the suggestion marked."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="lightgrey", label="loss per batch")
    ax.plot(result.lrs, result.smoothed, label="smoothed")
    if result.suggestion in result.lrs:  # else a tenth of the minimum's rate: its line below says it
        at = result.lrs.index(result.suggestion)
        ax.plot([result.suggestion], [result.smoothed[at]], "o", color="red",
                label=f"suggestion {result.suggestion:.2e} (steepest descent)")
    ax.axvline(result.min_loss_lr / 10, color="grey", linestyle="--",
               label=f"minimum / 10: {result.min_loss_lr / 10:.2e}")
    ax.set_xscale("log")
    shown = np.asarray(result.smoothed[:result.lrs.index(result.min_loss_lr) + 1])  # up to the minimum: finite
    ax.set_ylim(shown.min() * 0.9, max(shown.max() * 1.5, shown.min() * 1.1 + 1e-3))
    ax.set(xlabel="learning rate", ylabel="loss", title=title)
    ax.legend(fontsize=8)
    save_png(fig, path, dpi=100)
