"""Prediction: softmax probabilities over a uint8 image cache, with fastai-v1 style test-time augmentation.

`predict_tta` returns a `ProbTable` keyed by image id x ORIGINAL category id:
final = beta * p(plain) + (1 - beta) * mean over `views` of p(augmented view), where view i zooms by
`tta.scale` towards image corner i % 4, mirrored for i % 8 >= 4, with training's rotation, warp and
lighting drawn from a generator seeded by `seed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from iwc.data.categories import CategoryMap
from iwc.errors import IwcError
from iwc.probs import ProbTable
from iwc.recipe import Model
from iwc.train.augment import BatchAugment, plain
from iwc.train.model import autocast, place


class TTAViews(Protocol):
    """What makes TTA views: `BatchAugment` or a stand-in with the same method."""

    def tta_view(self, x: torch.Tensor, index: int, scale: float,
                 generator: torch.Generator | None = None) -> torch.Tensor: ...


def predict_tta(model: nn.Module, images: np.ndarray, image_ids: np.ndarray, category_map: CategoryMap,
                m: Model, device: torch.device | str, seed: int, progress: bool = True,
                augment: TTAViews | None = None) -> ProbTable:
    """Probabilities of `model` for uint8 `images` (N, S, S, 3), rows keyed by `image_ids`, columns by
    `category_map.category_ids` (the original id of each output index). `augment` makes the TTA views
    (default: `BatchAugment(m.augment, m.image_size)`)."""
    device = torch.device(device)
    category_ids = np.asarray(category_map.category_ids, dtype=np.int64)
    if len(image_ids) != len(images):
        raise IwcError(f"predict: {len(image_ids)} image ids for {len(images)} images; rebuild the image cache")
    if model.num_classes != len(category_ids):
        raise IwcError(f"predict: the model has {model.num_classes} outputs but the category map "
                       f"{len(category_ids)} categories; use the category map saved with the model")
    tta = m.tta
    views = augment if augment is not None else BatchAugment(m.augment, m.image_size)
    generator = torch.Generator().manual_seed(seed)

    def score(x: torch.Tensor) -> torch.Tensor:
        p = softmax(model, plain(x, m.image_size), device)
        if tta.views == 0:
            return p
        augmented = sum(softmax(model, views.tta_view(x, i, tta.scale, generator), device)
                        for i in range(tta.views))
        return tta.beta * p + (1 - tta.beta) * augmented / tta.views

    probs = batched_probs(model, images, score, len(category_ids), m.batch_size, device, progress, "predict")
    return ProbTable(image_ids, category_ids, probs)


def plain_probs(model: nn.Module, images: np.ndarray, m: Model, device: torch.device,
                progress: bool = False) -> np.ndarray:
    """(N, C) float32 probabilities of the un-augmented images (the validation path)."""
    return batched_probs(model, images, lambda x: softmax(model, plain(x, m.image_size), device),
                         model.num_classes, m.batch_size, device, progress, "validate")


def softmax(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 class probabilities of one input batch."""
    with autocast(device):
        logits = model(x)
    return logits.float().softmax(1)


def batched_probs(model: nn.Module, images: np.ndarray, score: Callable[[torch.Tensor], torch.Tensor],
                  num_classes: int, batch_size: int, device: torch.device, progress: bool,
                  desc: str) -> np.ndarray:
    """Run `score` (uint8 batch on `device` -> (B, C) probabilities) over `images` in order, in eval mode
    without gradients; returns (N, C) float32."""
    place(model, device).eval()
    out = np.empty((len(images), num_classes), dtype=np.float32)
    with torch.no_grad(), tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            x = to_device(np.array(images[start:start + batch_size]), device)
            out[start:start + len(x)] = score(x).cpu().numpy()
            bar.update(len(x))
    return out


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array (in memory, not a memmap view) as a tensor on `device`; on CUDA through pinned memory,
    copied asynchronously."""
    t = torch.from_numpy(array)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
