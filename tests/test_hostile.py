"""Hostile input, table-driven: every case is a user mistake or a broken file that `iwc` must refuse with exit
code 2, exactly one `iwc: error:` line naming the bad field or file, no traceback, and no change to anything
already on disk (the whole working folder is snapshotted byte for byte before and after).

Each case gets a fresh `World`: a copy of the small synthetic competition's metadata files (images are
symlinked, never copied), a valid predictions CSV and submission, and an existing submission folder. Stage and
reproduce cases all fail before any training starts.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from iwc import submission as submission_mod
from iwc.data.competition import MD_JSON, SAMPLE_CSV, TEST_JSON, TRAIN_JSON
from iwc.host.cli import main
from iwc.host.synth import DemoInfo
from iwc.layout import COMPETITION_SLUG, INPUT_ENV, WORKING_ENV
from iwc.submission import write_submission

ROOT = Path(__file__).resolve().parents[1]
HUGE = "99999999999999999999999"  # overflows int64
UINT64 = "18446744073709551615"  # would wrap to -1 as int64


@dataclass
class World:
    """Paths of one case's sandbox (all under `root`, which is also the working directory)."""

    root: Path
    data: Path  # a competition as Kaggle lays it out: <data>/iwildcam-2020-fgvc7 + <data>/iwildcam2020-256
    comp: Path
    sample: Path
    pred: Path  # valid predictions for every sample Id
    sub: Path  # a valid submission
    out: Path  # an existing submission folder (submission.csv + manifest.json)
    work: Path  # an empty working dir for `iwc stage`
    category: int  # a known, non-empty category id

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def csv(self, name: str, rows: dict[str, str], header: str = "Id,Category") -> Path:
        """The sample's Ids with Category set, except `rows` (Id position -> Category text)."""
        ids = pd.read_csv(self.sample, dtype=str)["Id"].tolist()
        lines = [header] + [f"{i},{rows.get(str(n), self.category)}" for n, i in enumerate(ids)]
        return self.write(name, "\n".join(lines) + "\n")


@pytest.fixture
def world(small_demo: DemoInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    demo_comp = small_demo.competition_dir
    data = tmp_path / "data"
    comp = data / COMPETITION_SLUG
    comp.mkdir(parents=True)
    for name in (TRAIN_JSON, TEST_JSON, MD_JSON, SAMPLE_CSV):
        shutil.copyfile(demo_comp / name, comp / name)
    for split in ("train", "test"):
        (comp / split).symlink_to(demo_comp / split, target_is_directory=True)
    resized = next(p for p in small_demo.root.iterdir() if (p / "256_images").is_dir())
    (data / resized.name).symlink_to(resized, target_is_directory=True)
    categories = json.loads((comp / TRAIN_JSON).read_text(encoding="utf-8"))["categories"]
    w = World(tmp_path, data, comp, comp / SAMPLE_CSV, tmp_path / "pred.csv", tmp_path / "sub.csv",
              tmp_path / "out", tmp_path / "work", max(int(c["id"]) for c in categories))
    w.csv("pred.csv", {})
    w.csv("sub.csv", {})
    sample = pd.read_csv(w.sample, dtype=str)
    write_submission(pd.read_csv(w.sub, dtype=str), w.out, {"predictions": w.pred}, sample=sample,
                     category_ids=[int(c["id"]) for c in categories])
    w.work.mkdir()
    monkeypatch.chdir(tmp_path)
    for name in (INPUT_ENV, WORKING_ENV):  # `iwc stage` sets them; restored after each case
        monkeypatch.setenv(name, "")
    return w


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes), folder and symlink under `root`, without following symlinks."""
    found: dict[str, bytes | str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "<dir>"
            else:
                found[rel] = path.read_bytes()
    return found


def _garble(name: str, text: bytes = b"{not json") -> Callable[[World], None]:
    return lambda w: (w.comp / name).write_bytes(text)


def _no_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up while the manifest is written (after the CSV)."""
    def full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(submission_mod, "write_json", full)


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder the user may not write into (simulated: the tests may run as root, who may write anywhere)."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))

    monkeypatch.setattr(submission_mod.tempfile, "mkdtemp", refuse)


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[World], list[str]]
    expect: Callable[[World], str]  # a text the error line must contain
    setup: Callable[[World], object] | None = None
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


