"""A simulated MegaDetector: the boxes it reports for what a frame shows, in the competition file's format."""

from __future__ import annotations

import numpy as np

CROP_THRESHOLD = 0.3  # the demo and reference recipes' crops.threshold: which originals the crop stage reads


def detect(rng: np.random.Generator, box: tuple[float, float, float, float], visible: float, night: bool,
            category: str) -> list[dict]:
    """MegaDetector on one individual: usually a confident, slightly misplaced box; sometimes a miss."""
    miss = 0.6 if visible < 0.4 else (0.3 if night else 0.18)
    if category == "2":
        miss /= 2
    if rng.random() < miss:
        return [detection(category, box, rng.uniform(0.02, 0.29))] if rng.random() < 0.5 else []
    x, y, bw, bh = box
    dx0, dy0, dx1, dy1 = rng.normal(0, 0.06, 4)
    jittered = (x + dx0 * bw, y + dy0 * bh, bw * (1 + dx1 - dx0), bh * (1 + dy1 - dy0))
    return [detection(category, jittered, 0.3 + 0.7 * rng.beta(3.0, 1.2))]


def detection(category: str, box: tuple[float, float, float, float], conf: float) -> dict:
    """One detection as the competition file writes it: the box kept inside the frame (at least 0.005 wide and
    high), coordinates to 4 decimals, `conf` to 3 (at most 0.999)."""
    x, y, bw, bh = box
    x0, y0 = min(max(x, 0.0), 0.99), min(max(y, 0.0), 0.99)
    x1, y1 = min(max(x + bw, x0 + 0.005), 1.0), min(max(y + bh, y0 + 0.005), 1.0)
    return {"category": category, "bbox": [round(x0, 4), round(y0, 4), round(x1 - x0, 4), round(y1 - y0, 4)],
            "conf": round(min(float(conf), 0.999), 3)}


def has_crop(md_images: list[dict], image_id: str) -> bool:
    """Whether the crop stage cuts a crop of this image (an animal box above CROP_THRESHOLD)."""
    entry = next((m for m in md_images if m["id"] == image_id), None)
    return entry is not None and any(d["category"] == "1" and d["conf"] > CROP_THRESHOLD for d in entry["detections"])
