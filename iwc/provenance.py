"""What code produced an output: the package version and a hash of its source files."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import iwc

PACKAGE_DIR = Path(iwc.__file__).resolve().parent


def source_files() -> list[Path]:
    """Every `.py` file of the `iwc` package, sorted by relative path."""
    return sorted(PACKAGE_DIR.rglob("*.py"), key=lambda p: p.relative_to(PACKAGE_DIR).as_posix())


@functools.cache
def code_hash() -> str:
    """sha256 over the package's source files (relative path + bytes): changes when any code changes."""
    h = hashlib.sha256()
    for path in source_files():
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def code_version() -> dict[str, str]:
    """`{"iwc": version, "code_sha256": hash}`: stamped into every manifest."""
    return {"iwc": iwc.__version__, "code_sha256": code_hash()}
