"""Invoke tasks: `invoke --list`. Thin: each task calls the `iwc` package or a benchmark script."""

from __future__ import annotations

import sys

from invoke import Collection, task

PY = sys.executable
RESULTS = "benchmarks/results"


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
ns = Collection(test, lint, bench)
