"""Hostile input, pipeline side (issue 16: items 1, 3, 4, 8, 21, 22): run names that are paths, run and
submission folders that overlap, stage outputs damaged after they finished, images changed in place or
dangling, relative weights files, empty image lists.

Table rows go through `test_hostile`'s own check (exit 2, one `iwc: error:` line naming the file or field, no
traceback, nothing on disk changed); what a row cannot express is a test of its own below. The stage mechanics
run on `test_pipeline_runs`' fake backend; one real small run (`test_reproduce`'s TINY recipe) shows the same
on the generated kernels.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import test_hostile
from test_hostile import Case, World, _reproduce, _snapshot, _text
from test_hostile import test_hostile_input_is_refused_in_one_line_and_changes_nothing as refused_in_one_line
from test_pipeline_runs import RECIPE, FakeBackend
from test_reproduce import TINY

from iwc.data.competition import TEST_JSON, TRAIN_JSON
from iwc.data.issues import file_problem
from iwc.errors import IwcError
from iwc.host.backends import KernelRun
from iwc.host.backends.kaggle import KaggleBackend
from iwc.host.pipeline import reproduce
from iwc.host.userpaths import resolve_weights
from iwc.io import folder_name_problem
from iwc.layout import RESIZED_MARKER
from iwc.probs import ProbTable
from iwc.recipe import load_recipe
from iwc.stages import stage_specs

world = test_hostile.world  # the fixture every case runs in


def _emptied(name: str, *keys: str):
    """Setup: the competition file `name` with each list `keys` emptied."""
    def setup(w: World) -> None:
        data = json.loads((w.comp / name).read_text(encoding="utf-8"))
        data.update({key: [] for key in keys})
        (w.comp / name).write_text(json.dumps(data), encoding="utf-8")
    return setup


CASES = [
    # 1: --run is one plain folder name, never a path
    Case("reproduce-run-dot", _reproduce("--run", "."), _text("argument --run: '.' must be a plain folder name")),
    Case("reproduce-run-parent", _reproduce("--run", "../x"), _text("--run: '../x' must be a plain folder name, not "
                                                                    "a path: it holds '/'")),
    Case("reproduce-run-absolute", _reproduce("--run", "/tmp/elsewhere"), _text("'/tmp/elsewhere' must be a plain")),
    Case("reproduce-run-backslash", _reproduce("--run", "a\\b"), _text("it holds '\\\\'")),
    Case("reproduce-run-300-chars", _reproduce("--run", "r" * 300), _text("it is 300 bytes long (at most 200)")),
    Case("reproduce-run-newline", _reproduce("--run", "a\nb"), _text("it holds '\\n'")),
    # 21: a weights file that is not there is named, resolved against the folder iwc runs in, before any stage
    Case("reproduce-relative-weights-missing", _reproduce("--set", "full.weights_file=w/none.safetensors"),
         lambda w: f"models.full.weights_file = w/none.safetensors ({w.root / 'w' / 'none.safetensors'}): no such "
                   "file"),
    Case("reproduce-absolute-weights-missing", _reproduce("--set", "crop.weights_file=/nowhere/w.safetensors"),
         _text("models.crop.weights_file = /nowhere/w.safetensors: no such file")),
    Case("reproduce-kaggle-relative-weights",
         _reproduce("--backend", "kaggle", "--dry-run", "--set", "full.weights_file=w.safetensors"),
         _text("models.full.weights_file = 'w.safetensors' is relative: on Kaggle give the file's absolute path")),
    # 22: empty image or annotation lists are named at pre-flight, with the file
    Case("reproduce-empty-test-list", _reproduce(), lambda w: f"{w.comp / TEST_JSON}: 'images' is an empty list, but "
                                                              "there is no test image to predict",
         setup=_emptied(TEST_JSON, "images")),
    Case("reproduce-empty-train-list", _reproduce(), lambda w: f"{w.comp / TRAIN_JSON}: 'images' is an empty list",
         setup=_emptied(TRAIN_JSON, "images", "annotations")),
    Case("reproduce-train-without-annotations", _reproduce(),
         lambda w: f"{w.comp / TRAIN_JSON}: 'annotations' is an empty list, but each training image needs one",
         setup=_emptied(TRAIN_JSON, "annotations")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_pipeline_input_is_refused_in_one_line(case, world, capsys, monkeypatch):
    refused_in_one_line(case, world, capsys, monkeypatch)
    if "-run-" in case.id or "-weights-" in case.id:  # refused before the run folder is made
        assert not (world.root / "runs").exists()


def test_recipe_names_and_run_names_share_one_check():
    assert folder_name_problem("demo-2", "--run") is None and folder_name_problem("é" * 100, "--run") is None
    for bad in ("", ".", "..", "a/b", "/abs", "a\0b", "x" * 201):
        assert folder_name_problem(bad, "--run").startswith("--run = ")
        with pytest.raises(IwcError, match=r"name = .* must be a plain folder name, not a path"):
            load_recipe("demo", [f"name={json.dumps(bad)}"])


# --- 1: the run and the submission folder never overlap, however they are given -------------------------


def _overlaps(tmp: Path) -> list[tuple[Path, Path]]:
    (tmp / "link").symlink_to(tmp / "runs", target_is_directory=True)
    return [(tmp / "runs" / "a", tmp / "runs" / "a"),  # the same folder
            (tmp / "runs" / "a", tmp / "runs" / "a" / "sub"),  # the submission inside the run
            (tmp / "runs" / "a" / "run", tmp / "runs" / "a"),  # the run inside the submission
            (tmp / "runs", tmp / "runs" / "a"),  # every run inside the submission (`--run .` through the API)
            (tmp / "runs" / "a", tmp / "link" / "a"),  # the same folder through a symlink
            (Path("runs/a"), tmp / "runs" / "a" / "x")]  # relative against absolute


def test_overlapping_run_and_submission_folders_are_refused_and_nothing_changes(small_demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = FakeBackend()
    reproduce(small_demo.root, RECIPE, tmp_path / "runs" / "a", tmp_path / "submissions" / "a", backend=backend)
    checkpoint = tmp_path / "runs" / "a" / "stages" / "full" / "working" / "full" / "checkpoint.pt"
    checkpoint.write_bytes(b"trained for hours")
    before = _snapshot(tmp_path)
    for run_dir, submission_dir in _overlaps(tmp_path):
        backend.calls.clear()
        with pytest.raises(IwcError) as e:
            reproduce(small_demo.root, RECIPE, run_dir, submission_dir, backend=backend)
        assert "overlap" in str(e.value) and "\n" not in str(e.value) and backend.calls == []
    (tmp_path / "link").unlink()
    assert _snapshot(tmp_path) == before


# --- 3: stage outputs are verified against their hashes; exactly the damaged stage runs again ---------------


class NpzBackend(FakeBackend):
    """The fake backend, with each model stage also writing its probability tables (bytes only)."""

    def run(self, job):
        working = super().run(job)
        if job.spec.model:
            for split in ("val", "test"):
                (working / f"{job.spec.name}_{split}.npz").write_bytes(b"PK" + bytes(200))
        return working


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


DAMAGE = {  # what is done to a finished run -> (the stage that must run again, what its line must say)
    "truncate-a-model-table": (lambda s: _truncate(s / "full" / "working" / "full_test.npz"),
                               "full", "full_test.npz: damaged"),
    "delete-a-model-working-folder": (lambda s: shutil.rmtree(s / "crop" / "working"), "crop", "working/: missing"),
    "edit-the-aggregate-submission": (
        lambda s: (s / "aggregate" / "working" / "submission.csv").write_text("Id,Category\na,3\n"),
        "aggregate", "submission.csv: damaged"),
    "delete-a-manifest": (lambda s: (s / "full" / "working" / "full.manifest.json").unlink(),
                          "full", "full.manifest.json: missing"),
    "add-a-file": (lambda s: (s / "crop" / "working" / "stray.txt").write_text("?"), "crop", "stray.txt: added"),
    "state-without-outputs": (lambda s: (s / "crop" / "stage.json").write_text(json.dumps(
        {**json.loads((s / "crop" / "stage.json").read_text()), "outputs": None})), "crop", "no record of its outputs"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_stage_output_reruns_exactly_that_stage_and_says_why(small_demo, tmp_path, capsys, damage):
    harm, stage, said = DAMAGE[damage]
    backend = NpzBackend()
    args = (small_demo.root, RECIPE, tmp_path / "runs" / "a", tmp_path / "submissions" / "a")
    reproduce(*args, backend=backend)
    stages = tmp_path / "runs" / "a" / "stages"
    recorded = json.loads((stages / stage / "stage.json").read_text())["outputs"]
    assert all(set(v) == {"sha256", "size"} for v in recorded.values()) and len(recorded) >= 2
    harm(stages)
    capsys.readouterr()
    result = reproduce(*args, backend=backend)
    out = capsys.readouterr().out
    assert result.ran == [stage] and backend.calls[-1:] == [stage]
    assert f"[{stage}] outputs changed since it finished ({said}" in out and "): running it again" in out
    assert f"[{stage}] unchanged" not in out
    again = reproduce(*args, backend=backend)  # now intact: nothing runs
    assert again.ran == []


class FakeKaggle:
    """A Kaggle client whose kernels finish at once; `pull` writes what `NpzBackend` writes."""

    owner = "tester"

    def __init__(self) -> None:
        self.pushed: list[str] = []
        self.pulled: list[str] = []
        self.local = NpzBackend()

    def push(self, kernel_dir: Path) -> int:
        self.pushed.append(kernel_dir.name)
        return 1

    def status(self, kernel: str, version: int) -> tuple[str, str]:
        return "COMPLETE", ""

    def wait(self, kernel: str, version: int, deadline_s: float, resume: str) -> None:
        pass

    def pull(self, kernel: str, version: int, working: Path) -> tuple[list[str], str]:
        stage = working.parent.name
        self.pulled.append(stage)
        self.local.run(KernelRun(stage_specs(RECIPE)[stage], working.parent / "kernel", {}, working.parent))
        return sorted(p.name for p in working.rglob("*")), "done\n"


def test_pulled_kaggle_outputs_are_verified_and_pulled_again_not_pushed(small_demo, tmp_path, capsys):
    client = FakeKaggle()
    args = (small_demo.root, RECIPE, tmp_path / "runs" / "a", tmp_path / "submissions" / "a")
    reproduce(*args, backend=KaggleBackend(client=client), owner=client.owner)
    assert sorted(client.pushed) == ["aggregate", "crop", "full"]
    _truncate(tmp_path / "runs" / "a" / "stages" / "full" / "working" / "full_val.npz")
    capsys.readouterr()
    result = reproduce(*args, backend=KaggleBackend(client=client), owner=client.owner)
    assert result.ran == ["full"] and "[full] outputs changed since it finished (full_val.npz: damaged)" in \
        capsys.readouterr().out
    assert len(client.pushed) == 3 and client.pulled[-1] == "full"  # the finished version pulled again, not pushed


def test_a_stage_output_missing_at_assembly_is_redone_by_the_next_run(small_demo, tmp_path):
    backend = FakeBackend()
    backend.bad_submission = True
    args = (small_demo.root, RECIPE, tmp_path / "runs" / "a", tmp_path / "submissions" / "a")
    with pytest.raises(IwcError) as e:
        reproduce(*args, backend=backend)
    assert "rerun the same command to run the aggregate stage again" in str(e.value)
    assert "--force" not in str(e.value) and "Kaggle" not in str(e.value) and "kernel" not in str(e.value)
    backend.bad_submission = False
    assert reproduce(*args, backend=backend).ran == ["aggregate"]


def test_a_truncated_probability_table_is_one_line(tmp_path):
    table = ProbTable(["a", "b"], [0, 3], [[0.5, 0.5], [0.1, 0.9]])
    table.save(tmp_path / "t.npz")
    _truncate(tmp_path / "t.npz")
    with pytest.raises(IwcError, match=r"t\.npz is unreadable \(.*\); delete it and rerun its stage") as e:
        ProbTable.load(tmp_path / "t.npz")
    assert "\n" not in str(e.value)


# --- 4 and 8: images changed in place, and dangling symlinks ------------------------------------------------


def _data_with_resized_copy(demo, tmp: Path) -> tuple[Path, Path]:
    """A data folder: the demo's competition folder linked, a real copy of its resized dataset (to change)."""
    root = tmp / "data"
    root.mkdir()
    (root / demo.competition_dir.name).symlink_to(demo.competition_dir, target_is_directory=True)
    resized = next(p for p in demo.root.iterdir() if (p / RESIZED_MARKER).is_dir())
    shutil.copytree(resized, root / resized.name)
    return root, root / resized.name / RESIZED_MARKER / "test" / "images"


