"""`invoke reproduce`: build the kernels, run full + crop, then aggregate, and assemble `submissions/<run>/`.

Stage caching: each stage has a key (content hash of its recipe sections, the package code, its input
data and its upstream stages' keys). A rerun skips a stage whose key is unchanged and that finished; a
stage that was interrupted with the same key resumes in place (training continues from its checkpoint);
a changed key starts the stage afresh.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from iwc import layout
from iwc.data.competition import MD_JSON, SAMPLE_CSV, TEST_JSON, TRAIN_JSON
from iwc.errors import IwcError
from iwc.host.backends import Backend, KernelRun
from iwc.host.backends.local import LocalBackend
from iwc.host.bundle import DEFAULT_OWNER, build_kernels
from iwc.io import atomic_write, read_json_object, sha256_file, sha256_json, write_json
from iwc.provenance import code_hash
from iwc.recipe import Recipe
from iwc.report import STEPS, accuracies, accuracy_table, write_report
from iwc.stages import SPECS, STAGES

STATE_FILE = "stage.json"
COPIED = ("submission.csv", "manifest.json", "validation.csv", "predictions.csv", "confusion_matrix.png",
          "per_location.png")


@dataclass
class RunResult:
    submission_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # set name -> step -> accuracy
    table: str = ""


def reproduce(data_root: Path, recipe: Recipe, run_dir: Path, submission_dir: Path, *,
              truth: Path | None = None, force: bool = False, owner: str = DEFAULT_OWNER,
              backend: Backend | None = None) -> RunResult:
    """Run the three kernels locally on the data under `data_root` and assemble `submission_dir`.

    `truth` (an `Id,Category` CSV of test labels, known for the synthetic competition) adds test-set
    accuracy to the table. `force` reruns every stage. `backend` runs the kernels (default: here).
    """
    backend = backend or LocalBackend()
    try:
        competition = layout.find_competition(data_root)
        resized = layout.find_resized(data_root)
    except IwcError as e:
        raise IwcError(f"{e}\nFor a local run, put the competition files and the 256 px dataset under {data_root} "
                       "as Kaggle's downloads lay them out, or try `invoke reproduce --demo`.") from e
    run_dir, submission_dir = Path(run_dir).resolve(), Path(submission_dir).resolve()
    kernels = {Path(k).name: Path(k) for k in build_kernels(run_dir / "kernels", recipe, owner)}
    metadata = _fingerprint_files(competition, (TRAIN_JSON, TEST_JSON, MD_JSON, SAMPLE_CSV))
    keys = {
        "full": sha256_json([code_hash(), recipe.section_hash(*SPECS["full"].sections), metadata,
                             _fingerprint_listing(resized / layout.RESIZED_MARKER)]),
        "crop": sha256_json([code_hash(), recipe.section_hash(*SPECS["crop"].sections), metadata,
                             _fingerprint_listing(competition / "train"), _fingerprint_listing(competition / "test")]),
    }
    keys["aggregate"] = sha256_json([code_hash(), recipe.section_hash(*SPECS["aggregate"].sections), metadata,
                                     keys["full"], keys["crop"]])
    data_inputs = {f"competitions/{layout.COMPETITION_SLUG}": competition,
                   f"datasets/{layout.RESIZED_DATASET}": resized}
    env = {layout.SCRATCH_ENV: str(run_dir / "scratch")}
    result = RunResult(submission_dir)
    for stage in STAGES:
        spec = SPECS[stage]
        inputs = dict(data_inputs)
        for upstream in spec.upstream:
            inputs[f"notebooks/{owner}/{SPECS[upstream].slug}"] = run_dir / "stages" / upstream / "working"
        job = KernelRun(spec, kernels[stage], inputs, run_dir / "stages" / stage, env)
        ran = _run_stage(backend, job, keys[stage], force)
        (result.ran if ran else result.skipped).append(stage)
    _assemble(run_dir / "stages", submission_dir, recipe, truth, keys, result)
    return result


def _run_stage(backend: Backend, job: KernelRun, key: str, force: bool) -> bool:
    """Run one kernel unless it already finished with this key; returns whether it ran."""
    stage, stage_dir = job.spec.name, job.stage_dir
    state_path = stage_dir / STATE_FILE
    state = read_json_object(state_path)
    if not force and state.get("key") == key and state.get("complete"):
        print(f"[{stage}] unchanged (key {key[:12]}): skipped")
        return False
    if force or state.get("key") != key:
        shutil.rmtree(stage_dir / "working", ignore_errors=True)  # a different key: nothing to resume
    else:
        print(f"[{stage}] resuming an interrupted run")
    write_json(state_path, {"key": key, "complete": False})
    print(f"[{stage}] running {job.spec.code_file} ({backend.name})")
    backend.run(job)
    write_json(state_path, {"key": key, "complete": True})
    return True


def _assemble(stages: Path, out: Path, recipe: Recipe, truth: Path | None, keys: dict[str, str],
              result: RunResult) -> None:
    """Copy the aggregator's outputs and both training curves into `out`; write report.md."""
    aggregate = stages / "aggregate" / "working"
    for name in COPIED:
        _copy(aggregate / name, out / name)
    for stage in ("full", "crop"):
        _copy(stages / stage / "working" / stage / "training_curves.png", out / f"{stage}_training_curves.png")
    validation = pd.read_csv(out / "validation.csv", dtype={"Id": str})
    result.accuracy["validation (held-out locations)"] = accuracies(
        {s: validation[s].to_numpy() for s in STEPS}, validation["truth"].to_numpy())
    if truth is not None:
        result.accuracy["test"] = _test_accuracy(pd.read_csv(out / "predictions.csv", dtype={"Id": str}), truth)
    result.table = accuracy_table(result.accuracy)
    write_json(out / "run.json", {"recipe": recipe.to_dict(), "stage_keys": keys, "ran": result.ran,
                                  "skipped": result.skipped, "accuracy": result.accuracy})
    write_report(out / "report.md", f"iwc run {out.name!r} (recipe {recipe.name!r})", [
        ("Accuracy", result.table),
        ("Training curves", "![full model](full_training_curves.png)\n\n![crop model](crop_training_curves.png)"),
        ("Final predictions on validation", "![confusion matrix](confusion_matrix.png)\n\n"
                                            "![accuracy per location](per_location.png)"),
        ("Files", "`submission.csv` (validated against the sample), `manifest.json` (hashes, code version), "
                  "`validation.csv` / `predictions.csv` (each step's predictions), `run.json` (stage keys)."),
    ])


def _test_accuracy(predictions: pd.DataFrame, truth_csv: Path) -> dict[str, float]:
    truth = pd.read_csv(truth_csv, dtype={"Id": str}).set_index("Id")["Category"]
    missing = ~predictions["Id"].isin(truth.index)
    if missing.any():
        raise IwcError(f"{truth_csv} lacks labels for {int(missing.sum())} predicted test images; "
                       "pass the ground truth of this data set")
    labels = truth.loc[predictions["Id"]].to_numpy()
    return accuracies({s: predictions[s].to_numpy(np.int64) for s in STEPS}, labels)


def _copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise IwcError(f"expected stage output {src} is missing; rerun with --force")
    with open(src, "rb") as f, atomic_write(dst, "wb") as g:
        shutil.copyfileobj(f, g)



def _fingerprint_files(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in names}


def _fingerprint_listing(folder: Path) -> str:
    """Hash of (name, size) of every file in `folder`, recursively: cheap, and changes when the data do."""
    entries = []
    for dirpath, _, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        entries.extend((rel, f, os.path.getsize(os.path.join(dirpath, f))) for f in files)
    return sha256_json(sorted(entries))
