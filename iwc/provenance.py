"""What code produced an output: the package version and a hash of its source files."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

import iwc

PACKAGE_DIR = Path(iwc.__file__).resolve().parent
HOST_DIR = "host"  # host-only code: never embedded in a kernel, never in a stage's code hash


def source_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every kernel-side `.py` file of the package (all but `host/`), sorted by relative path."""
    files = (p for p in package_dir.rglob("*.py") if p.relative_to(package_dir).parts[0] != HOST_DIR)
    return sorted(files, key=lambda p: p.relative_to(package_dir).as_posix())


def hash_sources(sources: Mapping[str, str]) -> str:
    """sha256 over `{relative path: text}` in path order (path and UTF-8 bytes, NUL-separated)."""
    h = hashlib.sha256()
    for rel in sorted(sources):
        h.update(rel.encode() + b"\0" + sources[rel].encode("utf-8") + b"\0")
    return h.hexdigest()


def package_hash(package_dir: Path) -> str:
    """sha256 over the kernel-side source files under `package_dir`."""
    return hash_sources({p.relative_to(package_dir).as_posix(): p.read_text(encoding="utf-8")
                         for p in source_files(package_dir)})


@functools.cache
def code_hash() -> str:
    """sha256 over the installed package's kernel-side sources: changes when any kernel code changes."""
    return package_hash(PACKAGE_DIR)


def code_version() -> dict[str, str]:
    """`{"iwc": version, "code_sha256": hash}`: stamped into every manifest."""
    return {"iwc": iwc.__version__, "code_sha256": code_hash()}