def _validate(sub: Callable[[World], Path | str], *extra: str) -> Callable[[World], list[str]]:
    return lambda w: ["validate", str(sub(w)), "--sample", str(w.sample), *extra]


def _assemble(pred: Callable[[World], Path | str], out: Callable[[World], Path | str] = lambda w: w.root / "new"
              ) -> Callable[[World], list[str]]:
    return lambda w: ["assemble", str(pred(w)), "--sample", str(w.sample), "--out", str(out(w))]


def _recipe(*sets: str, recipe: str = "demo") -> Callable[[World], list[str]]:
    return lambda w: ["recipe", "--recipe", recipe, *[a for s in sets for a in ("--set", s)]]


def _stage(name: str, *extra: str, root: Callable[[World], Path] = lambda w: w.data) -> Callable[[World], list[str]]:
    return lambda w: ["stage", name, "--input-root", str(root(w)), "--working-dir", str(w.work), "--recipe", "demo",
                      *extra]


def _reproduce(*extra: str, data: Callable[[World], Path] = lambda w: w.data) -> Callable[[World], list[str]]:
    return lambda w: ["reproduce", "--data", str(data(w)), "--recipe", "demo", "--run", "hostile", *extra]


def _text(s: str) -> Callable[[World], str]:
    return lambda w: s


STAGE_TOML = 'base = "demo"\n[[full.stages]]\nepochs = 2\nlr_lo = 1e-3\n'

