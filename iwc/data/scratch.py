"""Scratch space: a caching step states what it needs and stops before it starts when the disk lacks it.

`require_free(folder, need, what)` logs `what` needs `need` bytes under `folder`, then raises `IwcError` (one
line: the need, what is free, what to do) when the disk holding `folder` has less free.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from iwc.errors import IwcError
from iwc.layout import SCRATCH_ENV

log = logging.getLogger(__name__)


def require_free(folder: Path, need: int, what: str) -> None:
    """Stop with one line when the disk holding `folder` (or its nearest existing parent) has under `need`
    bytes free; `what` names the step ("cache 144px of 217,959 images")."""
    probe = Path(folder).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    log.info("%s: needs %s of scratch in %s (%s free)", what, gigabytes(need), folder, gigabytes(free))
    if free < need:
        raise IwcError(f"{what} needs {gigabytes(need)} of scratch in {folder} and that disk has {gigabytes(free)} "
                       f"free: free space there, or point {SCRATCH_ENV} at a larger disk, then run again")


def gigabytes(n: int) -> str:
    """A byte count for people: '17.50 GB', '0.05 GB'."""
    return f"{n / 1e9:.2f} GB"
