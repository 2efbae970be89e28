import dataclasses

import pytest
import torch

from iwc.errors import IwcError
from iwc.recipe import Augment
from iwc.train.augment import IMAGENET_MEAN, IMAGENET_STD, AugParams, BatchAugment, plain

STILL = Augment(rotate_deg=0.0, zoom_max=1.0, warp=0.0, brightness=0.0, contrast=0.0, flip=False)


def _images(batch: int = 4, size: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=g)


def _unnormalize(y: torch.Tensor) -> torch.Tensor:
    return y * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_output_shape_dtype_and_layout():
    x = _images(size=48)
    for y in (BatchAugment(Augment(), 32)(x, _gen(0)), plain(x, 32)):
        assert y.shape == (4, 3, 32, 32)
        assert y.dtype == torch.float32
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_each_image_gets_its_own_parameters():
    x = _images(batch=1).repeat(6, 1, 1, 1)
    y = BatchAugment(Augment(), 40)(x, _gen(0))
    for i in range(1, 6):
        assert (y[i] - y[0]).abs().mean() > 0.05


def test_same_seed_same_output_and_other_seed_differs():
    aug = BatchAugment(Augment(), 40)
    x = _images()
    assert torch.equal(aug(x, _gen(7)), aug(x, _gen(7)))
    assert not torch.equal(aug(x, _gen(7)), aug(x, _gen(8)))


def test_values_stay_in_range():
    x = _images()
    x[0] = 0
    x[1] = 255
    strong = Augment(brightness=0.9, contrast=0.9)
    for y in (BatchAugment(strong, 40)(x, _gen(1)), plain(x, 40)):
        rgb = _unnormalize(y)
        assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5


@pytest.mark.parametrize(("padding", "dark_expected"), [("reflection", False), ("border", False),
                                                        ("zeros", True)])
def test_padding_fills_corners(padding, dark_expected):
    x = torch.full((2, 48, 48, 3), 200, dtype=torch.uint8)
    aug = BatchAugment(dataclasses.replace(STILL, padding=padding), 48)
    turned_out = dataclasses.replace(AugParams.identity(2), angle=torch.deg2rad(torch.tensor([20.0, -20.0],
                                     dtype=torch.float64)), zoom=torch.tensor([0.8, 0.8], dtype=torch.float64))
    darkest = _unnormalize(aug.apply(x, turned_out)).min().item()
    assert (darkest < 0.05) == dark_expected
    if not dark_expected:
        assert darkest > 200 / 255 - 1e-3


def test_zero_magnitudes_reproduce_plain():
    x = _images(size=56)
    y = BatchAugment(STILL, 48)(x, _gen(3))
    assert (y - plain(x, 48)).abs().max() < 2e-3


def test_flip_mirrors_the_image():
    x = _images()
    flipped = dataclasses.replace(AugParams.identity(4), flip=torch.ones(4, dtype=torch.float64))
    y = BatchAugment(STILL, 48).apply(x, flipped)
    assert (y - plain(x, 48).flip(-1)).abs().max() < 2e-3


def test_tta_views_zoom_into_corners_and_mirror():
    x = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    x[:, :32, :32] = 255  # bright top-left quarter
    aug = BatchAugment(STILL, 32)
    top_left = _unnormalize(aug.tta_view(x, 0, scale=2.0))
    top_right = _unnormalize(aug.tta_view(x, 1, scale=2.0))
    assert top_left[:, :, 1:-1, 1:-1].min() > 0.99
    assert top_right[:, :, 1:-1, 1:-1].max() < 0.01
    assert torch.allclose(aug.tta_view(x, 4, 2.0), aug.tta_view(x, 0, 2.0).flip(-1), atol=1e-5)


def test_bad_inputs_raise_iwc_error():
    with pytest.raises(IwcError, match="padding"):
        BatchAugment(dataclasses.replace(STILL, padding="wrap"), 32)
    with pytest.raises(IwcError, match="zoom_max"):
        BatchAugment(dataclasses.replace(STILL, zoom_max=0.5), 32)
    with pytest.raises(IwcError, match="uint8"):
        BatchAugment(STILL, 32)(torch.zeros(1, 32, 32, 3))
