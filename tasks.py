"""Invoke tasks: `invoke --list`. Thin: each task calls the `iwc` package or a benchmark script."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import Collection, task

PY = sys.executable
RESULTS = "benchmarks/results"
DEMO_DATA = Path("data/demo")


@task(help={"demo": "use the built-in synthetic competition and the demo recipe",
            "data": "folder holding the competition data (default data/kaggle; with --demo data/demo)",
            "recipe": "recipe name or TOML file (default: reference, or demo with --demo)",
            "set": "override a recipe value, e.g. full.batch_size=64 (repeatable)",
            "run": "run name: runs/<run>/ and submissions/<run>/ (default: the recipe name)",
            "force": "rerun every stage even if its inputs are unchanged",
            "seed": "seed of the synthetic competition (with --demo)"},
      iterable=["set"])
def reproduce(c, demo=False, data="", recipe="", set=None, run="", force=False, seed=0):
    """Build the kernels, run full + crop, then aggregate; assemble and validate submissions/<run>/."""
    from iwc.errors import IwcError
    from iwc.recipe import load_recipe
    from iwc.reproduce import reproduce as run_all

    try:
        resolved = load_recipe(recipe or ("demo" if demo else "reference"), set or [])
        root = Path(data) if data else (DEMO_DATA if demo else Path("data/kaggle"))
        if demo and not (root / "ground_truth").is_dir():
            from iwc.data.demo import write_demo

            print(write_demo(root, seed=seed, scale="medium").summary())
        truth = root / "ground_truth" / "test_labels.csv"
        name = run or resolved.name
        result = run_all(root, resolved, Path("runs") / name, Path("submissions") / name,
                         truth=truth if truth.is_file() else None, force=force)
    except IwcError as e:
        sys.exit(f"error: {e}")
    ran, skipped = ", ".join(result.ran) or "none", ", ".join(result.skipped) or "none"
    print(f"\nstages run: {ran}; skipped (unchanged): {skipped}")
    print(result.table)
    print(f"\nsubmission: {result.submission_dir / 'submission.csv'} (validated); report: "
          f"{result.submission_dir / 'report.md'}")


@task(name="demo", help={"out": "output folder", "seed": "random seed", "scale": "small | medium"})
def data_demo(c, out=str(DEMO_DATA), seed=0, scale="medium"):
    """Write the synthetic competition (exact real formats) to OUT."""
    c.run(f"{PY} -m iwc.cli demo-data {out} --seed {seed} --scale {scale}")


@task(name="build", help={"owner": "your Kaggle user name (default: a placeholder)"})
def kernels_build(c, owner=""):
    """Regenerate kernels/<stage>/ from the package and the reference recipe."""
    from iwc.kaggle.bundle import DEFAULT_OWNER, build_kernels
    from iwc.recipe import REFERENCE

    for folder in build_kernels(Path("kernels"), REFERENCE, owner or DEFAULT_OWNER):
        print(f"wrote {folder}")


@task(name="check")
def kernels_check(c):
    """Fail if a committed kernel differs from a fresh build (run `invoke kernels.build`)."""
    from iwc.kaggle.bundle import check_fresh
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
