"""What produced an output: the package version, its source files (the import closure of the entry point
that ran) with their hashes, and the runtime it ran on.

A stage's code is the closure of its kernel's entry module: every `iwc` module it imports, directly or
through others, anywhere in a module (a function-level import counts), plus their packages' `__init__`
files. Kernels embed exactly that closure, and a stage's key hashes exactly it, so editing the report reruns
only the aggregator and editing the training loop reruns the model stages (and the aggregator after them).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import platform
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import iwc
from iwc.errors import IwcError

PACKAGE_DIR = Path(iwc.__file__).resolve().parent
HOST_DIR = "host"  # host-only code: never embedded in a kernel, never in a stage's code hash
KERNEL_ROOTS = ("iwc.errors", "iwc.recipe")  # what every kernel's bootstrap imports before its entry point


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


def module_file(module: str) -> str:
    """`iwc.a.b` -> its source path relative to the package (`a/b.py`; a package: `a/b/__init__.py`), as
    the key of a sources mapping; `IwcError` for a module outside `iwc`."""
    parts = module.split(".")
    if parts[0] != "iwc":
        raise IwcError(f"{module!r} is not a module of the iwc package")
    return "/".join(parts[1:]) + ".py" if len(parts) > 1 else "__init__.py"


def import_closure(roots: Iterable[str], sources: Mapping[str, str]) -> list[str]:
    """The source paths (keys of `sources`, `{relative path: text}`) of the modules `roots` (`iwc.x.y`) and
    every `iwc` module they import, transitively, with their packages' `__init__.py`; sorted."""
    seen: set[str] = set()
    todo = [*roots]
    while todo:
        module = todo.pop()
        rel = _existing(module, sources)
        if rel is None:
            raise IwcError(f"{module} is imported by kernel-side code but iwc/{module_file(module)} does not exist")
        if rel in seen:
            continue
        seen.add(rel)
        todo += [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]  # its packages
        package = module if rel.endswith("__init__.py") else module.rpartition(".")[0]
        todo += _imports(ast.parse(sources[rel], filename=rel), package, sources)
    return sorted(seen)


def _existing(module: str, sources: Mapping[str, str]) -> str | None:
    """The key of `module` in `sources`: the module's file, or its package's `__init__.py`; None if neither."""
    rel = module_file(module)
    package = rel.removesuffix(".py") + "/__init__.py" if rel != "__init__.py" else rel
    return rel if rel in sources else package if package in sources else None


def _imports(tree: ast.AST, package: str, sources: Mapping[str, str]) -> list[str]:
    """The `iwc` modules a module's syntax tree imports (`from iwc.a import b` counts `iwc.a.b` when b is a
    module); `package` resolves relative imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "iwc" or base.startswith("iwc."):
                found.append(base)
                found += [f"{base}.{a.name}" for a in node.names if _existing(f"{base}.{a.name}", sources)]
    return [m for m in found if m == "iwc" or m.startswith("iwc.")]


def closure_sources(module: str, sources: Mapping[str, str]) -> dict[str, str]:
    """`{relative path: text}` of what a kernel whose entry point is in `module` runs: the import closure of
    the kernel's bootstrap imports and `module`."""
    return {rel: sources[rel] for rel in import_closure((*KERNEL_ROOTS, module), sources)}


def package_sources(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """`{path relative to the package: text}` for every kernel-side `.py` file under `package_dir`."""
    sources = {}
    for path in source_files(package_dir):
        rel = path.relative_to(package_dir).as_posix()
        try:
            sources[rel] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise IwcError(f"{path} is not UTF-8 ({e}): save it as UTF-8 so it can be embedded") from e
    return sources


@functools.cache
def _installed_sources() -> dict[str, str]:
    return package_sources()


def code_version(module: str) -> dict[str, Any]:
    """What ran, for a manifest: `{"iwc": version, "code_sha256": hash of the closure of `module`,
    "files": {relative path: sha256}, "runtime": runtime()}`."""
    code = closure_sources(module, _installed_sources())
    return {"iwc": iwc.__version__, "code_sha256": hash_sources(code),
            "files": {rel: hashlib.sha256(text.encode("utf-8")).hexdigest() for rel, text in code.items()},
            "runtime": runtime()}


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
