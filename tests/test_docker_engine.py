"""The docker backend against a real Docker Engine (tests/test_docker.py keeps the fake-engine argv checks).

They run when `docker info` answers, and fail rather than skip when `IWC_REQUIRE_DOCKER=1` (`.ci/run` starts an
engine and sets it). One image (built on the offline base of `iwc docker-base`, both cached by tag) and one
pair of demo runs (local, the session's `tiny_run`, and docker `--gpus 0`, the tiny recipe of test_reproduce)
serve every test.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_reproduce import TINY, stage_files

from iwc.host.backends.base import KernelRun
from iwc.host.backends.docker import PROJECT_DIR, build_argv, container_name, image_tag
from iwc.host.docker_base import build_base, docker_build, image_exists
from iwc.recipe import DEMO
from iwc.stages import stage_specs

pytestmark = pytest.mark.slow
SPECS = stage_specs(DEMO)
STAGES = tuple(SPECS)
RECORDS = {"report.md", "run.json"}  # the host's account of a run: its name, attempts, seconds
SECRET = {"KAGGLE_KEY": "host-secret-3f9a1c"}
PROBE_UID = 4242  # a throwaway user for the non-root case


@pytest.fixture(scope="session")
def engine() -> str:
    """The docker CLI, once the engine answers; a failure (not a skip) under IWC_REQUIRE_DOCKER=1."""
    docker = shutil.which("docker")
    said = subprocess.run([docker, "info"], capture_output=True, text=True, check=False) if docker else None
    if said is None or said.returncode:
        why = "no `docker` on PATH" if said is None else (said.stderr.strip().splitlines() or ["no answer"])[-1]
        if os.environ.get("IWC_REQUIRE_DOCKER") == "1":
            pytest.fail(f"IWC_REQUIRE_DOCKER=1 but the Docker engine does not answer: {why}")
        pytest.skip(f"no Docker engine answers ({why}); .ci/run starts one and sets IWC_REQUIRE_DOCKER=1")
    return docker


@pytest.fixture(scope="session")
def image(engine: str) -> str:
    """The project's image for this code, built on the offline base when missing (both cached by tag)."""
    tag = image_tag()
    if not image_exists(tag):
        argv = build_argv(base=build_base())
        docker_build(argv[:-1], PROJECT_DIR)
    return tag