def _rewrite_in_place(image: Path) -> None:
    """Damaged in place: the same size, other bytes, a later mtime."""
    data, st = image.read_bytes(), image.stat()
    image.write_bytes(data[:100] + bytes(len(data) - 100))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert image.stat().st_size == st.st_size


def _dangle(image: Path) -> None:
    """The image replaced by a symlink to nothing."""
    image.unlink()
    image.symlink_to(image.with_name("gone.jpg"))


@pytest.mark.parametrize("change", [_rewrite_in_place, _dangle], ids=["rewritten-in-place", "dangling-symlink"])
def test_a_test_image_changed_under_the_run_reruns_the_stage_that_reads_it(small_demo, tmp_path, change):
    root, images = _data_with_resized_copy(small_demo, tmp_path)
    backend = FakeBackend()
    args = (root, RECIPE, tmp_path / "runs" / "a", tmp_path / "submissions" / "a")
    reproduce(*args, backend=backend)
    image = sorted(images.iterdir())[0]
    change(image)
    result = reproduce(*args, backend=backend)
    assert result.ran == ["full", "aggregate"] and result.skipped == ["crop"]  # crop reads the originals only
    assert change is _rewrite_in_place or file_problem(image) == "missing"  # what the kernel records for it


# --- 21: weights files resolved on the host -----------------------------------------------------------------


