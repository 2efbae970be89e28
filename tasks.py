"""Invoke tasks: `invoke --list`. Thin: each task calls the `iwc` package or a benchmark script.

A task over an `iwc` command declares none of its options: `_forward` reads them (name, help, repeatable,
required) from the command's own argparse parser and passes what was given through, so `iwc` stays the one
place an option is declared (as pip declares each option once, in `cmdoptions`).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Collection, Exit, Task, task
from invoke.exceptions import ParseError
from invoke.program import Program

PY = sys.executable
IWC = [PY, "-m", "iwc.host.cli"]
RESULTS = "benchmarks/results"
DEMO_DATA = "data/demo"  # demo-data folders: <scale>-seed<N>[-quirks]


def _usage_errors_exit_2() -> None:
    """Make a bad task option (`invoke reproduce --bogus`) exit 2, as a usage error of `iwc` does, not invoke's 1
    (the code for a bug). Invoke imports this file before it parses the tasks' options, so wrapping that step
    here covers every task."""
    parse_tasks = Program.parse_tasks
    if getattr(parse_tasks, "exits_2", False):  # this file imported again (the tests load it several times)
        return

    def parse_tasks_exit_2(self: Program) -> None:
        try:
            parse_tasks(self)
        except ParseError as e:
            raise Exit(f"iwc: error: {e} see `invoke --help <task>`", code=2) from None

    parse_tasks_exit_2.exits_2 = True
    Program.parse_tasks = parse_tasks_exit_2


_usage_errors_exit_2()


def _run(c, words: list[str], options: dict[str, Any]) -> None:
    """Run `words --flag value ...`: None, False and "" are left out, True is a bare flag, a list repeats.

    The task exits with the command's own exit code (2 user error, 130 Ctrl-C, ...) and adds no message of its
    own: the command has printed its one-line error already."""
    words = list(words)
    for flag, value in options.items():
        for v in value if isinstance(value, list) else [value]:
            if v is True:
                words.append(flag)
            elif v is not None and v is not False and v != "":
                words += [flag, str(v)]
    # in_stream=False: iwc reads no input, and invoke then keeps the child's stdin open to pass on a Ctrl-C
    result = c.run(shlex.join(words), pty=False, warn=True, in_stream=False)
    if result.exited:
        raise Exit(code=result.exited)


def _iwc(c, *args: str, **options) -> None:
    """Run `iwc ARGS --option value ...` (option names with `_` for `-`), as `_run` does."""
    _run(c, [*IWC, *args], {"--" + name.replace("_", "-"): value for name, value in options.items()})


@functools.cache
def _iwc_parser() -> argparse.ArgumentParser:
    from iwc.host.cli import build_parser

    return build_parser()


def _declared(*command: str) -> argparse.ArgumentParser:
    """The argparse parser of `iwc COMMAND...`."""
    parser = _iwc_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def _forward(parser: argparse.ArgumentParser, words: list[str], name: str, rename: dict[str, str] | None = None,
             derive: dict[str, Callable[[dict[str, Any]], str]] | None = None) -> Task:
    """An invoke task `name` that runs `words` with the arguments `parser` declares, passed through as given.

    Each argument becomes a task parameter with its help (and choices); a required one (or an argparse positional)
    is a positional parameter, a repeatable one (`append`, `nargs="+"`) an iterable one. `rename` maps an argparse
    dest to another parameter name; `derive[dest](values)` fills a positional that was left out from the other
    values (the parser's defaults standing in for options not given)."""
    rename, derive = rename or {}, derive or {}
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]
    required, optional, helps, iterable = [], [], {}, []
    for action in actions:
        param = rename.get(action.dest, action.dest)
        repeated = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
        if repeated:
            iterable.append(param)
        helps[param] = " | ".join(action.choices) if action.choices and not action.help else (action.help or "")
        if action.choices and action.help:
            helps[param] += f" ({' | '.join(action.choices)})"
        if action.dest in derive:
            helps[param] += f" (default: {derive[action.dest].__doc__.splitlines()[0]})"
        needed = (action.required or not action.option_strings) and not repeated and action.dest not in derive
        default = False if isinstance(action, argparse._StoreTrueAction) else None
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        (required if needed else optional).append(
            inspect.Parameter(param, kind) if needed else inspect.Parameter(param, kind, default=default))

    def body(c, **values: Any) -> None:
        for dest, make in derive.items():
            if values.get(dest) in (None, ""):
                given = {a.dest: values.get(rename.get(a.dest, a.dest)) for a in actions}
                values[rename.get(dest, dest)] = make({k: parser.get_default(k) if v in (None, False, [], "") else v
                                                       for k, v in given.items()})
        args, options = [], {}
        for action in actions:
            value = values.get(rename.get(action.dest, action.dest))
            if action.option_strings:
                options[max(action.option_strings, key=len)] = value
            else:
                args += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        _run(c, [*words, *args], options)

    body.__doc__ = parser.description
    body.__signature__ = inspect.Signature([inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                                            *required, *optional])
    return Task(body, name=name, help=helps, iterable=iterable, positional=[p.name for p in required])


