"""Generate the Kaggle kernels: one self-contained script per stage, beside its `kernel-metadata.json`.

Output, per stage: `<out>/<stage>/iwc_<stage>.py` and `<out>/<stage>/kernel-metadata.json`.

The script embeds the source files its stage runs (the import closure of the stage's module,
`iwc.provenance.closure_sources`), each as a headed raw string, and the resolved recipe as indented JSON:
what runs on Kaggle is readable there and needs no `pip install`. Run, it writes
the sources to a folder under the scratch dir (`$IWC_SCRATCH_DIR`, else the temp dir; one named by the
process id, so the next kernel removes one left by a killed kernel), puts that folder first on `sys.path`
(the embedded copy wins over any installed `iwc`, and tracebacks show real file names and lines), and
calls the stage's `main(recipe, stage)`.
The same sources, recipe and owner always give the same bytes; `check_fresh` lists files that differ.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from iwc.errors import IwcError
from iwc.io import write_text
from iwc.layout import COMPETITION_SLUG, SCRATCH_ENV
from iwc.provenance import closure_sources, hash_sources, package_sources
from iwc.recipe import Recipe
from iwc.stages import StageSpec, stage_specs
from iwc.train.session import KAGGLE_LIMIT_S, LIMIT_ENV, START_ENV

DEFAULT_OWNER = "your-kaggle-username"  # placeholder for the committed kernels; pushes pass the real one
MACHINE_SHAPE = "NvidiaTeslaT4"  # explicit: `enable_gpu` alone may land on a retired GPU
METADATA_FILE = "kernel-metadata.json"
_DELIM = "'" * 3  # written this way so that this file itself can be embedded


def render_script(stage: str, entry: str, recipe: Recipe, sources: Mapping[str, str],
                  session_limit: float | None = KAGGLE_LIMIT_S) -> str:
    """The kernel script that installs `sources` as package `iwc` and calls `entry` (`module:function`) with
    the recipe and `stage`. `session_limit` (seconds; None: none) is baked in: the kernel plans its training
    around it (`iwc.train.session`), since on Kaggle a kernel knows only its script and its inputs."""
    module, _, func = entry.partition(":")
    if not (module.startswith("iwc.") and func.isidentifier()):
        raise IwcError(f"kernel entry {entry!r} must look like 'iwc.<module>:<function>'")
    module_file = module.removeprefix("iwc.").replace(".", "/")
    if not {f"{module_file}.py", f"{module_file}/__init__.py"} & set(sources):
        raise IwcError(f"kernel entry {entry!r}: iwc/{module_file}.py is not among the embedded sources; "
                       "write the stage module first")
    code_sha = hash_sources(sources)
    session_limit = None if session_limit is None else float(session_limit)  # a plain literal in the script
    recipe_json = _raw_literal(f"\n{json.dumps(recipe.to_dict(), indent=2)}\n", "the recipe JSON")
    parts = [
        _HEADER.format(stage=stage, recipe=recipe.name, code_sha=code_sha, entry=entry),
        f"STAGE = {stage!r}\nENTRY = {entry!r}\nCODE_SHA256 = {code_sha!r}\nSCRATCH_ENV = {SCRATCH_ENV!r}\n",
        f"SESSION_LIMIT_S = {session_limit!r}\nSESSION_ENV = {(LIMIT_ENV, START_ENV)!r}\n\n",
        f"RECIPE_JSON = {recipe_json}\n",
        _BOOTSTRAP,
        "SOURCES = {}\n",
    ]
    for rel in sorted(sources):
        rule = "#" * 100
        parts.append(f"\n{rule}\n# iwc/{rel}\n{rule}\n"
                     f"SOURCES[{rel!r}] = {_raw_literal(sources[rel], f'iwc/{rel}')}\n")
    parts.append('\n\nif __name__ == "__main__":\n    main()\n')
    return "".join(parts)


def kernel_metadata(spec: StageSpec, specs: Mapping[str, StageSpec], owner: str, extra_datasets: Iterable[str] = (),
                    internet: bool = False) -> dict:
    """The `kernel-metadata.json` content for one stage of the run's `specs` (every field Kaggle would
    otherwise default).

    `internet`: whether the kernel may reach the network (timm's hub for pretrained weights).
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", owner):
        raise IwcError(f"Kaggle owner {owner!r} is not a user name: pass your Kaggle user name")
    return {
        "id": f"{owner}/{spec.slug}",
        "title": spec.title,
        "code_file": spec.code_file,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": spec.gpu,
        "enable_internet": internet,  # always explicit: the client defaults it to true
        "competition_sources": [COMPETITION_SLUG],
        "dataset_sources": sorted({*spec.datasets, *extra_datasets}),
        "kernel_sources": [f"{owner}/{specs[s].slug}" for s in spec.upstream],
        "docker_image_pinning_type": "original",
        **({"machine_shape": MACHINE_SHAPE} if spec.gpu else {}),
    }


def needs_hub(recipe: Recipe, stage: str) -> bool:
    """Whether a stage downloads pretrained weights from timm's hub (pretrained, no local weights file)."""
    model = recipe.models.get(stage)
    return model is not None and model.pretrained and not model.weights_file


def render_kernels(
    recipe: Recipe,
    owner: str = DEFAULT_OWNER,
    stages: Iterable[str] | None = None,
    sources: Mapping[str, str] | None = None,
    extra_datasets: Mapping[str, Iterable[str]] | None = None,
    session_limit: float | None = KAGGLE_LIMIT_S,
) -> dict[str, str]:
    """`{"<stage>/<file>": text}` for each stage's script and metadata (default: every stage of `recipe`).

    `session_limit`: the seconds a session may last, baked into each script (None: no limit, e.g. here).
    `sources` defaults to the installed package's; each script embeds the closure of its stage's module.
    `extra_datasets` maps a stage to more `dataset_sources` (e.g. `{"full": ["me/resnet50-weights"]}`).
    """
    sources = package_sources() if sources is None else sources
    specs = stage_specs(recipe)
    stages, extra_datasets = tuple(specs if stages is None else stages), extra_datasets or {}
    unknown = (set(stages) | set(extra_datasets)) - set(specs)
    if unknown:
        raise IwcError(f"unknown kernel stage(s) {sorted(unknown)}: choose from {list(specs)}")
    files = {}
    for stage in stages:
        spec = specs[stage]
        files[f"{stage}/{spec.code_file}"] = render_script(stage, spec.entry, recipe,
                                                           closure_sources(spec.module, sources), session_limit)
        meta = kernel_metadata(spec, specs, owner, extra_datasets.get(stage, ()), needs_hub(recipe, stage))
        files[f"{stage}/{METADATA_FILE}"] = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    return files


def build_kernels(
    out_dir: Path,
    recipe: Recipe,
    owner: str = DEFAULT_OWNER,
    stages: Iterable[str] | None = None,
    *,
    sources: Mapping[str, str] | None = None,
    extra_datasets: Mapping[str, Iterable[str]] | None = None,
    session_limit: float | None = KAGGLE_LIMIT_S,
) -> list[Path]:
    """Write `render_kernels(...)` under `out_dir`; returns the kernel folders (what `kernels push` takes)."""
    files = render_kernels(recipe, owner, stages, sources, extra_datasets, session_limit)
    for rel, text in files.items():
        write_text(Path(out_dir) / rel, text)
    return sorted({Path(out_dir) / rel.split("/")[0] for rel in files})


def check_fresh(
    kernels_dir: Path,
    recipe: Recipe,
    owner: str = DEFAULT_OWNER,
    stages: Iterable[str] | None = None,
    *,
    sources: Mapping[str, str] | None = None,
    extra_datasets: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """Files under `kernels_dir` (as `<stage>/<file>`) that are missing or differ from a fresh build."""
    files = render_kernels(recipe, owner, stages, sources, extra_datasets)
    stale = []
    for rel, text in files.items():
        path = Path(kernels_dir) / rel
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            stale.append(rel)
    return stale


def _raw_literal(text: str, what: str) -> str:
    """`text` as a raw triple-quoted literal; `IwcError` unless it reads back byte-exact."""
    literal = f"r{_DELIM}{text}{_DELIM}"
    if _DELIM in text:
        raise IwcError(f"{what} contains {_DELIM}, which ends the raw string it is embedded in: "
                       f'use """ (or split the quotes) there, then rebuild the kernels')
    try:
        exact = ast.literal_eval(literal) == text
    except (SyntaxError, ValueError):
        exact = False
    if not exact:
        raise IwcError(f"{what} cannot be embedded byte-exact as a raw string (it ends in a quote or "
                       "backslash, or holds CR line endings or NUL bytes): fix the file, then rebuild")
    return literal


_HEADER = """\
# iwc kernel {stage!r}: generated by `invoke kernels.build` (iwc.host.bundle). Do not edit: regenerate.
# recipe: {recipe}
# code sha256: {code_sha}
# runs: {entry}(recipe)
#
# Below: the recipe as JSON, a small bootstrap, then the source files of the `iwc` package this stage
# runs (the import closure of its module), one raw string each. Running this file writes those files
# to a folder under the scratch dir, puts it first on
# sys.path and calls the entry point with the recipe.

import atexit
import importlib
import json
import os
import re
import shutil
import sys
import tempfile

"""

_BOOTSTRAP = """
import errno
import time

ERROR_GRACE_S = 10


def install_sources(sources):
    # Real files rather than an in-memory importer: tracebacks show the source lines, and worker
    # processes (DataLoader, torchrun) import the same code through sys.path / PYTHONPATH.
    # Named by pid under the scratch dir: atexit removes it, and the next kernel removes one whose
    # process was killed before atexit could run.
    base = os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    remove_stale_sources(base)
    root = tempfile.mkdtemp(prefix=f"iwc-src-{os.getpid()}-", dir=base)
    atexit.register(shutil.rmtree, root, True)
    for rel, text in sources.items():
        path = os.path.join(root, "iwc", *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return root


def remove_stale_sources(base):
    for name in os.listdir(base):
        match = re.fullmatch(r"iwc-src-([0-9]+)-[A-Za-z0-9_]+", name)
        if match and not process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def process_alive(pid):
    if os.name != "posix":  # no cheap check (os.kill would end the process): keep the folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def quiet_progress():
    # tqdm reads its TQDM_* settings when it is imported, so they are set here, before any import: bars
    # written to a log (Kaggle, the local backend) redraw at most every 10 s instead of keeping every
    # redraw, and under torchrun only rank 0 draws them.
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "10")
    if os.environ.get("RANK", "0") != "0":
        os.environ["TQDM_DISABLE"] = "1"


def session_settings():
    # The session's start (the first thing the kernel does; a torchrun process inherits its parent's) and
    # the session limit baked into this script: see iwc/train/session.py.
    limit_env, start_env = SESSION_ENV
    os.environ.setdefault(start_env, repr(time.time()))
    if SESSION_LIMIT_S:
        os.environ[limit_env] = repr(SESSION_LIMIT_S)


def main():
    session_settings()
    quiet_progress()
    try:  # a full, over-quota or read-only disk (even while the sources are written) is the user's to fix
        run_entry()
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = f"cannot write {e.filename}" if e.filename else "cannot write"
        print(f"error: {where}: {e.strerror} ({errno.errorcode[e.errno]}): free space on that disk (or choose "
              "a writable folder), then run again; finished stages are kept", file=sys.stderr, flush=True)
        sys.exit(2)


def run_entry():
    root = install_sources(SOURCES)
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    from iwc.errors import IwcError
    from iwc.recipe import Recipe

    module, func = ENTRY.split(":")
    try:  # exit codes as the `iwc` CLI: 2 an expected failure (its message says what to do), 130 Ctrl-C
        recipe = Recipe.from_dict(json.loads(RECIPE_JSON))
        print(f"iwc kernel: {ENTRY} with recipe {recipe.name!r}, code {CODE_SHA256[:12]}", flush=True)
        getattr(importlib.import_module(module), func)(recipe, STAGE)
    except IwcError as e:
        if os.environ.get("RANK", "0") != "0":
            # Under torchrun every process meets the same error: rank 0 says it. Another rank waits for that
            # (torchrun stops it once rank 0 has exited) and speaks only for an error of its own.
            time.sleep(ERROR_GRACE_S)
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)


"""
