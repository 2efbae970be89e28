"""Invoke tasks: `invoke --list`. Thin: each task calls the `iwc` package or a benchmark script."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import Collection, Exit, task

PY = sys.executable
RESULTS = "benchmarks/results"
DEMO_DATA = "data/demo"  # demo-data folders: <scale>-seed<N>[-quirks]


def _iwc(c, *args: str, **options) -> None:
    """Run `iwc ARGS --option value ...`: None, False and "" are left out, True is a bare flag, a list repeats.

    The task exits with iwc's own exit code (2 user error, 130 Ctrl-C, ...) and adds no message of its own:
    iwc has printed its one-line error already."""
    words = [PY, "-m", "iwc.host.cli", *args]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if v is True:
                words.append(flag)
            elif v is not None and v is not False and v != "":
                words += [flag, str(v)]
    # in_stream=False: iwc reads no input, and invoke then keeps the child's stdin open to pass on a Ctrl-C
    result = c.run(shlex.join(words), pty=False, warn=True, in_stream=False)
    if result.exited:
        raise Exit(code=result.exited)


@task(help={"demo": "use the built-in synthetic competition and the demo recipe",
            "data": "folder holding the competition data (default data/kaggle; with --demo data/demo/<scale>-seed<N>)",
            "recipe": "recipe name or TOML file (default: reference, or demo with --demo)",
            "set": "override a recipe value, e.g. full.batch_size=64 (repeatable)",
            "run": "run name: runs/<run>/ and submissions/<run>/ (default: the recipe name)",
            "force": "rerun every stage even if its inputs are unchanged",
            "seed": "the recipe's seed (training, split, TTA)",
            "data_seed": "seed of the synthetic competition (with --demo)",
            "scale": "size of the synthetic competition: small | medium",
            "quirks": "with --demo: plant the real files' quirks (listed in ground_truth/data_issues.json)",
            "backend": "where the kernels run: local | docker | kaggle",
            "gpus": "train each model on this many GPUs (torchrun; default 1)",
            "dry_run": "with --backend kaggle: print what would be pushed; push nothing",
            "submit": "submit the validated result to Kaggle and print its score",
            "timeout": "with --backend kaggle: seconds to wait for each kernel (default 13 h)"},
      iterable=["set"])
def reproduce(c, demo=False, data="", recipe="", set=None, run="", force=False, seed=None, data_seed=None,
              scale="", backend="", gpus=None, quirks=False, dry_run=False, submit=False, timeout=None):
    """Build the kernels, run full + crop, then aggregate; assemble and validate submissions/<run>/."""
    _iwc(c, "reproduce", demo=demo, data=data, recipe=recipe, set=set or [], run=run, force=force, seed=seed,
         data_seed=data_seed, scale=scale, backend=backend, gpus=gpus, quirks=quirks, dry_run=dry_run, submit=submit,
         timeout=timeout)


@task(name="download", help={"data": "data folder (default data/kaggle)", "images": "also the original images",
                             "no_resized": "skip the 256 px dataset"})
def data_download(c, data="", images=False, no_resized=False):
    """Download the competition's metadata and the 256 px dataset from Kaggle (kept when complete)."""
    _iwc(c, "kaggle", "download", data=data, images=images, no_resized=no_resized)


@task(name="push", help={"folder": "kernel folder (repeatable), e.g. runs/<run>/kernels/full"}, iterable=["folder"])
def kernels_push(c, folder=None):
    """Push kernel folders to Kaggle, each as a new version."""
    _iwc(c, "kaggle", "push", *(folder or []))


@task(name="status", help={"kernel": "owner/slug", "version": "version number", "wait": "wait until it ends",
                           "timeout": "seconds to wait at most"})
def kernels_status(c, kernel, version=None, wait=False, timeout=None):
    """Print a Kaggle kernel version's status; with --wait, wait until it ends."""
    _iwc(c, "kaggle", "status", kernel, version=version, wait=wait, timeout=timeout)


@task(name="pull", help={"kernel": "owner/slug", "version": "version number", "out": "folder to fill"})
def kernels_pull(c, kernel, out, version=None):
    """Download a Kaggle kernel version's output files."""
    _iwc(c, "kaggle", "pull", kernel, out=out, version=version)


@task(name="submit", help={"submission_dir": "folder with submission.csv + manifest.json",
                           "message": "submission description", "data": "data folder (default data/kaggle)"})
def submission_submit(c, submission_dir, message, data=""):
    """Validate and submit a submission folder to Kaggle; print the public score."""
    _iwc(c, "kaggle", "submit", submission_dir, message=message, data=data)


