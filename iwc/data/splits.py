"""Validation splits of the train images: a boolean mask, True = validation.

"location" holds out whole camera locations, as the test set does (its locations are unseen in train),
so its score predicts the leaderboard. "category" is the reference's random share of each category.
Both are deterministic given the seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iwc.errors import IwcError
from iwc.recipe import Split


def make_split(images: pd.DataFrame, split: Split, seed: int) -> np.ndarray:
    """The recipe's split of `images` -> bool array aligned with its rows (True = validation)."""
    if split.method == "location":
        return location_split(images, split.val_fraction, seed)
    if split.method == "category":
        return category_split(images, split.val_fraction, seed)
    raise IwcError(f"split method {split.method!r} is not 'location' or 'category': set split.method")


def location_split(images: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Hold out whole locations, taken in a seeded random order until `val_fraction` of the IMAGES is
    reached (the last one taken may overshoot); at least one location stays on each side."""
    _check_fraction(val_fraction)
    locations, per_image = np.unique(images["location"].to_numpy(), return_inverse=True)
    if len(locations) < 2:
        raise IwcError(f"a location split needs at least 2 locations, the images have {len(locations)}: "
                       "use split.method = 'category'")
    counts = np.bincount(per_image, minlength=len(locations))
    order = np.random.default_rng(seed).permutation(len(locations))
    reached = np.cumsum(counts[order]) >= val_fraction * len(per_image)
    taken = int(np.clip(np.argmax(reached) + 1, 1, len(locations) - 1))
    held_out = np.zeros(len(locations), dtype=bool)
    held_out[order[:taken]] = True
    return held_out[per_image]


def category_split(images: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Random `val_fraction` (rounded half up) of each category's images, seeded."""
    _check_fraction(val_fraction)
    if "category_id" not in images.columns:
        raise IwcError("a category split needs labelled images (a `category_id` column): pass the train frame")
    categories, per_image = np.unique(images["category_id"].to_numpy(), return_inverse=True)
    counts = np.bincount(per_image, minlength=len(categories))
    draw = np.random.default_rng(seed).random(len(per_image))
    order = np.lexsort((draw, per_image))  # each category's images, in random order
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank < np.floor(val_fraction * counts + 0.5)[per_image]


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise IwcError(f"split.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
