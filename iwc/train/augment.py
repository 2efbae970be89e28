"""Whole-batch augmentation on the device: uint8 images in, normalized float32 channels-last out.

`BatchAugment` draws independent random parameters for every image of a batch (on the CPU, so a seeded
generator gives the same parameters on any device), composes rotation, zoom, flip and perspective warp
into one homography per image, and resamples the batch once with `grid_sample`, going from the cache
size S to the network size in the same step. Brightness and contrast follow fastai v1: both act in logit
space, so pixel values stay inside (0, 1).

Coordinates are `grid_sample`'s normalized [-1, 1] (align_corners=False): each homography maps an
output pixel to the source point it is read from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from iwc.errors import IwcError
from iwc.recipe import Augment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PADDING_MODES = ("reflection", "zeros", "border")
TTA_CORNERS = 8  # distinct TTA views: 4 zoom anchors (the image corners) x flip, as fastai v1
_EPS = 1e-4  # keeps logit finite at pure black / white


@dataclass(frozen=True)
class AugParams:
    """Per-image parameters of one batch; every field is a float64 CPU tensor of shape (B,) or (B, 4)."""

    angle: torch.Tensor  # rotation, radians
    zoom: torch.Tensor  # >= 1 zooms in (reads a smaller part of the source)
    center: torch.Tensor  # (B, 2) zoom anchor in [0, 1]: 0 = left/top edge, 1 = right/bottom edge
    flip: torch.Tensor  # 1.0 = mirror horizontally
    warp: torch.Tensor  # (B, 4) edge stretches: top, bottom, left, right
    brightness: torch.Tensor  # shift added in logit space
    contrast: torch.Tensor  # factor applied in logit space

    @classmethod
    def identity(cls, batch: int) -> AugParams:
        """Parameters that leave every image as `plain` would produce it."""
        zeros = torch.zeros(batch, dtype=torch.float64)
        return cls(zeros, zeros + 1, torch.full((batch, 2), 0.5, dtype=torch.float64), zeros,
                   torch.zeros(batch, 4, dtype=torch.float64), zeros, zeros + 1)


class BatchAugment:
    """Random training augmentation of whole batches, parameters independent per image."""

    def __init__(self, aug: Augment, out_size: int) -> None:
        if aug.padding not in PADDING_MODES:
            raise IwcError(f"augment.padding {aug.padding!r} is not one of {PADDING_MODES}; fix the recipe")
        if aug.zoom_max < 1:
            raise IwcError(f"augment.zoom_max {aug.zoom_max} must be >= 1 (1 = no zoom); fix the recipe")
        if not (0 <= aug.brightness < 1 and 0 <= aug.contrast < 1):
            raise IwcError("augment.brightness and augment.contrast must lie in [0, 1); fix the recipe")
        self.aug = aug
        self.out_size = out_size

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, S, S, 3) on any device -> augmented float32 (B, 3, out, out), normalized."""
        return self.apply(x, self.sample(x.shape[0], generator))

    def sample(self, batch: int, generator: torch.Generator | None = None) -> AugParams:
        """Draw parameters for `batch` images from a CPU generator (None: torch's global generator)."""
        a = self.aug
        u = torch.rand(batch, 11, generator=generator, dtype=torch.float64)
        # fastai v1 `brightness`: change ~ U(0.5 - b/2, 0.5 + b/2), applied as logit(change).
        change = 0.5 + a.brightness * (u[:, 9] - 0.5)
        # fastai v1 `contrast`: log-uniform factor in [1 - c, 1 / (1 - c)].
        log_c = -math.log1p(-a.contrast)
        return AugParams(
            angle=torch.deg2rad(a.rotate_deg * (2 * u[:, 0] - 1)),
            zoom=1 + (a.zoom_max - 1) * u[:, 1],
            center=u[:, 2:4],
            flip=(u[:, 4] < 0.5).double() if a.flip else torch.zeros(batch, dtype=torch.float64),
            warp=a.warp * (2 * u[:, 5:9] - 1),
            brightness=torch.log(change / (1 - change)),
            contrast=torch.exp(log_c * (2 * u[:, 10] - 1)),
        )

    def apply(self, x: torch.Tensor, p: AugParams) -> torch.Tensor:
        """Augment `x` (uint8 (B, S, S, 3)) with the given parameters."""
        grid = _sampling_grid(homographies(p).to(x.device, torch.float32), self.out_size)
        img = F.grid_sample(_to_float(x), grid, mode="bilinear", padding_mode=self.aug.padding,
                            align_corners=False)
        img = _lighting(img, p.brightness.to(x.device, torch.float32), p.contrast.to(x.device, torch.float32))
        return _normalize(img)

    def tta_view(self, x: torch.Tensor, index: int, scale: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Test-time view number `index` of uint8 `x`, as fastai v1 TTA builds its 8 views.

        Zoom `scale` anchored at image corner `index % 4`, mirrored when `index % 8 >= 4`; rotation,
        warp and lighting random as in training.
        """
        corner, b = index % TTA_CORNERS, x.shape[0]
        p = self.sample(b, generator)
        anchor = torch.tensor([corner & 1, (corner >> 1) & 1], dtype=torch.float64)
        p = replace(p, zoom=torch.full((b,), float(scale), dtype=torch.float64),
                    center=anchor.expand(b, 2).clone(),
                    flip=torch.full((b,), float(corner >= 4), dtype=torch.float64))
        return self.apply(x, p)


def plain(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float32 (B, 3, out, out) resized and normalized, channels-last (eval path).

    Bilinear without antialiasing: the same resampling the training grid applies, so train and eval
    inputs look alike.
    """
    img = F.interpolate(_to_float(x), size=(out_size, out_size), mode="bilinear", align_corners=False)
    return _normalize(img)


def homographies(p: AugParams) -> torch.Tensor:
    """(B, 3, 3) float64: output coordinate -> source coordinate, = zoom . rotate . warp . flip."""
    b = p.angle.shape[0]
    flip = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    flip[:, 0, 0] = 1 - 2 * p.flip
    cos, sin = torch.cos(p.angle), torch.sin(p.angle)
    rotate = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 1, 0], rotate[:, 1, 1] = cos, -sin, sin, cos
    # Zoom reads a 1/zoom share of the source, its window slid by `center` so it stays inside the image.
    zoom = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    zoom[:, 0, 0] = zoom[:, 1, 1] = 1 / p.zoom
    zoom[:, :2, 2] = (1 - 1 / p.zoom)[:, None] * (2 * p.center - 1)
    return zoom @ rotate @ _warp_homographies(p.warp) @ flip


