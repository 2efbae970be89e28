"""Run a generated kernel inside the project's CUDA image, with Kaggle's folders mounted.

`run_argv(job, image)` is the exact `docker run` command: each input mounted read-only at
`/kaggle/input/<mount name>`, the stage's working folder at `/kaggle/working`, its scratch folder at
`/kaggle/scratch`, the kernel folder read-only at `/kaggle/src` (run under torchrun when `job.processes` > 1);
`--gpus all` for a stage that needs a GPU (none with `--gpus 0`: `job.processes` 0 runs it on the CPU),
`--shm-size` for DataLoader workers and torchrun, `--memory` when `IWC_DOCKER_MEMORY` sets a limit, each model's
local `weights_file` read-only at its own path (the kernel's recipe names it so), and the host user's uid:gid so
outputs are not owned by root. The backend removes the container itself once it has
read how it ended (out of memory, killed), and removes a container left by an earlier run before it starts.
No environment variable of the host reaches the container except the job's own `env`: credentials stay out.
`build_argv()` is the `docker build` command; `image_tag()` names the image after the code it holds.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import iwc
from iwc.errors import IwcError
from iwc.host.backends.base import Backend, KernelRun, RunOptions, kernel_command
from iwc.host.backends.local import check_mounts, run_streamed
from iwc.layout import SCRATCH_ENV
from iwc.provenance import PACKAGE_DIR, hash_sources
from iwc.recipe import Recipe

PROJECT_DIR = PACKAGE_DIR.parent
DOCKERFILE = Path("docker/Dockerfile")
LOCK = Path("docker/requirements.lock")
IMAGE_ENV = "IWC_DOCKER_IMAGE"  # run this image instead of the one `image_tag()` names
KAGGLE_BASE = "gcr.io/kaggle-gpu-images/python"
SHM_SIZE = "16g"  # DataLoader workers pass batches through /dev/shm; Docker's default is 64 MB
MEMORY_ENV = "IWC_DOCKER_MEMORY"  # a container memory limit (`docker run --memory`), e.g. 24g; unset: none
KILLED = 137  # 128 + SIGKILL: what `docker run` returns for a container killed (out of memory or `docker kill`)

INPUT = PurePosixPath("/kaggle/input")
WORKING = "/kaggle/working"
SCRATCH = "/kaggle/scratch"
SRC = "/kaggle/src"

ENGINE_HELP = ("install Docker Engine (https://docs.docker.com/engine/install/) and the NVIDIA Container Toolkit "
               "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/), or run with --backend local")


class DockerBackend(Backend):
    """Runs each kernel in a container of the project's image (`IWC_DOCKER_IMAGE`, else `image_tag()`)."""

    name = "docker"

    def __init__(self, image: str = "", shm_size: str = SHM_SIZE, memory: str | None = None) -> None:
        self.image = image or os.environ.get(IMAGE_ENV) or image_tag()
        self.shm_size = shm_size
        self.memory = os.environ.get(MEMORY_ENV, "") if memory is None else memory
        self._ready: dict[bool, str] = {}  # needs a GPU -> the docker executable, once checked
        self.files: tuple[Path, ...] = ()  # host files the kernels read at their own paths

    def before_run(self, recipe: Recipe, run_dir: Path, options: RunOptions) -> bool:
        """Note the models' local weights files (absolute by now): each run mounts them where the recipe says."""
        self.files = tuple(sorted({Path(m.weights_file) for m in recipe.models.values() if m.weights_file}))
        return True

    def run(self, job: KernelRun) -> Path:
        docker = self._check(job.gpu)
        argv = run_argv(job, self.image, shm_size=self.shm_size, memory=self.memory, files=self.files)
        for folder in (job.stage_dir / "working", _scratch(job)):
            folder.mkdir(parents=True, exist_ok=True)  # created by this user, so the container user can write
        # an error message names the user's folders, not the mounts
        paths = {str(INPUT.joinpath(*parts)): folder for parts, folder in check_mounts(job.inputs).items()}
        paths |= {WORKING: job.stage_dir / "working", SCRATCH: _scratch(job)}
        name = container_name(job)
        _remove(docker, name)  # left by an earlier run that was cut off: the run lock says it is not running
        print("$ " + shlex.join(argv), flush=True)
        try:
            run_streamed([docker, *argv[1:]], dict(os.environ), job.stage_dir, job.log_path, job.spec.code_file,
                         paths)
        except IwcError:
            self._explain(docker, job)
            raise
        finally:  # on success, failure or Ctrl-C: the client is gone, the container must go too
            _remove(docker, name)
        return job.stage_dir / "working"

    def _explain(self, docker: str, job: KernelRun) -> None:
        """After `job`'s container failed: raise a clearer one-line `IwcError` when it was killed, ran out of
        memory, or the engine or image went away; return when none of these explains it."""
        state = subprocess.run([docker, "inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}}",
                                container_name(job)], capture_output=True, text=True, check=False)
        oom, _, code = state.stdout.strip().partition(" ")
        log = f" (kernel log: {job.log_path})"
        if oom == "true":
            limit = f"its limit {MEMORY_ENV}={self.memory}" if self.memory else "the machine's memory"
            raise IwcError(f"kernel {job.spec.code_file} ran out of memory (exit code {KILLED}: the container "
                           f"used all of {limit}): raise {MEMORY_ENV} or lower the batch size "
                           f"(--set {job.spec.name}.batch_size=...), then rerun: it resumes from its last "
                           f"checkpoint{log}") from None
        if code == str(KILLED):
            raise IwcError(f"kernel {job.spec.code_file}: its container was killed (exit code {KILLED}, e.g. "
                           f"`docker kill`): rerun the same command to resume from its last checkpoint{log}") from None
        if state.returncode:  # no container to ask about: the engine stopped, or the image went, mid-run
            self._ready.clear()
            self._check(job.gpu)

    def _check(self, gpu: bool) -> str:
        """The docker executable, once the engine (with an NVIDIA runtime for `gpu`) and the image are there."""
        if gpu not in self._ready:
            docker = check_engine(gpu)
            found = subprocess.run([docker, "image", "inspect", "--format", "{{.Id}}", self.image],
                                   capture_output=True, text=True, check=False)
            if found.returncode:
                raise IwcError(f"Docker image {self.image} not found: build it with `invoke docker.build` (no "
                               "registry reachable: `invoke docker.build --base \"$(invoke docker.base)\"`), or set "
                               f"{IMAGE_ENV} to an image you have; then rerun: finished stages are kept")
            self._ready[gpu] = docker
        return self._ready[gpu]


