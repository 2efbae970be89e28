"""What a finished stage left in its working folder, recorded and checked again on a rerun.

`record(working)` -> `{relative path: {"sha256", "size"}}` for every file under it (checkpoints included:
hashing runs at hundreds of MB/s, small beside a stage's run); `changes(working, recorded)` -> what differs
now, e.g. `["full_test.npz: damaged", "full.manifest.json: missing"]` (empty: intact); `describe(changes)` ->
one short phrase of them. `unpack_extras(working)` extracts the archive of a kernel's numerous outputs
(`iwc.extras`) beside it, where the host takes a stage's outputs (after the kernel ran here, or was pulled).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from iwc.errors import IwcError
from iwc.extras import EXTRAS_ZIP
from iwc.io import atomic_write, is_plain_name, sha256_file

SHOWN = 3  # changes named in a message; the rest are counted


def record(working: Path) -> dict[str, dict[str, Any]]:
    """Every regular file under `working` (symlinks not followed), by its POSIX path relative to it."""
    found = {}
    for folder, _, files in os.walk(working):
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(working).as_posix()] = {"sha256": sha256_file(path),
                                                               "size": path.stat().st_size}
    return found


def changes(working: Path, recorded: Any) -> list[str]:
    """How `working` differs from `recorded` (a `record` result, or anything else read from a state file):
    each file missing, damaged (other size or bytes) or added, in path order; empty when it is as recorded."""
    if not isinstance(recorded, dict):
        return ["no record of its outputs"]
    if not Path(working).is_dir():
        return [f"{Path(working).name}/: missing"]
    now = record(working)
    found = []
    for rel in sorted(set(recorded) | set(now)):
        if rel not in now:
            found.append(f"{rel}: missing")
        elif rel not in recorded:
            found.append(f"{rel}: added")
        elif now[rel] != recorded[rel]:
            found.append(f"{rel}: damaged")
    return found


def describe(found: list[str]) -> str:
    """`found` (from `changes`) as one phrase: the first few, then how many more."""
    more = len(found) - SHOWN
    return ", ".join(found[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def unpack_extras(working: Path) -> list[str]:
    """The members of `working/EXTRAS_ZIP` written beside it (each atomically; the archive stays: it is what the
    kernel wrote); their names, none without an archive. `IwcError` for a damaged archive or a member that is not
    a plain file name."""
    archive = Path(working) / EXTRAS_ZIP
    if not archive.is_file():
        return []
    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            for name in names:
                if not is_plain_name(name):
                    raise IwcError(f"{archive}: member {name!r} is not a plain file name: this archive was not "
                                   "written by an iwc kernel; run the stage again (--force)")
                with atomic_write(Path(working) / name, "wb") as f:
                    f.write(z.read(name))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise IwcError(f"{archive} is damaged ({e}): run the stage again (--force)") from e
    return names
