"""`reproduce` around the kernels: the run lock, resume history, pre-flight, scratch clearing, atomic assembly.

The kernels are replaced by a fake backend that writes what each stage leaves behind in a moment, so
these tests exercise the pipeline's bookkeeping on the real synthetic competition without training.
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from iwc.data.competition import TRAIN_JSON
from iwc.data.issues import ISSUES_JSON, DataIssues
from iwc.errors import IwcError
from iwc.host import pipeline
from iwc.host.backends import Backend
from iwc.host.pipeline import reproduce
from iwc.insight import model_files
from iwc.io import sha256_file
from iwc.recipe import DEMO, load_recipe
from iwc.report import METRICS_JSON, VALIDATION, step_labels

RECIPE = load_recipe("demo")


class FakeBackend(Backend):
    """Writes each stage's outputs at once; `interrupt` / `fail` make the next run of a stage stop midway."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.interrupt: set[str] = set()
        self.fail: set[str] = set()
        self.bad_submission = False

    def run(self, job):
        stage = job.spec.name
        self.calls.append(stage)
        with open(job.log_path, "a", encoding="utf-8") as log:
            log.write(f"{stage} output of call {len(self.calls)}\n")
        if stage in self.interrupt:
            self.interrupt.discard(stage)
            raise KeyboardInterrupt
        if stage in self.fail:
            self.fail.discard(stage)
            raise IwcError(f"{stage} kernel failed")
        working = job.stage_dir / "working"
        working.mkdir(parents=True, exist_ok=True)
        if stage == "aggregate":
            self._aggregate(working)
        else:
            (working / stage).mkdir(exist_ok=True)
            (working / stage / "training_curves.png").write_bytes(b"png")
            (working / f"{stage}.manifest.json").write_text("{}")
        return working

    def _aggregate(self, working: Path) -> None:
        labels = step_labels(DEMO)
        predictions = pd.DataFrame({"Id": ["a", "b", "c", "d"], **{s: [0, 3, 3, 0] for s in labels}})
        for name in [*pipeline.COPIED, *(f for m in DEMO.models for f in model_files(m))]:
            (working / name).write_text("{}" if name.endswith(".json") else "x")
        metrics = {"steps": list(labels.items()), "accuracy": {VALIDATION: dict.fromkeys(labels, 0.75)},
                   "validation": {"images": 4, "locations": 1}}
        (working / METRICS_JSON).write_text(json.dumps(metrics))
        predictions.assign(truth=[0, 3, 0, 0], location=1).to_csv(working / "validation.csv", index=False)
        predictions.to_csv(working / "predictions.csv", index=False)
        DataIssues().save(working / ISSUES_JSON)
        (working / "submission.csv").write_text("Id,Category\na,0\n")
        sha = "0" * 64 if self.bad_submission else sha256_file(working / "submission.csv")
        (working / "manifest.json").write_text(json.dumps({"submission": {"sha256": sha}}))


def run(demo, tmp, backend, overrides=(), name="a", **kwargs):
    recipe = load_recipe("demo", list(overrides)) if overrides else RECIPE
    return reproduce(demo.root, recipe, tmp / "runs" / name, tmp / "submissions" / name, backend=backend, **kwargs)


def state(tmp, stage, name="a"):
    return json.loads((tmp / "runs" / name / "stages" / stage / "stage.json").read_text())


def test_a_second_process_on_the_same_run_folder_refuses_and_a_killed_holders_lock_is_taken_over(
        small_demo, tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom iwc.host.runlock import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n",
         str(tmp_path / "runs" / "a")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        backend = FakeBackend()
        with pytest.raises(IwcError) as e:
            run(small_demo, tmp_path, backend)
        msg = str(e.value)
        assert f"is in use by pid {holder.pid} on host" in msg and f"kill {holder.pid}" in msg and "--run" in msg
        assert "\n" not in msg
        assert backend.calls == [] and not (tmp_path / "runs" / "a" / "stages").exists()
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    result = run(small_demo, tmp_path, backend)  # the OS released the killed holder's lock
    assert result.ran == ["full", "crop", "aggregate"]
    assert f"taking over the lock of pid {holder.pid}" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "a" / "lock.json").exists()  # released on the way out


def test_an_interrupt_names_the_stage_it_stopped_and_those_not_yet_started(small_demo, tmp_path):
    backend = FakeBackend()
    backend.interrupt.add("full")  # the local backend runs full, then crop: crop never started
    with pytest.raises(KeyboardInterrupt) as interrupted:
        run(small_demo, tmp_path, backend)
    said = str(interrupted.value)
    assert f"stage full keeps its progress in {tmp_path / 'runs' / 'a' / 'stages' / 'full'}" in said
    assert "crop had not started" in said and "stage crop keeps" not in said


