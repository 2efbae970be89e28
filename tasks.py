"""Invoke tasks: `invoke --list`. Thin: each task calls the `iwc` package or a benchmark script."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import Collection, task

PY = sys.executable
RESULTS = "benchmarks/results"
DEMO_DATA = "data/demo/medium-seed0"


def _iwc(c, *args: str, **options) -> None:
    """Run `iwc ARGS --option value ...`: None, False and "" are left out, True is a bare flag, a list repeats."""
    words = [PY, "-m", "iwc.host.cli", *args]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if v is True:
                words.append(flag)
            elif v is not None and v is not False and v != "":
                words += [flag, str(v)]
    c.run(shlex.join(words), pty=False)


@task(help={"demo": "use the built-in synthetic competition and the demo recipe",
            "data": "folder holding the competition data (default data/kaggle; with --demo data/demo/<scale>-seed<N>)",
            "recipe": "recipe name or TOML file (default: reference, or demo with --demo)",
            "set": "override a recipe value, e.g. full.batch_size=64 (repeatable)",
            "run": "run name: runs/<run>/ and submissions/<run>/ (default: the recipe name)",
            "force": "rerun every stage even if its inputs are unchanged",
            "seed": "the recipe's seed (training, split, TTA)",
            "data_seed": "seed of the synthetic competition (with --demo)",
            "scale": "size of the synthetic competition: small | medium",
            "backend": "where the kernels run: local"},
      iterable=["set"])
def reproduce(c, demo=False, data="", recipe="", set=None, run="", force=False, seed=None, data_seed=None,
              scale="", backend=""):
    """Build the kernels, run full + crop, then aggregate; assemble and validate submissions/<run>/."""
    _iwc(c, "reproduce", demo=demo, data=data, recipe=recipe, set=set or [], run=run, force=force, seed=seed,
         data_seed=data_seed, scale=scale, backend=backend)


@task(name="demo", help={"out": "output folder", "seed": "random seed", "scale": "small | medium"})
def data_demo(c, out=DEMO_DATA, seed=0, scale="medium"):
    """Write the synthetic competition (exact real formats) to OUT."""
    _iwc(c, "demo-data", out, seed=seed, scale=scale)


@task(name="build", help={"owner": "your Kaggle user name (default: a placeholder)"})
def kernels_build(c, owner=""):
    """Regenerate kernels/<stage>/ from the package and the reference recipe."""
    from iwc.host.bundle import DEFAULT_OWNER, build_kernels
    from iwc.recipe import REFERENCE

    for folder in build_kernels(Path("kernels"), REFERENCE, owner or DEFAULT_OWNER):
        print(f"wrote {folder}")


@task(name="check")
def kernels_check(c):
    """Fail if a committed kernel differs from a fresh build (run `invoke kernels.build`)."""
    from iwc.host.bundle import check_fresh
    from iwc.recipe import REFERENCE

    stale = check_fresh(Path("kernels"), REFERENCE)
    if stale:
        sys.exit("stale kernels: " + ", ".join(stale) + "; run `invoke kernels.build`")
    print("kernels are fresh")


@task
def test(c, k=""):
    """Run the test suite (the README's test command), optionally only tests matching -k."""
    c.run(f"{PY} -m pytest" + (f" -k {k!r}" if k else ""), pty=False)


@task
def lint(c):
    """ruff over the whole project."""
    c.run(f"{PY} -m ruff check .")


def _bench(c, name: str, extra: str = "") -> None:
    c.run(f"{PY} benchmarks/{name}.py --out {RESULTS}/{name}.json {extra}".rstrip())


@task(name="aggregate")
def bench_aggregate(c):
    """Blend + sequence vote at the real test size (62,894 images x 216 classes)."""
    _bench(c, "aggregate")


@task(name="crops")
def bench_crops(c):
    """Crop extraction throughput: JPEG draft-mode decode vs full decode, same files."""
    _bench(c, "crops")


@task(name="pipeline")
def bench_pipeline(c):
    """Cached batched augmentation vs the per-sample DataLoader baseline; model rates for context."""
    _bench(c, "pipeline")


@task(name="gpu")
def bench_gpu(c):
    """ResNet50 at 128 px on CUDA: real pipeline vs synthetic tensors, TTA inference (skips without CUDA)."""
    _bench(c, "gpu")


bench = Collection("bench", bench_aggregate, bench_crops, bench_pipeline, bench_gpu)
ns = Collection(reproduce, test, lint, bench, Collection("data", data_demo),
                Collection("kernels", kernels_build, kernels_check))