CASES = [
    # --- iwc validate ---------------------------------------------------------------------------------------
    Case("validate-dir", _validate(lambda w: w.root), lambda w: f"{w.root} is a directory; expected a CSV file"),
    Case("validate-missing", _validate(lambda w: w.root / "nope.csv"), _text("nope.csv: no such file")),
    Case("validate-sample-missing", lambda w: ["validate", str(w.sub), "--sample", "nope.csv"],
         _text("--sample nope.csv: no such file")),
    Case("validate-sample-dir", lambda w: ["validate", str(w.sub), "--sample", str(w.comp)],
         lambda w: f"--sample {w.comp} is a directory"),
    Case("validate-binary", _validate(lambda w: w.write("bin.csv", b"\xff\xfe\x00\x81garbage")),
         _text("bin.csv is not a readable CSV")),
    Case("validate-empty", _validate(lambda w: w.write("empty.csv", b"")), _text("empty.csv is not a readable CSV")),
    Case("validate-header", _validate(lambda w: w.csv("h.csv", {}, header="id,category")),
         _text("header is 'id,category'")),
    Case("validate-huge-category", _validate(lambda w: w.csv("huge.csv", {"3": HUGE})),
         _text(f"outside the 64-bit integer range (e.g. '{HUGE}')")),
    Case("validate-uint64-category", _validate(lambda w: w.csv("u64.csv", {"0": UINT64})),
         _text(f"(e.g. '{UINT64}')")),
    Case("validate-float-category", _validate(lambda w: w.csv("f.csv", {"1": "3.0"})),
         _text("not integers (e.g. '3.0')")),
    Case("validate-unknown-category", _validate(lambda w: w.csv("u.csv", {"1": "99999"})),
         _text("unknown ids (e.g. 99999)")),
    Case("validate-duplicate-ids",
         _validate(lambda w: w.write("d.csv", w.sub.read_text() + w.sub.read_text().splitlines()[1] + "\n")),
         _text("Ids appear more than once")),
    Case("validate-categories-not-json", _validate(lambda w: w.sub, "--categories", "cats.json"),
         _text("cats.json has no category list"), setup=lambda w: w.write("cats.json", "nope")),
    Case("validate-categories-missing", _validate(lambda w: w.sub, "--categories", "nowhere.json"),
         _text("no category list at nowhere.json")),
    Case("validate-sample-without-id", lambda w: ["validate", str(w.sub), "--sample", str(w.comp / SAMPLE_CSV)],
         _text("has no 'Id' column"), setup=_garble(SAMPLE_CSV, b"Image,Category\na,1\n")),
    # --- iwc assemble ---------------------------------------------------------------------------------------
    Case("assemble-out-is-a-file", _assemble(lambda w: w.pred, lambda w: w.sub), lambda w: f"{w.sub} is a file"),
    Case("assemble-out-below-a-file", _assemble(lambda w: w.pred, lambda w: w.sub / "x"),
         lambda w: f"cannot write the submission into {w.sub / 'x'}"),
    Case("assemble-out-read-only", _assemble(lambda w: w.pred, lambda w: w.out),
         lambda w: f"cannot write the submission into {w.out}: Permission denied", patch=_read_only),
    Case("assemble-disk-full-existing-out", _assemble(lambda w: w.pred, lambda w: w.out),
         lambda w: f"cannot write the submission into {w.out}: No space left on device", patch=_no_space),
    Case("assemble-disk-full-new-out", _assemble(lambda w: w.pred), _text("No space left on device"),
         patch=_no_space),
    Case("assemble-predictions-missing", _assemble(lambda w: "nope.csv"), _text("predictions nope.csv: no such file")),
    Case("assemble-predictions-dir", _assemble(lambda w: w.root), lambda w: f"predictions {w.root} is a directory"),
    Case("assemble-predictions-short", _assemble(lambda w: w.write("short.csv", "Id,Category\n")),
         _text("sample Ids have no prediction")),
    Case("assemble-huge-category", _assemble(lambda w: w.csv("huge.csv", {"2": HUGE})),
         _text(f"outside the 64-bit integer range (e.g. '{HUGE}')")),
    Case("assemble-uint64-category", _assemble(lambda w: w.csv("u64.csv", {"2": UINT64})), _text(f"'{UINT64}'")),
    Case("assemble-duplicate-ids",
         _assemble(lambda w: w.write("d.csv", w.pred.read_text() + w.pred.read_text().splitlines()[1] + "\n")),
         _text("Ids appear more than once")),
    Case("assemble-text-category", _assemble(lambda w: w.csv("t.csv", {"0": "cat"})),
         _text("not integers (e.g. 'cat')")),
    Case("assemble-unknown-category", _assemble(lambda w: w.csv("u.csv", {"0": "99999"})),
         _text("unknown ids (e.g. 99999)")),
    Case("assemble-binary-predictions", _assemble(lambda w: w.write("bin.csv", b"\xff\xfe\x00\x81")),
         _text("bin.csv is not a readable CSV")),
    Case("assemble-sample-bad-header", _assemble(lambda w: w.pred), _text(SAMPLE_CSV),
         setup=_garble(SAMPLE_CSV, b"Image,Label\na,1\n")),
    # --- iwc recipe (the reported cases, then files) --------------------------------------------------------
    Case("recipe-batch-size-0", _recipe("full.batch_size=0"), _text("models.full.batch_size = 0 must be > 0")),
    Case("recipe-negative-epochs", _recipe("full.stages.1.epochs=-8"),
         _text("full.stages[1].epochs = -8 must be >= 1")),
    Case("recipe-zero-epochs", _recipe("crop.stages.0.epochs=0", "crop.stages.1.epochs=0"),
         _text("crop.stages[0].epochs = 0 must be >= 1")),
    Case("recipe-image-size-0", _recipe("crop.image_size=0"), _text("crop.image_size = 0 must be > 0")),
    Case("recipe-stage-table-missing-fields", lambda w: ["recipe", "--recipe", str(w.write("short.toml", STAGE_TOML))],
         _text("full.stages[0] is missing lr_hi, frozen")),
    Case("recipe-crops-rule", _recipe("crop.crops.rule=bogus"),
         _text("models.crop.crops.rule = 'bogus' must be one of 'best', 'all'")),
    Case("recipe-arch", _recipe("full.arch=nosuchnet"), _text("full.arch = 'nosuchnet' is not a timm architecture")),
    Case("recipe-vote", _recipe("sequences.vote=majorty"), _text("sequences.vote = 'majorty' must be one of")),
    Case("recipe-gap", _recipe("sequences.gap_s=-5"), _text("sequences.gap_s = -5.0 must be in (0, 3.1536e+07]")),
    Case("recipe-no-stages", _recipe("full.stages=[]"), _text("full.stages = [] must hold at least one stage")),
    Case("recipe-threshold", _recipe("crop.crops.threshold=1.5"),
         _text("models.crop.crops.threshold = 1.5 must be in [0, 1)")),
    Case("recipe-cache-smaller", _recipe("full.cache_size=32"),
         _text("full.cache_size = 32 must be >= models.full.image_size")),
    Case("recipe-file-not-toml", lambda w: ["recipe", "--recipe", str(w.write("bad.toml", "[full\nx="))],
         _text("bad.toml: cannot parse")),
    Case("recipe-file-missing", _recipe(recipe="nowhere.toml"), _text("'nowhere.toml' is neither a named recipe")),
    Case("recipe-unknown-key", lambda w: ["recipe", "--recipe", str(w.write("k.toml", "[full]\nbatchsize = 3\n"))],
         _text("unknown key(s) ['batchsize'] in models.full")),
    Case("recipe-one-stage-of-no-epochs", _recipe("full.stages.0.epochs=0"),  # issue 16 item 7: no total_steps 0
         _text("models.full.stages[0].epochs = 0 must be >= 1")),
    Case("recipe-gap-overflows", _recipe("sequences.gap_s=1e300"),  # item 7: no OverflowError in the vote
         _text("sequences.gap_s = 1e+300 must be in (0, 3.1536e+07]")),
    Case("recipe-base-a-list", lambda w: ["recipe", "--recipe", str(w.write("l.toml", 'base = ["demo"]\n'))],
         _text("base = ['demo'] must be the name of a recipe")),  # item 11: no TypeError unhashable
    Case("recipe-base-a-table", lambda w: ["recipe", "--recipe", str(w.write("t.toml", "base = {a = 1}\n"))],
         _text("base = {'a': 1} must be the name of a recipe")),
    Case("recipe-bad-base", lambda w: ["recipe", "--recipe", str(w.write("b.toml", 'base = "fast"\n'))],
         _text("base = 'fast' must be the name of a recipe")),
    # --- iwc stage: all fail before training --------------------------------------------------------------------
    Case("stage-bad-recipe", _stage("full", "--set", "full.batch_size=0"),
         _text("models.full.batch_size = 0 must be > 0")),
    Case("stage-no-input-root", _stage("full", root=lambda w: w.root / "nowhere"), _text("is not a folder")),
    Case("stage-garbled-train-json", _stage("full"), _text(f"{TRAIN_JSON}: not valid JSON"), setup=_garble(TRAIN_JSON)),
    Case("stage-garbled-test-json", _stage("crop"), _text(f"{TEST_JSON}: not valid JSON"), setup=_garble(TEST_JSON)),
    Case("stage-missing-sample", _stage("full"), _text(f"lacks {SAMPLE_CSV}"),
         setup=lambda w: (w.comp / SAMPLE_CSV).unlink()),
    Case("stage-no-resized-dataset", _stage("full"), _text("the resized image dataset not found and "),
         setup=lambda w: (next(p for p in w.data.iterdir() if p.is_symlink()).unlink(),
                          (w.comp / "train").unlink())),  # no originals either: else it reads them (issue 13)
    Case("stage-garbled-megadetector", _stage("crop"), _text(MD_JSON), setup=_garble(MD_JSON)),
    Case("stage-aggregate-without-upstream", _stage("aggregate"), _text("upstream kernel output")),
    Case("stage-unknown-name", _stage("bogus"),
         _text("stage 'bogus' is not a stage of recipe 'demo': choose one of full, crop, aggregate")),
    # --- iwc reproduce: all fail before any stage starts -------------------------------------------------------
    Case("reproduce-no-data", _reproduce(data=lambda w: w.root / "nowhere"), _text("nowhere is not a folder")),
    Case("reproduce-unknown-backend", _reproduce("--backend", "cloud"), _text("invalid choice: 'cloud'")),
    Case("reproduce-bad-recipe", _reproduce("--set", "sequences.gap_s=-5"),
         _text("sequences.gap_s = -5.0 must be in (0, 3.1536e+07]")),
    Case("reproduce-garbled-test-json", _reproduce(), _text(f"{TEST_JSON}: not valid JSON"), setup=_garble(TEST_JSON)),
    Case("reproduce-bad-sample", _reproduce(), _text(SAMPLE_CSV), setup=_garble(SAMPLE_CSV, b"Image,Label\na,1\n")),
    Case("reproduce-no-train-images", _reproduce(), _text("is not a folder: the crop stage reads its images"),
         setup=lambda w: (w.comp / "train").unlink()),
    Case("reproduce-bad-seed", _reproduce("--seed", "abc"), _text("argument --seed: invalid int value: 'abc'")),
]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse usage errors
        return int(e.code)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_in_one_line_and_changes_nothing(case, world, capsys, monkeypatch):
    if case.setup:
        case.setup(world)
    if case.patch:
        case.patch(monkeypatch)
    argv = case.argv(world)
    before = _snapshot(world.root)

    code = _run(argv)

    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in out + err
    assert "iwc: error:" not in out
    lines = [line for line in err.splitlines() if line.startswith("iwc: error:")]
    assert len(lines) == 1, err
    assert err.startswith("iwc: error:"), err
    assert case.expect(world) in err, err
    after = _snapshot(world.root)
    # reproduce may create its own run folder (lock, generated kernels) before the data check; nothing else
    assert {k: v for k, v in after.items() if not k.startswith("runs")} == before
    assert not any(k.startswith("submissions") for k in after)


