"""What produced an output: the package version, a hash of its source files, and the runtime it ran on."""

from __future__ import annotations

import functools
import hashlib
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

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


def runtime() -> dict[str, str]:
    """Versions of python, torch, timm and numpy, and the device: stamped into every manifest.

    Cheap, and never imports torch or initializes CUDA itself: a version comes from the imported module
    (torch's carries its build, e.g. `+cu121`), else from the installed package's metadata; the device
    ("cpu", "cuda: <name>", "cuda: <n> x <name>") is asked of torch only when this process has imported it
    already (a process that never imports torch used no device: "none").
    """
    info = {"python": platform.python_version()}
    for package in ("torch", "timm", "numpy"):
        try:
            info[package] = getattr(sys.modules.get(package), "__version__", None) or metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["device"] = _device()
    return info


def _device() -> str:
    torch = sys.modules.get("torch")
    if torch is None:
        return "none"
    if not torch.cuda.is_available():
        return "cpu"
    count, name = torch.cuda.device_count(), torch.cuda.get_device_name(0)
    return f"cuda: {name}" if count == 1 else f"cuda: {count} x {name}"


def code_version() -> dict[str, Any]:
    """`{"iwc": version, "code_sha256": hash, "runtime": runtime()}`: stamped into every manifest."""
    return {"iwc": iwc.__version__, "code_sha256": code_hash(), "runtime": runtime()}
