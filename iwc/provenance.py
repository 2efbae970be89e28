"""What code produced an output: the package version and a hash of its source files."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

import iwc

PACKAGE_DIR = Path(iwc.__file__).resolve().parent


def source_files() -> list[Path]:
    """Every `.py` file of the `iwc` package, sorted by relative path."""
    return sorted(PACKAGE_DIR.rglob("*.py"), key=lambda p: p.relative_to(PACKAGE_DIR).as_posix())


def hash_sources(sources: Mapping[str, str]) -> str:
    """sha256 over `{relative path: text}` in path order (path and UTF-8 bytes, NUL-separated)."""
    h = hashlib.sha256()
    for rel in sorted(sources):
        h.update(rel.encode() + b"\0" + sources[rel].encode("utf-8") + b"\0")
    return h.hexdigest()


@functools.cache
def code_hash() -> str:
    """sha256 over the package's source files: changes when any code changes."""
    return hash_sources({p.relative_to(PACKAGE_DIR).as_posix(): p.read_text(encoding="utf-8") for p in source_files()})


def code_version() -> dict[str, str]:
    """`{"iwc": version, "code_sha256": hash}`: stamped into every manifest."""
    return {"iwc": iwc.__version__, "code_sha256": code_hash()}