def reproduce(work: Path, data: Path, backend: str, run: str, env: dict | None = None,
              **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """`iwc reproduce --backend BACKEND --gpus 0 --demo --scale small` (tiny recipe) in `work`; with `popen`
    keywords it is started, not waited for."""
    argv = [sys.executable, "-m", "iwc.host.cli", "reproduce", "--backend", backend, "--gpus", "0", "--demo",
            "--scale", "small", "--data", str(data), "--run", run, *(w for s in TINY for w in ("--set", s))]
    full_env = {**os.environ, **SECRET, **(env or {})}
    if popen:
        return subprocess.Popen(argv, cwd=work, env=full_env, text=True, **popen)
    return subprocess.run(argv, cwd=work, env=full_env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="session")
def runs(image: str, small_demo, tiny_run, tmp_path_factory) -> Path:
    """A local and a docker run of the demo (`--gpus 0`) side by side: `<work>/{runs,submissions}/<backend>`.

    The local one is a copy of the session's `tiny_run` (the same data, tiny recipe and seed) when its models
    trained on the CPU, as `--gpus 0` makes them; on a machine where they took a GPU it is run here."""
    work = tmp_path_factory.mktemp("engine")
    on_cpu = all(_devices(tiny_run.run_dir / "stages" / m / "working") == ["cpu"] for m in DEMO.models)
    if on_cpu:
        tiny_run.copy(work / "runs" / "local", work / "submissions" / "local")
    for backend in ("docker",) if on_cpu else ("local", "docker"):
        done = reproduce(work, small_demo.root, backend, backend, {"IWC_DOCKER_IMAGE": image})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (work / f"{backend}.stdout").write_text(done.stdout)
    return work


def _devices(working: Path) -> list[str]:
    """What each process of the model stage whose outputs are in `working` trained on (its manifest's record)."""
    (manifest,) = working.glob("*.manifest.json")
    return json.loads(manifest.read_text())["devices"]


def results(submission_dir: Path) -> dict[str, bytes]:
    """The files of a submission folder but `RECORDS`, comparable across runs."""
    return {name: data for name, data in stage_files(submission_dir).items() if name not in RECORDS}


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("iwc: error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return lines[0]


# --- the image ----------------------------------------------------------------------------------------------


def test_image_builds_on_the_offline_base_and_runs_iwc_doctor(image, engine):
    labels = json.loads(subprocess.run([engine, "image", "inspect", "--format", "{{json .Config.Labels}}", image],
                                       capture_output=True, text=True, check=True).stdout)
    assert labels["iwc.base"].startswith("iwc-base:bookworm-torch")
    doctor = subprocess.run([engine, "run", "--rm", image, "iwc", "doctor"], capture_output=True, text=True,
                            check=False)
    assert doctor.returncode == 0, doctor.stderr
    assert "iwc 0.1.0" in doctor.stdout and "torch 2.14.1" in doctor.stdout and "CUDA: no device" in doctor.stdout


def test_base_image_is_reused_by_tag(image, capfd):
    tag = build_base()
    assert "cached" in capfd.readouterr().err and image_exists(tag)


# --- the same files on both backends ------------------------------------------------------------------------


def test_docker_cpu_run_matches_the_local_run_file_by_file(runs):
    for stage in STAGES:
        local, docker = (stage_files(runs / "runs" / b / "stages" / stage / "working") for b in ("local", "docker"))
        assert local.keys() == docker.keys() and any(name.endswith("manifest.json") for name in local)
        assert [name for name in local if local[name] != docker[name]] == [], stage
    local, docker = (results(runs / "submissions" / b) for b in ("local", "docker"))
    assert "submission.csv" in local and local == docker


def test_no_gpu_was_asked_for(runs):
    commands = [line for line in (runs / "docker.stdout").read_text().splitlines() if line.startswith("$ docker run")]
    assert [c.split()[4].rsplit("-", 1)[0] for c in commands] == [f"iwc-{s}" for s in STAGES]
    assert not any("--gpus" in c for c in commands)


# --- the container's boundaries -----------------------------------------------------------------------------

PROBE = r'''
import json, os, pathlib, time
work = pathlib.Path("/kaggle/working")
try:
    pathlib.Path("/kaggle/input/competitions/probe/new.txt").write_text("x")
    wrote = "written"
except OSError as e:
    wrote = e.strerror
(work / "probe.json").write_text(json.dumps({"input": wrote, "env": sorted(os.environ)}))
while not (work / "go").exists():  # the test reads `docker inspect` meanwhile
    time.sleep(0.05)
'''

AS_USER = r'''
import json, os, sys
from pathlib import Path
from iwc.host.backends.base import KernelRun
from iwc.host.backends.docker import DockerBackend
from iwc.recipe import DEMO
from iwc.stages import stage_specs
SPECS = stage_specs(DEMO)
stage, kernel, data, image, uid, gid = sys.argv[1:]
job = KernelRun(SPECS["aggregate"], Path(kernel), {"competitions/probe": Path(data)}, Path(stage),
                env={"IWC_JOB_VAR": "job-own"})
backend = DockerBackend(image=image)
if int(uid) != os.getuid():  # drop root for good: a user with only the docker group
    os.setgroups([])
    os.setresgid(int(gid), int(gid), int(gid))
    os.setresuid(int(uid), int(uid), int(uid))
backend.run(job)
'''


def test_inputs_read_only_outputs_owned_by_the_invoker_and_no_host_env(image, engine):
    uid, gid = (PROBE_UID, _docker_gid()) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    top = Path(tempfile.mkdtemp(prefix="iwc-engine-probe-"))  # not under pytest's root-only tmp folder
    try:
        top.chmod(0o755)
        (top / "data").mkdir()
        (top / "data" / "train.json").write_text("{}")
        (top / "kernel").mkdir()
        (top / "kernel" / SPECS["aggregate"].code_file).write_text(PROBE)
        stage = top / "stage"
        stage.mkdir()
        os.chown(stage, uid, gid)
        name = container_name(KernelRun(SPECS["aggregate"], top / "kernel", {}, stage))
        proc = subprocess.Popen([sys.executable, "-c", AS_USER, str(stage), str(top / "kernel"), str(top / "data"),
                                 image, str(uid), str(gid)], env={**os.environ, **SECRET},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        env = _container_env(engine, name, proc)
        (stage / "working" / "go").touch()
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        probe = json.loads((stage / "working" / "probe.json").read_text())
        assert probe["input"] == "Read-only file system"
        assert not (top / "data" / "new.txt").exists()
        made = stage / "working" / "probe.json"
        assert (made.stat().st_uid, made.stat().st_gid) == (uid, gid)
        image_env = json.loads(subprocess.run([engine, "image", "inspect", "--format", "{{json .Config.Env}}", image],
                                              capture_output=True, text=True, check=True).stdout)
        job_env = {"IWC_JOB_VAR": "job-own", "IWC_SCRATCH_DIR": "/kaggle/scratch", "HOME": "/tmp",
                   "PYTHONUNBUFFERED": "1"}  # the job's own, and what the backend sets for any kernel
        assert dict(e.split("=", 1) for e in env) == {**dict(e.split("=", 1) for e in image_env), **job_env}
        assert not any(SECRET["KAGGLE_KEY"] in e for e in env)
        assert "KAGGLE_KEY" not in probe["env"] and "IWC_JOB_VAR" in probe["env"]
    finally:
        subprocess.run([engine, "rm", "--force", name], capture_output=True, check=False)
        shutil.rmtree(top, ignore_errors=True)


def _docker_gid() -> int:
    import grp

    return grp.getgrnam("docker").gr_gid


def _container_env(engine: str, name: str, proc: subprocess.Popen) -> list[str]:
    """`Config.Env` of container `name` once it exists (while `proc`, which starts it, runs)."""
    while proc.poll() is None:
        seen = subprocess.run([engine, "inspect", "--format", "{{json .Config.Env}}", name], capture_output=True,
                              text=True, check=False)
        if not seen.returncode:
            return json.loads(seen.stdout)
        time.sleep(0.1)
    pytest.fail(f"the probe ended before its container could be inspected: {proc.stdout.read()}")


# --- faults: each one line, then a rerun that resumes ---------------------------------------------------------


def test_faults_are_one_line_and_a_rerun_resumes(runs, image, engine, small_demo, tmp_path):
    data, shim = small_demo.root, _engine_stops_at("iwc-aggregate-", engine, tmp_path)
    stage = tmp_path / "runs" / "faults" / "stages"
    shutil.copytree(runs / "runs" / "docker" / "stages" / "crop", stage / "crop")  # done: the faults hit full

    missing = one_line_error(reproduce(tmp_path, data, "docker", "faults", {"IWC_DOCKER_IMAGE": "iwc:no-such-image"}))
    assert "Docker image iwc:no-such-image not found: build it with `invoke docker.build`" in missing

    oom = one_line_error(reproduce(tmp_path, data, "docker", "faults", {"IWC_DOCKER_IMAGE": image,
                                                                        "IWC_DOCKER_MEMORY": "64m"}))
    assert "out of memory" in oom and "137" in oom and "raise IWC_DOCKER_MEMORY" in oom and "rerun" in oom

    killed = _killed_mid_training(tmp_path, data, image, engine, stage / "full")
    assert "killed" in killed and "137" in killed and "rerun" in killed

    gone = one_line_error(reproduce(tmp_path, data, "docker", "faults", {"IWC_DOCKER_IMAGE": image,
                                                                         "PATH": f"{shim}:{os.environ['PATH']}"}))
    assert "the Docker engine does not answer" in gone and "start it" in gone
    assert json.loads((stage / "full" / "stage.json").read_text())["complete"]  # resumed after the kill

    done = reproduce(tmp_path, data, "docker", "faults", {"IWC_DOCKER_IMAGE": image})
    assert done.returncode == 0, done.stderr
    assert "stages run: aggregate; skipped (unchanged): full, crop" in done.stdout
    assert results(tmp_path / "submissions" / "faults") == results(runs / "submissions" / "docker")  # exact resume
    assert json.loads((stage / "full" / "stage.json").read_text())["attempts"] >= 3


def _killed_mid_training(work: Path, data: Path, image: str, engine: str, full: Path) -> str:
    """Start the run, `docker kill` the full stage's container once it has checkpointed; its one error line."""
    proc = reproduce(work, data, "docker", "faults", {"IWC_DOCKER_IMAGE": image}, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    name = container_name(KernelRun(SPECS["full"], full, {}, full))
    while proc.poll() is None and not (full / "working" / "full" / "checkpoint.pt").exists():
        time.sleep(0.1)
    subprocess.run([engine, "kill", name], capture_output=True, check=False)
    out, err = proc.communicate(timeout=600)
    return one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


def _engine_stops_at(word: str, engine: str, tmp: Path) -> Path:
    """A folder holding a `docker` that is the real CLI until a call names `word` (the aggregator's container),
    and from then on talks to no engine: what the CLI meets when the engine stops between two stages."""
    folder, stopped = tmp / "shim", tmp / "shim" / "stopped"
    folder.mkdir()
    script = folder / "docker"
    script.write_text(f'#!/bin/sh\ncase "$*" in *{word}*) touch {stopped};; esac\n'
                      f'[ -e {stopped} ] && export DOCKER_HOST=unix://{tmp}/no-engine.sock\nexec {engine} "$@"\n')
    script.chmod(0o755)
    return folder