def test_matrix_has_at_least_40_cases_across_every_command():
    commands = {c.id.split("-")[0] for c in CASES}
    assert commands == {"validate", "assemble", "recipe", "stage", "reproduce"}
    assert len(CASES) >= 40


def test_an_interruption_between_the_renames_lands_after_both(world, monkeypatch):
    """Ctrl-C during the commit is held until the CSV and its manifest are both in place."""
    import signal

    replace = os.replace
    calls = []

    def replace_then_interrupt(src, dst):
        replace(src, dst)
        if Path(dst).parent == world.out:  # the commit, not the temp files' own atomic writes
            calls.append(Path(dst).name)
            if len(calls) == 1:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(submission_mod.os, "replace", replace_then_interrupt)
    changed = pd.read_csv(world.sub, dtype=str).assign(Category="0")
    sample = pd.read_csv(world.sample, dtype=str)
    # Ctrl-C as a terminal delivers it, even when the tests were started with SIGINT ignored (in the background)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_submission(changed, world.out, {}, sample=sample, category_ids=[0, world.category])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == ["submission.csv", "manifest.json"]
    manifest = json.loads((world.out / "manifest.json").read_text())
    assert manifest["submission"]["category_histogram"] == {"0": len(sample)}
    assert sorted(p.name for p in world.out.iterdir()) == ["manifest.json", "submission.csv"]


