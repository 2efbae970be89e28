"""The per-sample input pipeline, kept only as the baseline `benchmarks/pipeline.py` measures against.

Each sample is decoded from its JPEG with PIL and augmented on its own by torchvision transforms that
match `BatchAugment` (rotation, zoom, perspective warp, brightness/contrast, flip), then resized and
normalized; a DataLoader with worker processes batches them. Training never uses this path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from iwc.data.decode import opened, to_rgb
from iwc.recipe import Augment
from iwc.train.augment import IMAGENET_MEAN, IMAGENET_STD


def baseline_transform(aug: Augment, out_size: int) -> transforms.Compose:
    """PIL image -> float32 (3, out, out) tensor, augmented like `BatchAugment(aug, out_size)`."""
    steps = [
        transforms.RandomAffine(degrees=aug.rotate_deg, scale=(1.0, aug.zoom_max)),
        transforms.RandomPerspective(distortion_scale=aug.warp, p=1.0),
        transforms.ColorJitter(brightness=aug.brightness, contrast=aug.contrast),
    ]
    if aug.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [
        transforms.Resize((out_size, out_size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    return transforms.Compose(steps)


class JpegDataset(Dataset):
    """Item i: the image at `paths[i]`, decoded with PIL and passed through `transform`."""

    def __init__(self, paths: Sequence[str | os.PathLike], transform: transforms.Compose) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with opened(self.paths[i]) as im:  # a file that does not decode stops the benchmark (`Unreadable`)
            return self.transform(to_rgb(im))


def make_loader(paths: Sequence[str | os.PathLike], out_size: int, batch_size: int, workers: int = 2,
                aug: Augment | None = None) -> DataLoader:
    """Shuffled DataLoader of augmented float32 (B, 3, out, out) batches, `workers` decode processes."""
    dataset = JpegDataset(paths, baseline_transform(aug or Augment(), out_size))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0)
