"""Kaggle folder layout: where a kernel finds its inputs and writes its outputs.

The only module that knows Kaggle paths. A kernel reads from the input root (`/kaggle/input`) and writes
to the working dir (`/kaggle/working`); both can be moved with `IWC_INPUT_ROOT` / `IWC_WORKING_DIR`, which
is how the local and docker backends run the same kernel file.

Kaggle mounts attached sources in two layouts: legacy `<root>/<slug>/`, and newer
`<root>/competitions/<slug>/`, `<root>/datasets/<owner>/<slug>/`, `<root>/notebooks/<owner>/<slug>/`.
Nothing here hard-codes either: each `find_*` searches the root breadth-first, at most `MAX_DEPTH` levels
deep, for the one folder holding a marker file, and returns that folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from iwc.data.competition import TRAIN_JSON
from iwc.errors import IwcError

INPUT_ENV = "IWC_INPUT_ROOT"
WORKING_ENV = "IWC_WORKING_DIR"
SCRATCH_ENV = "IWC_SCRATCH_DIR"

COMPETITION_SLUG = "iwildcam-2020-fgvc7"
RESIZED_DATASET = "qitvision/iwildcam2020-256"
COMPETITION_MARKER = TRAIN_JSON
RESIZED_MARKER = "256_images"

MAX_DEPTH = 4  # <root>/datasets/<owner>/<slug> is depth 3; one spare level for a nested upload
MAX_ENTRIES = 2000  # a folder with more entries holds data (images), not mounts: never listed further
_DATA_DIRS = frozenset({"train", "test", "images"})  # image folders: never listed


def input_root() -> Path:
    """The folder holding the attached inputs: `$IWC_INPUT_ROOT`, else `/kaggle/input`."""
    return Path(os.environ.get(INPUT_ENV) or "/kaggle/input")


def working_dir() -> Path:
    """The folder a kernel writes its outputs to: `$IWC_WORKING_DIR`, else `/kaggle/working`.

    Raises `IwcError` when it, or the nearest of its parents that exists, is a file, not a folder.
    """
    path = Path(os.environ.get(WORKING_ENV) or "/kaggle/working")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise IwcError(f"working dir {path}: {existing} is a file, not a folder: give a folder for the outputs "
                       f"(--working-dir or ${WORKING_ENV})")
    return path


def scratch_dir() -> Path:
    """An existing folder for big temporary caches, outside the working dir (Kaggle caps that at 20 GB).

    `$IWC_SCRATCH_DIR`, else `iwc-scratch` under the system temp folder. `IwcError` when it lies inside the
    working dir, whose every file is an output of the kernel.
    """
    path = Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "iwc-scratch")
    working = working_dir().resolve()
    if path.resolve().is_relative_to(working):
        raise IwcError(f"scratch folder {path} is inside the working dir {working}, whose files are the kernel's "
                       f"outputs (Kaggle keeps 20 GB of them and lists 500): point ${SCRATCH_ENV} at a folder "
                       "outside it (default: the temp folder)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_competition(root: Path | None = None) -> Path:
    """The competition folder (holding `iwildcam2020_train_annotations.json`, `train/`, `test/`, ...)."""
    return find_marked(
        root, COMPETITION_MARKER, "the competition data",
        f"Attach the competition {COMPETITION_SLUG!r} (kernel-metadata.json `competition_sources`).",
    )


def find_resized(root: Path | None = None, required: bool = True) -> Path | None:
    """The resized dataset's root: the folder HOLDING `256_images/` (images in `256_images/<split>/images`).

    `required=False`: None when no folder holds it (a stage then reads the original images)."""
    return find_marked(
        root, RESIZED_MARKER, "the resized image dataset",
        f"Attach the dataset {RESIZED_DATASET!r} (kernel-metadata.json `dataset_sources`).", required,
    )


def find_kernel_output(root: Path | None, marker: str) -> Path:
    """The mounted output of an upstream kernel: the folder holding `marker` (e.g. its manifest).

    `root` None means `input_root()`.
    """
    return find_marked(
        root, marker, f"the upstream kernel output with {marker!r}",
        "Attach the kernel that writes it (kernel-metadata.json `kernel_sources`) after it has "
        "finished successfully.",
    )


def find_marked(root: Path | None, marker: str, what: str, attach: str, required: bool = True) -> Path | None:
    """The one folder within `MAX_DEPTH` levels of `root` (default `input_root()`) that holds `marker`.

    Symlinked folders are followed (the local backend mounts inputs as symlinks); the same folder reached
    twice counts once. Raises `IwcError` when several folders hold the marker, and when none does unless
    `required` is False (then None).
    """
    root = input_root() if root is None else Path(root)
    if not root.is_dir():
        raise IwcError(f"{what}: input root {root} is not a folder. {attach} "
                       f"Outside Kaggle, point ${INPUT_ENV} at the folder holding the inputs.")
    matches: dict[Path, Path] = {}  # resolved -> as found
    searched: list[Path] = []
    level = [root]
    for depth in range(MAX_DEPTH + 1):
        below: list[Path] = []
        for folder in level:
            searched.append(folder)
            if (folder / marker).exists():
                matches.setdefault(folder.resolve(), folder)
            elif depth < MAX_DEPTH:  # a matched folder is a data root: nothing to look for inside it
                below += _subfolders(folder)
        level = below
    if len(matches) == 1:
        return next(iter(matches.values()))
    if matches:
        found = ", ".join(str(p) for p in sorted(matches.values()))
        raise IwcError(f"{what} is ambiguous: {len(matches)} folders under {root} hold {marker!r}: {found}. "
                       "Attach only one of them.")
    if not required:
        return None
    shown = [p.relative_to(root).as_posix() or "." for p in searched[:12]]
    more = f" and {len(searched) - len(shown)} more" if len(searched) > len(shown) else ""
    raise IwcError(f"{what} not found: no folder within {MAX_DEPTH} levels of {root} holds {marker!r} "
                   f"(searched {', '.join(shown)}{more}). {attach}")


def _subfolders(folder: Path) -> list[Path]:
    """Sorted subfolders worth searching; none for image folders and folders too big to be mount points."""
    if folder.name in _DATA_DIRS:
        return []
    found = []
    try:
        with os.scandir(folder) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_ENTRIES:
                    return []
                if entry.is_dir():
                    found.append(Path(entry.path))
    except OSError:  # unreadable folder: nothing we could use is inside
        return []
    return sorted(found)
