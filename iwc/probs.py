"""Probability tables: rows keyed by image id, columns keyed by ORIGINAL category id.

Never by column position: two models with different class sets are aligned through `category_ids`.
On disk a table is one `.npz` (image_ids, category_ids, probs float32) written atomically, with the
category map as JSON beside it (`<name>.categories.json`).
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from iwc.errors import IwcError
from iwc.io import atomic_write, write_json

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip member can carry: no time of writing in the file


@dataclass(frozen=True, eq=False)
class ProbTable:
    image_ids: np.ndarray  # (N,) str
    category_ids: np.ndarray  # (C,) int64, original sparse ids, strictly increasing
    probs: np.ndarray  # (N, C) float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_ids", np.asarray(self.image_ids).astype(str))
        object.__setattr__(self, "category_ids", np.asarray(self.category_ids, dtype=np.int64))
        object.__setattr__(self, "probs", np.asarray(self.probs, dtype=np.float32))
        n, c = len(self.image_ids), len(self.category_ids)
        if self.probs.shape != (n, c):
            raise IwcError(f"probability table: probs shape {self.probs.shape} != ({n} images, {c} classes)")
        if c and np.any(np.diff(self.category_ids) <= 0):
            raise IwcError("probability table: category ids must be unique and increasing")
        if not pd.Index(self.image_ids).is_unique:
            raise IwcError("probability table: image ids must be unique")

    def __len__(self) -> int:
        return len(self.image_ids)

    def argmax_category(self) -> np.ndarray:
        """(N,) int64: the original category id of each row's most probable class."""
        return self.category_ids[np.argmax(self.probs, axis=1)]

    def save(self, path: str | os.PathLike) -> None:
        """Write `<path>` (.npz) and `<path stem>.categories.json`, each atomically."""
        path = Path(path)
        with atomic_write(path, "wb") as f:
            write_npz(f, image_ids=self.image_ids, category_ids=self.category_ids, probs=self.probs)
        write_json(categories_path(path), {"category_ids": self.category_ids.tolist()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProbTable:
        """The table saved at `path` (.npz); `IwcError` (one line) when it is absent, truncated or garbled."""
        path = Path(path)
        if not path.is_file():
            raise IwcError(f"probability table {path} does not exist: run the stage that writes it first")
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["image_ids"], z["category_ids"], z["probs"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # truncated, garbled
            said = " ".join(str(e).split()) or type(e).__name__
            raise IwcError(f"probability table {path} is unreadable ({said}); delete it and rerun its stage") from e


def write_npz(f: IO[bytes], **arrays: np.ndarray) -> None:
    """Write `arrays` to `f` as `np.savez` does (`np.load` reads it), but byte-stable: each member carries a
    fixed date (1980-01-01) instead of the time of writing, so equal tables give equal files."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), buf.getvalue())


def categories_path(table_path: str | os.PathLike) -> Path:
    """Where the category map of a table is saved: `<stem>.categories.json` beside it."""
    p = Path(table_path)
    return p.with_name(p.stem + ".categories.json")