_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))  # top-left, top-right, bottom-left, -right


def _warp_homographies(warp: torch.Tensor) -> torch.Tensor:
    """(B, 4) edge stretches -> (B, 3, 3) perspective maps taking the square's corners to a quadrilateral.

    A positive stretch widens the span of the source read along that edge, so the content there shrinks.
    """
    top, bottom, left, right = warp.unbind(1)
    span_x = torch.stack([1 + top, 1 + top, 1 + bottom, 1 + bottom], 1)
    span_y = torch.stack([1 + left, 1 + right, 1 + left, 1 + right], 1)
    corners = torch.tensor(_CORNERS, dtype=torch.float64)
    targets = corners[None] * torch.stack([span_x, span_y], 2)  # (B, 4, 2)
    # Solve for the 8 unknowns h (h33 = 1) from u = (h11 x + h12 y + h13) / (h31 x + h32 y + 1), same for v.
    rows = []
    for k, (cx, cy) in enumerate(_CORNERS):
        u, v = targets[:, k, 0], targets[:, k, 1]
        one, zero = torch.ones_like(u), torch.zeros_like(u)
        rows.append(torch.stack([one * cx, one * cy, one, zero, zero, zero, -u * cx, -u * cy], 1))
        rows.append(torch.stack([zero, zero, zero, one * cx, one * cy, one, -v * cx, -v * cy], 1))
    system = torch.stack(rows, 1)  # (B, 8, 8)
    rhs = targets.reshape(-1, 8)  # u0, v0, u1, v1, ... matches the row order
    h = torch.linalg.solve(system, rhs)
    return torch.cat([h, torch.ones_like(h[:, :1])], 1).reshape(-1, 3, 3)


def _sampling_grid(h: torch.Tensor, out_size: int) -> torch.Tensor:
    """(B, 3, 3) homographies -> `grid_sample` grid (B, out, out, 2) at pixel centres."""
    t = (torch.arange(out_size, device=h.device, dtype=h.dtype) * 2 + 1) / out_size - 1
    # Homogeneous source point of output pixel (x_j, y_i) = h[:, :, 0] x_j + h[:, :, 1] y_i + h[:, :, 2],
    # built as (B, 3, out, out) planes by broadcasting (cheaper than a matmul with K = 3).
    pts = h[:, :, 0, None, None] * t.view(1, 1, 1, -1) + (h[:, :, 1, None, None] * t.view(1, 1, -1, 1)
                                                          + h[:, :, 2, None, None])
    return (pts[:, :2] / pts[:, 2:]).permute(0, 2, 3, 1)


def _to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S) in [0, 1] (a channels-last view, no extra copy)."""
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise IwcError(f"expected uint8 images of shape (B, S, S, 3), got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255)


def _lighting(img: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """fastai v1 brightness + contrast, in place: sigmoid(logit(x) * contrast + brightness), per image."""
    img.logit_(eps=_EPS).mul_(contrast[:, None, None, None]).add_(brightness[:, None, None, None])
    return img.sigmoid_()


def _normalize(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] float (B, 3, H, W), consumed -> ImageNet-normalized, channels-last.

    The arithmetic runs on the NCHW layout, where the per-channel constants broadcast over whole planes;
    on channels-last they would broadcast over runs of 3 values, which is slower.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=img.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=img.device).view(1, 3, 1, 1)
    img = img.contiguous().clamp_(0, 1).sub_(mean).div_(std)
    return img.contiguous(memory_format=torch.channels_last)