def _demo_out(values: dict[str, Any]) -> str:
    """data/demo/<scale>-seed<N>[-quirks]"""
    from iwc.host.synth import demo_root

    return str(demo_root(Path(DEMO_DATA), values["seed"], values["scale"], bool(values["quirks"])))


def _sandbox_parser() -> argparse.ArgumentParser:
    from iwc.host.sandbox.cli import build_parser

    return build_parser()


reproduce = _forward(_declared("reproduce"), [*IWC, "reproduce"], "reproduce")
tune = _forward(_declared("tune"), [*IWC, "tune"], "tune")
lr_find = _forward(_declared("lr-find"), [*IWC, "lr-find"], "lr-find")
data_download = _forward(_declared("kaggle", "download"), [*IWC, "kaggle", "download"], "download")
kernels_push = _forward(_declared("kaggle", "push"), [*IWC, "kaggle", "push"], "push", rename={"folders": "folder"})
kernels_status = _forward(_declared("kaggle", "status"), [*IWC, "kaggle", "status"], "status")
kernels_pull = _forward(_declared("kaggle", "pull"), [*IWC, "kaggle", "pull"], "pull")
submission_submit = _forward(_declared("kaggle", "submit"), [*IWC, "kaggle", "submit"], "submit")
data_demo = _forward(_declared("demo-data"), [*IWC, "demo-data"], "demo", derive={"out": _demo_out})


@task(name="scale", help={"scale": "size of the synthetic competition: full (the real counts, default), medium "
                                   "or small"})
def bench_scale(c, scale="full"):
    """`iwc reproduce` on the synthetic competition at the real size with a tiny recipe: per-step seconds, RSS, disk."""
    _bench(c, "scale", "" if scale == "full" else f"--scale {scale}")


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
    """Crop extraction throughput: draft decode on every core vs one thread's full decode, same files."""
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


docker_run = _forward(_declared("docker-run"), [*IWC, "docker-run"], "run", rename={"name": "stage"})


@task(name="lock")
def docker_lock(c):
    """Regenerate docker/requirements.lock: the declared dependencies at the versions installed here."""
    from iwc.host.lockfile import LOCK_FILE, write_lock

    print(f"wrote {write_lock(Path('pyproject.toml'), LOCK_FILE)}")


weights_save = _forward(_declared("weights", "save"), [*IWC, "weights", "save"], "save")
kaggle_sandbox = _forward(_sandbox_parser(), [PY, "-m", "iwc.host.sandbox"], "sandbox")


bench = Collection("bench", bench_aggregate, bench_crops, bench_pipeline, bench_gpu, bench_scale)
ns = Collection(reproduce, tune, lr_find, test, lint, bench, Collection("data", data_demo, data_download),
                Collection("kernels", kernels_build, kernels_check, kernels_push, kernels_status, kernels_pull),
                Collection("submission", submission_submit),
                Collection("docker", docker_base, docker_build, docker_run, docker_lock),
                Collection("weights", weights_save), Collection("kaggle", kaggle_sandbox))
