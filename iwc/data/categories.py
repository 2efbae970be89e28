"""Original sparse category ids <-> contiguous class indices (the columns of a model's output).

Saved as JSON `{"category_ids": [...]}` beside anything that stores class columns, so a column is
always read back as the category id it stands for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from iwc.errors import IwcError
from iwc.io import write_json

EMPTY = 0  # the competition's category id of empty frames (no animal)


class CategoryMap:
    """Class index i <-> `category_ids[i]`; the ids are original sparse ints, strictly increasing."""

    def __init__(self, category_ids: Iterable[int]) -> None:
        ids = np.asarray(list(category_ids), dtype=np.int64)
        if ids.ndim != 1 or np.any(np.diff(ids) <= 0):
            raise IwcError("category map: category ids must be unique and increasing "
                           "(build one from raw labels with CategoryMap.from_labels)")
        ids.setflags(write=False)
        self.category_ids = ids

    @classmethod
    def from_labels(cls, ids: Iterable[int]) -> CategoryMap:
        """The map of the distinct ids among `ids` (e.g. the train frame's `category_id` column)."""
        return cls(np.unique(np.asarray(list(ids), dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.category_ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategoryMap) and np.array_equal(self.category_ids, other.category_ids)

    def __repr__(self) -> str:
        return f"CategoryMap({len(self)} classes)"

    def to_index(self, ids: Iterable[int]) -> np.ndarray:
        """Category ids -> int64 class indices; IwcError naming any id the map does not hold."""
        ids = np.asarray(ids, dtype=np.int64)
        index = np.searchsorted(self.category_ids, ids)
        found = index < len(self)
        found[found] = self.category_ids[index[found]] == ids[found]
        if not found.all():
            unknown = np.unique(ids[~found])
            raise IwcError(f"category id(s) {unknown[:10].tolist()} are not among the {len(self)} classes of "
                           "this category map: use labels of the categories the map was built from")
        return index.astype(np.int64)

    def to_category(self, index: Iterable[int]) -> np.ndarray:
        """Class indices -> int64 original category ids."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IwcError(f"class index out of range for a category map of {len(self)} classes")
        return self.category_ids[index]

    def save(self, path: str | os.PathLike) -> None:
        """Write `{"category_ids": [...]}` atomically."""
        write_json(path, {"category_ids": self.category_ids.tolist()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> CategoryMap:
        path = Path(path)
        if not path.is_file():
            raise IwcError(f"category map {path} does not exist: it is written beside the model outputs; "
                           "rerun the stage that writes them")
        try:
            ids = json.loads(path.read_text(encoding="utf-8"))["category_ids"]
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ValueError("ids must be integers")
        except (ValueError, KeyError, TypeError) as e:
            raise IwcError(f"category map {path} is unreadable ({e}): expected "
                           '{"category_ids": [ints]}; rerun the stage that writes it') from e
        return cls(ids)