def test_a_relative_weights_file_is_resolved_against_the_users_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "r50.safetensors").write_bytes(b"weights")
    recipe = load_recipe("demo", ["full.weights_file=w/r50.safetensors", "crop.weights_file=/abs/r50.safetensors"])
    with pytest.raises(IwcError, match=r"models\.crop\.weights_file = /abs/r50\.safetensors: no such file"):
        resolve_weights(recipe, remote=False)
    local = resolve_weights(load_recipe("demo", ["full.weights_file=w/r50.safetensors"]), remote=False)
    assert local.models["full"].weights_file == str(tmp_path / "w" / "r50.safetensors")
    assert local.models["crop"].weights_file == ""
    kaggle = resolve_weights(load_recipe("demo", ["full.weights_file=/kaggle/input/w/r50.safetensors"]), remote=True)
    assert kaggle.models["full"].weights_file == "/kaggle/input/w/r50.safetensors"  # a Kaggle path: kept, unchecked
    with pytest.raises(IwcError, match=r"models\.full\.weights_file = 'w/r50\.safetensors' is relative: on Kaggle"):
        resolve_weights(recipe, remote=True)


def test_the_resolved_weights_file_is_what_the_kernels_embed(small_demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r50.safetensors").write_bytes(b"weights")
    recipe = load_recipe("demo", ["full.weights_file=r50.safetensors"])
    result = reproduce(small_demo.root, recipe, tmp_path / "runs" / "a", tmp_path / "submissions" / "a",
                       backend=FakeBackend())
    used = json.loads((result.submission_dir / "run.json").read_text())["recipe"]["models"]["full"]
    assert used["weights_file"] == str(tmp_path / "r50.safetensors")
    kernel = (tmp_path / "runs" / "a" / "kernels" / "full" / "iwc_full.py").read_text()
    assert str(tmp_path / "r50.safetensors") in kernel


# --- 3, on the generated kernels: a real small run ------------------------------------------------------------


def test_a_real_run_reruns_exactly_the_damaged_stage_with_the_same_result(small_demo, tiny_run, tmp_path, capsys):
    recipe = load_recipe("demo", TINY)
    args = (small_demo.root, recipe, tmp_path / "runs" / "a", tmp_path / "submissions" / "a")
    tiny_run.copy(tmp_path / "runs" / "a", tmp_path / "submissions" / "a")  # `reproduce(*args)` as it first ran
    submission = tiny_run.submission
    stages = tmp_path / "runs" / "a" / "stages"
    table = stages / "full" / "working" / "full_test.npz"
    probs = ProbTable.load(table).probs
    _truncate(table)
    capsys.readouterr()
    again = reproduce(*args)
    assert again.ran == ["full"] and again.skipped == ["crop", "aggregate"]
    assert "[full] outputs changed since it finished (full_test.npz: damaged): running it again" in \
        capsys.readouterr().out
    assert (again.submission_dir / "submission.csv").read_bytes() == submission
    # on the CPU the same key gives the same predictions: why the aggregator, whose key is unchanged, need not rerun
    assert np.array_equal(ProbTable.load(table).probs, probs)
    (stages / "aggregate" / "working" / "submission.csv").write_text("Id,Category\n")
    third = reproduce(*args)
    assert third.ran == ["aggregate"] and (third.submission_dir / "submission.csv").read_bytes() == submission
