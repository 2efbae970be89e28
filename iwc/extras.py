"""A kernel's numerous outputs, packed into one archive: Kaggle's `kernels output` lists at most 500 files of a
version (and keeps 20 GB of /kaggle/working), so a kernel writes at most `MAX_OUTPUT_FILES`.

`per_model_files(work, models)`: the files directly in `work` named for a model (`<anything>_<model>.<ext>`, e.g.
`confusion_crop.png`): their number grows with the recipe. `pack(work, names)` moves them into `work/EXTRAS_ZIP`
(byte-stable: sorted, fixed dates); the host unpacks it where it takes a stage's outputs (`iwc.host.outputs`).
Only files that no other kernel reads are packed: a downstream kernel sees the archive, not its members.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from iwc.io import atomic_write
from iwc.probs import ZIP_DATE

MAX_OUTPUT_FILES = 50  # a few dozen, far below Kaggle's listing limit of 500
EXTRAS_ZIP = "extras.zip"


def per_model_files(work: Path, models: Iterable[str]) -> list[str]:
    """The names of the files directly in `work` whose stem ends in `_<model>` for one of `models`, sorted."""
    suffixes = tuple(f"_{m}" for m in models)
    return sorted(p.name for p in Path(work).iterdir() if p.is_file() and p.stem.endswith(suffixes))


def pack(work: Path, names: Iterable[str]) -> list[str]:
    """Move the files `names` (directly in `work`) into `work/EXTRAS_ZIP`, written atomically; returns the names
    packed (none: no archive is written)."""
    names = sorted(set(names))
    if not names:
        return []
    with atomic_write(Path(work) / EXTRAS_ZIP, "wb") as f, zipfile.ZipFile(f, "w") as z:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            z.writestr(info, (Path(work) / name).read_bytes())
    for name in names:
        (Path(work) / name).unlink()
    return names
