"""The uint8 image cache: every image decoded once into one memory-mapped array.

`build_cache` decodes each image (PIL, JPEG draft mode), squashes it to size x size RGB and writes it
into `images.npy`, an `uint8 (N, size, size, 3)` array opened with `np.load(mmap_mode="r")` by
`ImageCache.open`. `meta.json` holds the ids, the size, a fingerprint of the sources and the ids that
failed to decode (their rows stay zero). While a build runs, `state.npy` records each row as pending,
done or failed and is saved every `FLUSH_EVERY` rows, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from iwc.data.decode import Unreadable, opened, to_rgb
from iwc.data.scratch import require_free
from iwc.errors import IwcError
from iwc.io import atomic_write, read_json_object, sha256_json, write_json

IMAGES_FILE = "images.npy"
META_FILE = "meta.json"
STATE_FILE = "state.npy"
FORMAT = 1
FLUSH_EVERY = 512  # rows decoded between saves of the resume state
PENDING, DONE, FAILED = 0, 1, 2


@dataclass(frozen=True)
class ImageCache:
    """A finished cache: `images` uint8 (N, size, size, 3) read-only memmap, row i = `ids[i]`."""

    images: np.ndarray
    ids: list[str]
    failed: list[str]
    size: int

    @classmethod
    def open(cls, cache_dir: str | os.PathLike) -> ImageCache:
        """Open a complete cache written by `build_cache`."""
        cache_dir = Path(cache_dir)
        meta = read_json_object(cache_dir / META_FILE)
        if not meta.get("complete"):
            raise IwcError(f"{cache_dir} holds no complete image cache; run build_cache on it (it resumes)")
        try:
            images = np.load(cache_dir / IMAGES_FILE, mmap_mode="r")
        except (OSError, ValueError) as e:  # deleted or damaged after the build finished
            raise IwcError(f"{cache_dir / IMAGES_FILE} is unreadable ({e}); delete {cache_dir} and build the "
                           "cache again") from e
        if images.shape != (len(meta["ids"]), meta["size"], meta["size"], 3):
            raise IwcError(f"{cache_dir / IMAGES_FILE} does not match {META_FILE}; delete {cache_dir} "
                           "and build the cache again")
        return cls(images=images, ids=list(meta["ids"]), failed=list(meta["failed"]), size=meta["size"])

    def __len__(self) -> int:
        return len(self.ids)


def build_cache(paths: Sequence[str | os.PathLike], ids: Sequence[str], size: int,
                cache_dir: str | os.PathLike, progress: bool = True) -> ImageCache:
    """Decode `paths[i]` into row i of a size x size uint8 cache in `cache_dir`; return it opened.

    A complete cache of the same sources is reused untouched; an interrupted build of the same sources
    resumes; anything else is rebuilt. Images that cannot be read are listed in `.failed`, never fatal.
    """
    paths, ids, cache_dir = [Path(p) for p in paths], list(ids), Path(cache_dir)
    if len(paths) != len(ids) or not ids:
        raise IwcError(f"build_cache needs one id per path and at least one image; got {len(paths)} "
                       f"paths and {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise IwcError("build_cache: image ids repeat; pass each image once")
    if size < 1:
        raise IwcError(f"build_cache: size must be a positive pixel count, got {size}")
    fingerprint = source_fingerprint(paths, ids, size)
    meta = read_json_object(cache_dir / META_FILE)
    if meta.get("fingerprint") == fingerprint and meta.get("complete"):
        return ImageCache.open(cache_dir)
    resumed = _resume(cache_dir, fingerprint, len(ids), size) if meta.get("fingerprint") == fingerprint \
        else None
    if resumed is None:  # a fresh build allocates the whole array: check the disk holds it first
        require_free(cache_dir, cache_bytes(len(ids), size), f"cache {size}px of {len(ids)} images")
    images, state = resumed or _start(cache_dir, fingerprint, ids, size)
    _fill(images, state, paths, size, cache_dir, progress)
    write_json(cache_dir / META_FILE, _meta(fingerprint, ids, size,
                                            failed=[ids[i] for i in np.flatnonzero(state == FAILED)]))
    (cache_dir / STATE_FILE).unlink()
    return ImageCache.open(cache_dir)


def cache_bytes(n: int, size: int) -> int:
    """Scratch a cache of `n` images at `size` px takes: the array, its resume state and a margin for the
    small files."""
    return n * size * size * 3 + n + (1 << 20)


def source_fingerprint(paths: Sequence[Path], ids: Sequence[str], size: int) -> str:
    """Hash of the ids, the size and each source file's path, byte size and mtime (missing: None)."""
    files = []
    for p in paths:
        try:
            st = p.stat()
            files.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([str(p), None, None])
    return sha256_json({"format": FORMAT, "size": size, "ids": list(ids), "files": files})


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 (size, size, 3) RGB, squashed (aspect ratio not kept); `Unreadable` if it
    does not decode."""
    with opened(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still >= size
        rgb = to_rgb(im)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))


def _decode_or_none(path: Path, size: int) -> np.ndarray | None:
    try:
        return decode_image(path, size)
    except Unreadable:  # missing, truncated, not an image, a decompression bomb: recorded, not fatal
        return None


def _fill(images: np.memmap, state: np.ndarray, paths: list[Path], size: int, cache_dir: Path,
          progress: bool) -> None:
    """Decode every pending row, saving `images` then `state` every FLUSH_EVERY rows."""
    pending = np.flatnonzero(state == PENDING)
    bar = tqdm(total=len(state), initial=len(state) - len(pending), desc=f"cache {size}px",
               unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, bar:
        for start in range(0, len(pending), FLUSH_EVERY):
            rows = pending[start:start + FLUSH_EVERY]
            for row, pixels in zip(rows, pool.map(_decode_or_none, [paths[i] for i in rows],
                                                  [size] * len(rows)), strict=True):
                if pixels is None:
                    state[row] = FAILED
                else:
                    images[row] = pixels
                    state[row] = DONE
            images.flush()  # rows reach the disk before the state that claims them
            _save_state(cache_dir, state)
            bar.update(len(rows))
            bar.set_postfix(failed=int((state == FAILED).sum()), refresh=False)


def _start(cache_dir: Path, fingerprint: str, ids: list[str], size: int) -> tuple[np.memmap, np.ndarray]:
    """Fresh build: in-progress meta first, then a zeroed array and an all-pending state."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / STATE_FILE).unlink(missing_ok=True)
    write_json(cache_dir / META_FILE, _meta(fingerprint, ids, size, failed=None))
    images = np.lib.format.open_memmap(cache_dir / IMAGES_FILE, mode="w+", dtype=np.uint8,
                                       shape=(len(ids), size, size, 3))
    state = np.zeros(len(ids), dtype=np.uint8)
    _save_state(cache_dir, state)
    return images, state


def _resume(cache_dir: Path, fingerprint: str, n: int, size: int) -> tuple[np.memmap, np.ndarray] | None:
    """The array and state of an interrupted build of the same sources, or None if unusable."""
    try:
        state = np.load(cache_dir / STATE_FILE)
        images = np.load(cache_dir / IMAGES_FILE, mmap_mode="r+")
    except (OSError, ValueError):
        return None
    if state.shape != (n,) or images.shape != (n, size, size, 3) or images.dtype != np.uint8:
        return None
    return images, state


def _save_state(cache_dir: Path, state: np.ndarray) -> None:
    with atomic_write(cache_dir / STATE_FILE, "wb") as f:
        np.save(f, state)


def _meta(fingerprint: str, ids: list[str], size: int, failed: list[str] | None) -> dict:
    """meta.json content; `failed=None` marks a build in progress."""
    return {"format": FORMAT, "fingerprint": fingerprint, "size": size, "ids": ids,
            "complete": failed is not None, "failed": failed or []}
