"""The session limit against the sandbox: a planned stop continues in a next version, a killed session keeps nothing.

Fake kernels show the Kaggle backend's loop and its bound; one real model kernel (the tiny demo recipe, on a fake
clock that makes each training batch last 100 s) stops after the first of its two epochs, is pushed again with
its own output attached, and ends with the weights of an uninterrupted run (the session's `tiny_run`).
"""

import json
import math

import pytest
import torch
from conftest import talk_to_sandbox
from test_kaggle_faults import fake_job
from test_reproduce import TINY

from iwc.data.competition import Competition
from iwc.data.splits import make_split
from iwc.errors import IwcError
from iwc.host.backends.base import KernelRun
from iwc.host.backends.kaggle import CONTINUED, KaggleBackend
from iwc.host.bundle import build_kernels
from iwc.host.kaggle_client import KaggleClient
from iwc.host.sandbox.server import Sandbox
from iwc.layout import find_competition
from iwc.recipe import load_recipe
from iwc.stages import stage_specs
from iwc.train.session import CLOCK_ENV, FORWARD_SHARE, margin, marker_name

OWNER = "tester"
# A fake model stage: the first session leaves a checkpoint and the marker; a session that finds them in its
# input (its own previous output) finishes. `always` stops every time.
STOPPING = """\
import os, pathlib
name, always = {name!r}, {always!r}
working = pathlib.Path(os.environ["IWC_WORKING_DIR"])
previous = list(pathlib.Path(os.environ["IWC_INPUT_ROOT"]).glob("notebooks/*/*/" + name + ".resume.json"))
(working / name).mkdir()
if previous and not always:
    (working / "result.txt").write_text("resumed from " + (previous[0].parent / name / "checkpoint.pt").read_text())
else:
    (working / name / "checkpoint.pt").write_text("epoch 1")
    (working / (name + ".resume.json")).write_text('{{"epochs_done": 1, "epochs": 2, "why": "fake"}}')
print("fake session ran", flush=True)
"""
SLEEPING = "import os, pathlib, time\n(pathlib.Path(os.environ['IWC_WORKING_DIR']) / 'early.txt').write_text('x')\n" \
           "print('started', flush=True)\ntime.sleep(60)\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("kaggle-session")


@pytest.fixture(scope="module")
def sandbox(small_demo, base):
    with Sandbox(small_demo.root, base / "sandbox", owner=OWNER) as sb:
        yield sb


@pytest.fixture
def env(sandbox, base, monkeypatch):
    talk_to_sandbox(monkeypatch, sandbox, base / "home")
    return sandbox


def backend(**kwargs) -> KaggleBackend:
    return KaggleBackend(KaggleClient(progress=False, poll_s=0.2, max_poll_s=1.0), deadline_s=600, **kwargs)


def scripted(base, name: str, script: str) -> KernelRun:
    job = fake_job(base, name)
    job.kernel_file.write_text(script)
    return job


def test_a_planned_stop_pushes_the_next_version_with_its_own_output_attached(env, base, capsys):
    job = scripted(base, "plan-stop", STOPPING.format(name="plan-stop", always=False))
    working = backend().run(job)
    assert (working / "result.txt").read_text() == "resumed from epoch 1"
    assert not (working / marker_name("plan-stop")).exists()
    first, second = (env.kernels.find(OWNER, job.spec.slug, f"v{n}") for n in (1, 2))
    assert first.request.get("kernelDataSources") in (None, [])  # the first session attaches nothing of its own
    assert second.request["kernelDataSources"] == [f"{OWNER}/{job.spec.slug}"]
    assert json.loads((job.stage_dir / CONTINUED / "kernel-metadata.json").read_text())["kernel_sources"] == [
        f"{OWNER}/{job.spec.slug}"]
    state = json.loads(job.state_path.read_text())
    assert (state["version"], state["continuations"], state["continues"]) == (2, 1, 1)
    assert "stopped before the session limit after 1 of 2 epochs: pushing the next version" in capsys.readouterr().out
    assert job.log_path.read_text().count("fake session ran") == 2  # both sessions' logs


def test_continuations_are_bounded_with_one_clear_error(env, base):
    job = scripted(base, "plan-loop", STOPPING.format(name="plan-loop", always=True))
    with pytest.raises(IwcError, match=r"version 2 stopped before its session limit after 1 of 2 epochs \(fake\), "
                                       r"and 1 versions have already continued it \(at most 1\)"):
        backend(max_continuations=1).run(job)


def test_a_session_killed_at_the_limit_keeps_no_output_and_the_backend_says_so(env, base):
    job = scripted(base, "killed", SLEEPING)
    env.inject("session_limit", match=job.spec.slug, seconds=2)
    with pytest.raises(IwcError) as failed:
        backend().run(job)
    message = str(failed.value)
    assert "ran past its session limit of 2 s" in message and "a killed session keeps no output" in message
    assert "pass a lower --session-limit" in message and "started" in message  # and the log's tail
    version = env.kernels.find(OWNER, job.spec.slug)
    assert version.status == "ERROR" and not list(version.working.iterdir())  # early.txt is gone
    assert not (job.stage_dir / "working").exists()


@pytest.mark.slow
def test_the_session_limit_stops_a_model_kernel_and_the_next_version_resumes_to_the_same_weights(
        env, small_demo, tiny_run, base, monkeypatch):
    recipe = load_recipe("demo", TINY)
    spec, m = stage_specs(recipe)["full"], recipe.models["full"]
    comp = Competition.load(find_competition(small_demo.root))
    is_val = make_split(comp.train, recipe.split, recipe.seed)
    batch_s = 100.0
    epoch_s = math.ceil((~is_val).sum() / m.batch_size) * batch_s
    predict_s = batch_s / m.batch_size * (is_val.sum() + len(comp.test)) * (1 + m.tta.views) * FORWARD_SHARE
    # usable: 1.5 epochs + the prediction: epoch 2 + prediction do not fit after epoch 1, and do in a new session
    limit = (1.5 * epoch_s + predict_s) / 0.9
    assert margin(limit) == pytest.approx(limit / 10)
    monkeypatch.setenv(CLOCK_ENV, f"batch:{batch_s:g}")  # the sandbox's kernels inherit this process's environment
    (kernel,) = build_kernels(base / "model" / "kernels", recipe, OWNER, ["full"], session_limit=limit)
    job = KernelRun(spec, kernel, {}, base / "model" / "stage")
    working = backend().run(job)

    first, second = (env.kernels.find(OWNER, spec.slug, f"v{n}") for n in (1, 2))
    assert json.loads((first.working / marker_name("full")).read_text())["epochs_done"] == 1
    log = job.log_path.read_text()
    assert "full: ETA: the stage ends in about" in log and "stopping before the session limit: epoch 2 of 2" in log
    assert "full: session 2: resuming from the checkpoint of session 1 (1 of 2 epochs done)" in log
    assert second.request["kernelDataSources"] == [f"{OWNER}/{spec.slug}"]
    assert (working / "full.manifest.json").is_file() and not (working / marker_name("full")).exists()

    uninterrupted = tiny_run.run_dir / "stages" / "full" / "working"  # the same recipe, run here in one go
    resumed, whole = (torch.load(w / "full" / "checkpoint.pt", weights_only=True) for w in (working, uninterrupted))
    assert resumed["model"].keys() == whole["model"].keys()
    assert all(torch.equal(resumed["model"][k], whole["model"][k]) for k in whole["model"])
    assert (working / "full_test.npz").read_bytes() == (uninterrupted / "full_test.npz").read_bytes()