@task(name="demo", help={"out": f"output folder (default {DEMO_DATA}/<scale>-seed<N>[-quirks])", "seed": "random seed",
                         "scale": "small | medium",
                         "quirks": "plant the real files' quirks (listed in ground_truth/data_issues.json)"})
def data_demo(c, out="", seed=0, scale="medium", quirks=False):
    """Write the synthetic competition (exact real formats) to OUT."""
    from iwc.host.demo import demo_root

    _iwc(c, "demo-data", out or str(demo_root(Path(DEMO_DATA), seed, scale, quirks)), seed=seed, scale=scale,
         quirks=quirks)


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


@task(name="build", help={"kaggle": "start from Kaggle's GPU image with this tag (the one your Kaggle session "
                                    "runs) and keep its packages, instead of the pinned PyTorch base and the lock",
                          "base": "start from this image instead (e.g. the one `invoke docker.base` prints), "
                                  "built with --network host and this machine's pip settings"})
def docker_build(c, kaggle="", base=""):
    """Build the image the docker backend runs: iwc:<version>-<code hash> (docker/Dockerfile)."""
    from iwc.host.backends.docker import build_argv

    if base and not kaggle:
        _iwc(c, "docker-build", base=base)
    else:
        c.run(shlex.join(build_argv(kaggle)), pty=False)


@task(name="base", help={"mirror": "Debian mirror (default: the one this machine's apt uses)"})
def docker_base(c, mirror=""):
    """Make a base image here from Debian packages (debootstrap, as root) + torch; print its tag (cached)."""
    _iwc(c, "docker-base", mirror=mirror)


@task(name="run", help={"stage": "full | crop | aggregate",
                        "input_root": "Kaggle-shaped input folder, mounted read-only at /kaggle/input",
                        "out": "folder for the kernel, log.txt and working/ (default runs/docker-<stage>)",
                        "image": "image to run (default: the one docker.build tags for this code)",
                        "recipe": "recipe name or TOML file (default: reference)",
                        "set": "override a recipe value (repeatable)"},
      iterable=["set"])
def docker_run(c, stage, input_root, out="", image="", recipe="", set=None):
    """Run one stage's generated kernel in the image, Kaggle's folders mounted, the GPUs attached."""
    _iwc(c, "docker-run", stage, input_root=input_root, out=out, image=image, recipe=recipe, set=set or [])


@task(name="lock")
def docker_lock(c):
    """Regenerate docker/requirements.lock: the declared dependencies at the versions installed here."""
    from iwc.host.lockfile import LOCK_FILE, write_lock

    print(f"wrote {write_lock(Path('pyproject.toml'), LOCK_FILE)}")


@task(name="save", help={"arch": "timm architecture (default resnet50, the reference's)",
                         "out": "file to write, ending in .safetensors"})
def weights_save(c, out, arch="resnet50"):
    """Save timm's pretrained weights to a local .safetensors file, for offline runs (weights_file)."""
    _iwc(c, "weights", "save", arch=arch, out=out)


@task(name="sandbox", help={"data": "data root laid out like `iwc demo-data` (default: data/demo/medium-seed0, "
                                    "written if missing)",
                            "workdir": "where pushed kernels run (default runs/kaggle-sandbox)",
                            "owner": "the Kaggle user name of the sandbox's made-up token",
                            "port": "port on 127.0.0.1 (default: any free one)",
                            "fault": "inject a fault: name[:times][,key=value...] (repeatable)"},
      iterable=["fault"])
def kaggle_sandbox(c, data="", workdir="", owner="", port=0, fault=None):
    """Serve a local Kaggle stand-in on loopback until Ctrl-C; prints the env vars that send the client to it."""
    words = [PY, "-m", "iwc.host.sandbox"]
    for flag, value in (("--data", data), ("--workdir", workdir), ("--owner", owner), ("--port", port)):
        words += [flag, str(value)] if value else []
    for text in fault or []:
        words += ["--fault", text]
    c.run(shlex.join(words), pty=False, in_stream=False)


bench = Collection("bench", bench_aggregate, bench_crops, bench_pipeline, bench_gpu)
ns = Collection(reproduce, test, lint, bench, Collection("data", data_demo, data_download),
                Collection("kernels", kernels_build, kernels_check, kernels_push, kernels_status, kernels_pull),
                Collection("submission", submission_submit),
                Collection("docker", docker_base, docker_build, docker_run, docker_lock),
                Collection("weights", weights_save), Collection("kaggle", kaggle_sandbox))