def check_engine(gpu: bool) -> str:
    """The path of `docker`; raises `IwcError` (one line: what to install) when the engine, or for `gpu`
    the NVIDIA runtime, is missing."""
    docker = shutil.which("docker")
    if not docker:
        raise IwcError(f"`docker` is not on PATH: {ENGINE_HELP}")
    done = subprocess.run([docker, "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        said = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise IwcError(f"the Docker engine does not answer (`docker info`: {said}): start it "
                       "(`sudo systemctl start docker`) or add yourself to the `docker` group, then rerun: "
                       "finished stages are kept")
    # `--gpus` works through the toolkit's "nvidia" runtime (what `nvidia-ctk runtime configure` registers) or,
    # in older setups, its prestart hook
    if gpu and '"nvidia"' not in done.stdout and not shutil.which("nvidia-container-runtime-hook"):
        raise IwcError("Docker has no NVIDIA runtime, so `--gpus all` cannot work: install the NVIDIA Container "
                       "Toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker` and restart Docker; "
                       "or run every stage on the CPU with --gpus 0")
    return docker


def run_argv(job: KernelRun, image: str, *, shm_size: str = SHM_SIZE, user: tuple[int, int] | None = None,
             memory: str = "", files: Sequence[Path] = ()) -> list[str]:
    """The `docker run` command that runs `job`'s kernel file in `image` (`user` default: this uid:gid;
    `memory`: a `--memory` limit, none when empty; `files`: absolute host files mounted read-only at their own
    paths)."""
    uid, gid = user or (os.getuid(), os.getgid())
    env = {**job.env, SCRATCH_ENV: SCRATCH, "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}  # any uid can write /tmp
    argv = ["docker", "run", "--name", container_name(job), *(["--gpus", "all"] if job.gpu else []),
            "--shm-size", shm_size, *(["--memory", memory, "--memory-swap", memory] if memory else []),
            "--user", f"{uid}:{gid}", "--workdir", WORKING]
    for key in sorted(env):
        argv += ["--env", f"{key}={env[key]}"]
    for parts, folder in sorted(check_mounts(job.inputs).items()):
        argv += ["--mount", bind(folder, INPUT.joinpath(*parts), readonly=True)]
    argv += ["--mount", bind(job.stage_dir / "working", WORKING), "--mount", bind(_scratch(job), SCRATCH),
             "--mount", bind(job.kernel_dir, SRC, readonly=True)]
    for file in files:
        argv += ["--mount", bind(file, file.as_posix(), readonly=True)]
    return [*argv, image, *kernel_command(f"{SRC}/{job.spec.code_file}", job.processes, python="python")]


def bind(source: Path, target: PurePosixPath | str, readonly: bool = False) -> str:
    """A `--mount` value binding host folder (or file) `source` at `target`. Unlike `--volume`, a missing source is an
    error rather than a new root-owned folder, and a `:` in a path is no separator."""
    fields = ["type=bind", f"source={Path(source).resolve()}", f"target={target}", *(["readonly"] if readonly else [])]
    # The value is a CSV record: a field holding a comma or a quote is quoted, its quotes doubled.
    return ",".join(f'"{f.replace(chr(34), chr(34) * 2)}"' if "," in f or '"' in f else f for f in fields)


def container_name(job: KernelRun) -> str:
    """A name fixed by the stage folder: the same run of the same stage cannot start twice."""
    return f"iwc-{job.spec.name}-{hashlib.sha256(str(job.stage_dir.resolve()).encode()).hexdigest()[:12]}"


def _remove(docker: str, name: str) -> None:
    subprocess.run([docker, "rm", "--force", name], capture_output=True, check=False)


def _scratch(job: KernelRun) -> Path:
    return Path(job.env.get(SCRATCH_ENV) or job.stage_dir / "scratch")


def image_code_hash(project: Path = PROJECT_DIR) -> str:
    """sha256 over what the image is built from: every package source (host code included), pyproject.toml,
    the lock and the Dockerfile."""
    files = [*sorted((project / "iwc").rglob("*.py")), project / "pyproject.toml", project / LOCK,
             project / DOCKERFILE]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise IwcError(f"{missing[0]} not found: the Docker image is built from a checkout of the project; "
                       f"run from one, or set {IMAGE_ENV}")
    return hash_sources({f.relative_to(project).as_posix(): f.read_text(encoding="utf-8") for f in files})


def image_tag(kaggle: str = "", project: Path = PROJECT_DIR) -> str:
    """`iwc:<version>-<code hash, 12 hex>` (with `-kaggle-<tag>` when built on Kaggle's image `kaggle`)."""
    return f"iwc:{iwc.__version__}-{image_code_hash(project)[:12]}" + (f"-kaggle-{kaggle}" if kaggle else "")


def build_argv(kaggle: str = "", project: Path = PROJECT_DIR, base: str = "") -> list[str]:
    """The `docker build` command, run from `project`. `kaggle` (a tag of Kaggle's GPU image, e.g. the one a
    Kaggle session reports) builds on that image with its own package versions instead of the lock; `base`
    builds on that image (e.g. `invoke docker.base`'s) with the lock, under the same tag as the default."""
    argv = ["docker", "build", "--file", DOCKERFILE.as_posix(), "--tag", image_tag(kaggle, project),
            "--label", f"org.opencontainers.image.version={iwc.__version__}",
            "--label", f"iwc.code-sha256={image_code_hash(project)}"]
    if kaggle:
        argv += ["--build-arg", f"BASE={KAGGLE_BASE}:{kaggle}", "--build-arg", "DEPS=base"]
    elif base:
        argv += ["--build-arg", f"BASE={base}", "--label", f"iwc.base={base}"]
    return [*argv, "."]


def run_stage(stage: str, input_root: Path, out: Path, recipe: Recipe, backend: DockerBackend) -> Path:
    """Run `stage`'s kernel (generated for `recipe` into `out/kernel`) with every folder of `input_root`
    (a Kaggle-shaped input folder) mounted, log and outputs under `out`; returns the outputs folder."""
    from iwc.host.bundle import build_kernels
    from iwc.stages import stage_specs

    if not Path(input_root).is_dir():
        raise IwcError(f"input root {input_root} is not a folder: lay the inputs out as Kaggle does "
                       "(competitions/<slug>, datasets/<owner>/<slug>, ...)")
    specs = stage_specs(recipe)
    if stage not in specs:
        raise IwcError(f"stage {stage!r} is not one of recipe {recipe.name!r}'s: {', '.join(specs)}")
    (kernel_dir,) = build_kernels(Path(out) / "kernel", recipe, stages=[stage])
    inputs = {child.name: child for child in sorted(Path(input_root).iterdir()) if child.is_dir()}
    return backend.run(KernelRun(specs[stage], kernel_dir, inputs, Path(out).resolve()))
