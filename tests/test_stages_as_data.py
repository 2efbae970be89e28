"""Stages as data, end to end: a recipe file that adds a model runs with no code change, and each stage reruns
exactly when the code its kernel runs (its import closure) changed.

Both run `iwc reproduce` as a user would, in a subprocess, on the small synthetic competition with the demo
recipe shrunk (`TINY`). The code-key test runs a COPY of the package (PYTHONPATH), so that editing
`iwc/report.py` there leaves this checkout alone.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_reproduce import TINY

from iwc.provenance import PACKAGE_DIR
from iwc.submission import validate_file

pytestmark = pytest.mark.slow

THIRD_MODEL = """\
base = "demo"

[models.crop2]  # a second crop network, cut wider
like = "crop"
arch = "resnet10t"
[models.crop2.crops]
margin = 0.1

[blend.weights]
crop = 0.35
crop2 = 0.35
"""


def iwc(cwd: Path, *args: str, package_parent: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if package_parent is not None:  # run the package copy there, not the installed one
        env["PYTHONPATH"] = str(package_parent)
    done = subprocess.run([sys.executable, "-m", "iwc.host.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def tiny(models: tuple[str, ...]) -> list[str]:
    """`--set` words shrinking every model of the run as TINY shrinks full and crop."""
    sets = {s.split(".", 1)[1] for s in TINY}
    return [w for m in models for s in sorted(sets) for w in ("--set", f"{m}.{s}")]


def stage_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("stages run:"))


def test_a_recipe_file_that_adds_a_third_model_runs_with_no_code_change(small_demo, tiny_run, tmp_path):
    recipe = tmp_path / "three.toml"
    recipe.write_text(THIRD_MODEL)
    tiny_run.copy(tmp_path / "runs" / "three")  # full and crop as the two-model recipe ran them
    done = iwc(tmp_path, "reproduce", "--demo", "--data", str(small_demo.root), "--recipe", str(recipe),
               *tiny(("full", "crop", "crop2")))
    # the added model leaves the others' keys alone: only it and the aggregator, which reads it, run
    assert stage_line(done.stdout) == "stages run: crop2, aggregate; skipped (unchanged): full, crop"
    kernels = tmp_path / "runs" / "three" / "kernels"
    assert sorted(p.name for p in kernels.iterdir()) == ["aggregate", "crop", "crop2", "full"]
    meta = json.loads((kernels / "aggregate" / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == [f"your-kaggle-username/iwc-{s}" for s in
                                      ("full-image-model", "crop-model", "crop2-model")]
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert rows == ["most frequent class (baseline)", "full: full-image model", "crop: crop model (no crop -> empty)",
                    "crop2: crop model (no crop -> empty)", "blend (full + crop + crop2)", "blend + sequence vote"]
    out = tmp_path / "submissions" / "three"
    sample = small_demo.competition_dir / "sample_submission.csv"
    categories = [c["id"] for c in json.loads((small_demo.competition_dir /
                                               "iwildcam2020_train_annotations.json").read_text())["categories"]]
    assert validate_file(out / "submission.csv", sample, categories) == []
    validation = pd.read_csv(out / "validation.csv")
    assert list(validation.columns) == ["Id", "full", "crop", "crop2", "blend", "final", "baseline", "truth",
                                        "location"]
    manifest = json.loads((tmp_path / "runs" / "three" / "stages" / "crop2" / "working" /
                           "crop2.manifest.json").read_text())
    assert manifest["recipe"]["models"]["crop2"]["crops"]["margin"] == 0.1
    assert (out / "crop2_training_curves.png").is_file()


def test_each_stage_reruns_exactly_when_the_code_its_kernel_runs_changed(small_demo, tiny_run, tmp_path):
    copy = tmp_path / "code"
    shutil.copytree(PACKAGE_DIR, copy / "iwc", ignore=shutil.ignore_patterns("__pycache__"))
    args = ("reproduce", "--demo", "--data", str(small_demo.root), *tiny(("full", "crop")))
    tiny_run.copy(tmp_path / "runs" / "demo")  # the same recipe, run by this checkout's package
    first = iwc(tmp_path, *args, package_parent=copy)
    # the copy's code is the same code: the key is of the sources, not of where they lie
    assert stage_line(first.stdout) == "stages run: none; skipped (unchanged): full, crop, aggregate"
    manifest = json.loads((tmp_path / "runs" / "demo" / "stages" / "full" / "working" /
                           "full.manifest.json").read_text())
    assert "train/fit.py" in manifest["code"]["files"] and "report.py" not in manifest["code"]["files"]

    with open(copy / "iwc" / "report.py", "a", encoding="utf-8") as f:
        f.write("# a cosmetic edit of the report\n")
    again = iwc(tmp_path, *args, package_parent=copy)
    assert stage_line(again.stdout) == "stages run: aggregate; skipped (unchanged): full, crop"



def test_an_edit_of_the_training_loop_changes_the_model_stages_keys_and_so_the_aggregators(small_demo):
    """What decides a rerun is the key (the run above shows it for the report): here, without retraining."""
    from iwc.host.pipeline import stage_keys
    from iwc.layout import find_resized
    from iwc.provenance import package_sources
    from iwc.recipe import DEMO
    from iwc.stages import stage_specs

    specs, sources = stage_specs(DEMO), package_sources()

    def keys(edited: dict[str, str]) -> dict[str, str]:
        return stage_keys(specs, DEMO, sources | edited, small_demo.competition_dir, find_resized(small_demo.root))

    before = keys({})
    for rel, rerun in (("train/fit.py", {"full", "crop", "aggregate"}), ("data/crops.py", {"crop", "aggregate"}),
                       ("report.py", {"aggregate"})):
        after = keys({rel: sources[rel] + "# an edit\n"})
        assert {s for s in specs if after[s] != before[s]} == rerun, rel