def test_an_interrupted_stage_resumes_with_its_history(small_demo, tmp_path, capsys):
    backend = FakeBackend()
    backend.interrupt.add("crop")
    with pytest.raises(KeyboardInterrupt) as interrupted:
        run(small_demo, tmp_path, backend)
    said = str(interrupted.value)
    assert "rerun the same command to resume" in said and str(Path("stages") / "crop") in said
    assert "full" not in said  # finished before the interrupt: nothing of it to resume
    assert state(tmp_path, "crop")["complete"] is False and state(tmp_path, "crop")["attempts"] == 1
    assert "running_since" not in state(tmp_path, "crop")  # the interrupted attempt's time was recorded

    backend.fail.add("crop")
    with pytest.raises(IwcError, match="crop kernel failed"):
        run(small_demo, tmp_path, backend)
    result = run(small_demo, tmp_path, backend)
    assert result.ran == ["crop", "aggregate"] and result.skipped == ["full"]
    assert "[crop] resuming an interrupted run (attempt 3)" in capsys.readouterr().out

    log = (tmp_path / "runs" / "a" / "stages" / "crop" / "log.txt").read_text().splitlines()
    assert [line.split(" at ")[0] for line in log if line.startswith("====")] == [
        "==== attempt 1", "==== attempt 2 (resuming)", "==== attempt 3 (resuming)"]
    assert sum("crop output of call" in line for line in log) == 3  # each attempt's output kept
    crop = state(tmp_path, "crop")
    assert crop["complete"] is True and crop["attempts"] == 3 and crop["seconds"] >= 0
    recorded = json.loads((result.submission_dir / "run.json").read_text())["stages"]
    assert recorded["crop"] == {"ran": True, "attempts": 3, "seconds": crop["seconds"], "runtime": {}}
    assert recorded["full"]["ran"] is False and recorded["full"]["attempts"] == 1
    assert "| crop | ran | 3 |" in (result.submission_dir / "report.md").read_text()


def test_a_host_killed_mid_stage_still_counts_the_attempt(small_demo, tmp_path, capsys):
    backend = FakeBackend()
    run(small_demo, tmp_path, backend)
    stage = tmp_path / "runs" / "a" / "stages" / "full"
    killed = {**state(tmp_path, "full"), "complete": False, "running_since": (stage / "log.txt").stat().st_mtime - 50}
    (stage / "stage.json").write_text(json.dumps(killed))
    run(small_demo, tmp_path, backend)
    full = state(tmp_path, "full")
    assert full["attempts"] == 2 and full["seconds"] >= 50


def test_changed_key_keeps_the_content_keyed_scratch_and_force_clears_all_of_it(small_demo, tmp_path):
    backend = FakeBackend()
    run(small_demo, tmp_path, backend)
    scratch = tmp_path / "runs" / "a" / "scratch"
    for sub in ("full", "crop", "crops", "other"):
        (scratch / sub).mkdir(parents=True)
        (scratch / sub / "cached").write_text("old")
    result = run(small_demo, tmp_path, backend, ["crop.crops.threshold=0.5"])
    assert result.ran == ["crop", "aggregate"]
    assert sorted(p.name for p in scratch.iterdir()) == ["crop", "crops", "full", "other"]
    result = run(small_demo, tmp_path, backend, ["crop.crops.threshold=0.5"], force=True)
    assert result.ran == ["full", "crop", "aggregate"] and not scratch.exists()
    assert state(tmp_path, "full")["attempts"] == 1  # a forced run starts the count afresh


def test_a_failed_assembly_leaves_the_previous_submission_untouched(small_demo, tmp_path):
    backend = FakeBackend()
    first = run(small_demo, tmp_path, backend)
    before = {p.name: p.read_bytes() for p in first.submission_dir.iterdir()}
    backend.bad_submission = True
    with pytest.raises(IwcError, match=r"does not match its manifest\.json"):
        run(small_demo, tmp_path, backend, ["blend.full_weight=0.5", "blend.crop_weight=0.5"])
    assert {p.name: p.read_bytes() for p in first.submission_dir.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "submissions").iterdir()) == ["a"]  # no temporary folder left
    backend.bad_submission = False
    again = run(small_demo, tmp_path, backend, ["blend.full_weight=0.4", "blend.crop_weight=0.6"])
    assert json.loads((again.submission_dir / "run.json").read_text())["recipe"]["blend"]["weights"]["full"] == 0.4


def _data_copy(demo, tmp: Path) -> Path:
    """A data folder of symlinks to the demo's, with a real competition folder whose entries can be changed."""
    root = tmp / "data"
    competition = root / demo.competition_dir.name
    competition.mkdir(parents=True)
    for entry in demo.competition_dir.iterdir():
        (competition / entry.name).symlink_to(entry)
    for entry in demo.root.iterdir():
        if entry != demo.competition_dir:
            (root / entry.name).symlink_to(entry)
    return root


def test_a_broken_competition_file_is_rejected_before_any_stage_runs(small_demo, tmp_path):
    root = _data_copy(small_demo, tmp_path)
    train = root / small_demo.competition_dir.name / TRAIN_JSON
    data = json.loads(train.read_text())
    data["images"][3]["location"] = "north"
    train.unlink()
    train.write_text(json.dumps(data))
    backend = FakeBackend()
    with pytest.raises(IwcError) as e:
        reproduce(root, RECIPE, tmp_path / "runs" / "a", tmp_path / "submissions" / "a", backend=backend)
    assert f"{train}: images[3]" in str(e.value) and "'location'" in str(e.value)
    assert backend.calls == []


def test_a_missing_image_folder_is_named_before_any_stage_runs(small_demo, tmp_path):
    root = _data_copy(small_demo, tmp_path)
    (root / small_demo.competition_dir.name / "test").unlink()
    backend = FakeBackend()
    with pytest.raises(IwcError, match=r"test is not a folder: the crop stage reads its images there"):
        reproduce(root, RECIPE, tmp_path / "runs" / "a", tmp_path / "submissions" / "a", backend=backend)
    assert backend.calls == []