SUBPROCESS_CASES = [c for c in CASES if c.id in {"validate-dir", "assemble-out-is-a-file", "recipe-gap"}]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_hostile_input_through_the_real_command(case, world):
    before = _snapshot(world.root)
    done = subprocess.run([sys.executable, "-m", "iwc.host.cli", *case.argv(world)], cwd=world.root,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.count("iwc: error:") == 1
    assert case.expect(world) in done.stderr
    assert _snapshot(world.root) == before


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    from iwc.host import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_recipe", interrupted)
    assert main(["recipe"]) == 130
    out, err = capsys.readouterr()
    assert err == "iwc: interrupted\n" and out == ""


INTERRUPTED_STAGE = """\
def main(recipe, name):
    raise KeyboardInterrupt
"""


@pytest.mark.parametrize(("stage_text", "bad_recipe", "code", "line"), [
    (INTERRUPTED_STAGE, False, 130, "interrupted"),
    ("def main(recipe, name):\n    pass\n", True, 2, "error: recipe: models.full.batch_size = 0 must be > 0"),
])
def test_kernels_follow_the_same_exit_codes(tmp_path, stage_text, bad_recipe, code, line):
    from iwc.host.bundle import package_sources, render_script
    from iwc.recipe import DEMO

    script = render_script("full", "iwc.stages.probe:main", DEMO, package_sources() | {"stages/probe.py": stage_text})
    if bad_recipe:  # a recipe edited by hand in the kernel file: the kernel checks it on load, as iwc does
        script = script.replace('"batch_size": 32', '"batch_size": 0', 1)
    path = tmp_path / "kernel.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "IWC_SCRATCH_DIR": str(tmp_path / "scratch")})
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines() == [line]
