"""`invoke reproduce`: build the kernels, run every model's stage, then the aggregator, and assemble
`submissions/<run>/`. The stages come from the recipe (`iwc.stages.stage_specs`).

Stage caching: each stage has a key (content hash of its recipe sections, the code its kernel runs (the
import closure of its module), its input data and its upstream stages' keys). A rerun skips a stage whose
key is unchanged and that finished; a
stage that was interrupted with the same key resumes in place (training continues from its checkpoint);
a changed key starts the stage afresh (its image caches and crops in the run's scratch are content-keyed, so
what is still valid is reused); `force` reruns every stage and clears the whole run's scratch.

Around that: one run at a time per run folder (`runlock`); the competition files the pending stages read
are checked here, with the kernels' own readers, before anything trains (`preflight`; of the MegaDetector file its
structure, which is all that can reject it: its boxes are read once, by the crop stage); a resumed stage
appends to its log under a marked restart line and counts attempts and seconds across attempts (in
`stage.json` and `run.json`); `submissions/<run>/` is assembled beside itself and swapped into place, so a
failure leaves the previous one as it was.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from iwc import layout
from iwc.data.competition import MD_JSON, SAMPLE_CSV, TEST_JSON, TRAIN_JSON, Competition, check_megadetector
from iwc.data.issues import ISSUES_JSON, DataIssues
from iwc.errors import IwcError
from iwc.host import outputs
from iwc.host.backends import Backend, KernelRun
from iwc.host.backends.local import LocalBackend
from iwc.host.bundle import DEFAULT_OWNER, build_kernels
from iwc.host.runlock import run_lock
from iwc.host.submitted import RECORD as SUBMITTED
from iwc.host.userpaths import check_apart, resolve_weights
from iwc.insight import model_files
from iwc.io import atomic_write, read_json_object, replacing_folder, sha256_file, sha256_json, write_json, write_text
from iwc.provenance import closure_sources, hash_sources, package_sources
from iwc.recipe import Recipe
from iwc.report import METRICS_JSON, accuracies, accuracy_table, report_markdown
from iwc.stages import AGGREGATE, StageSpec, reading_originals, stage_specs

STATE_FILE = "stage.json"
COPIED = ("submission.csv", "manifest.json", "validation.csv", "predictions.csv", METRICS_JSON,
          "confusion_matrix.png", "confusion_matrix.csv", "per_location.png", ISSUES_JSON)


@dataclass
class RunResult:
    submission_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # set name -> step -> accuracy
    table: str = ""
    stages: dict[str, dict] = field(default_factory=dict)  # stage -> {"ran", "attempts", "seconds"}


def reproduce(data_root: Path, recipe: Recipe, run_dir: Path, submission_dir: Path, *,
              truth: Path | None = None, force: bool = False, owner: str = DEFAULT_OWNER,
              backend: Backend | None = None, gpus: int | None = None) -> RunResult:
    """Run every stage's kernel (`backend`) on the data under `data_root` and assemble `submission_dir`.

    `truth` (an `Id,Category` CSV of test labels, known for the synthetic competition) adds test-set
    accuracy to the table. `force` reruns every stage. `backend` runs the kernels (default: here).
    `gpus` > 1 trains each model stage in that many processes (torchrun, one GPU each; None: each model kernel
    trains on every GPU it counts, `iwc.train.launch`); it is not part of the stage keys, and a stage
    interrupted under another number of GPUs refuses to resume (`--force`).
    Raises `IwcError` at once when another process works in `run_dir`, or when a competition file that a
    stage to run reads is broken. On Ctrl-C the running kernel is stopped, the stage's state is kept, and
    rerunning the same command resumes it.
    """
    backend = backend or LocalBackend()
    remote = backend.attaches_inputs  # it attaches Kaggle's copies: only metadata is here
    check_apart(run_dir, submission_dir)
    recipe = resolve_weights(recipe, remote)
    try:
        competition = layout.find_competition(data_root)
        resized = None if remote else layout.find_resized(data_root, required=False)
    except IwcError as e:
        raise IwcError(f"{e}\nFor a local run, put the competition files (and the 256 px dataset, if you have "
                       f"it) under {data_root} as Kaggle's downloads lay them out, or try "
                       "`invoke reproduce --demo`.") from e
    shown_run_dir = Path(run_dir)
    run_dir, submission_dir = Path(run_dir).resolve(), Path(submission_dir).resolve()
    specs = stage_specs(recipe) if remote or resized else reading_originals(stage_specs(recipe))
    sources = package_sources()
    keys = stage_keys(specs, recipe, sources, competition, resized, remote)
    data_inputs = {} if remote else {f"competitions/{layout.COMPETITION_SLUG}": competition,
                                     **({f"datasets/{layout.RESIZED_DATASET}": resized} if resized else {})}
    scratch = run_dir / "scratch"
    env = {layout.SCRATCH_ENV: str(scratch)}
    result = RunResult(submission_dir)
    with run_lock(run_dir):
        if force:
            shutil.rmtree(scratch, ignore_errors=True)
        kernels = {Path(k).name: Path(k) for k in build_kernels(run_dir / "kernels", recipe, owner, sources=sources,
                                                                    session_limit=backend.session_limit,
                                                                    gpus=gpus)}
        plans = {s: _plan(run_dir / "stages" / s, keys[s], force) for s in specs}
        pending = [s for s in specs if plans[s][0] != "skip"]
        preflight(competition, resized, [specs[s] for s in pending], remote)
        jobs = {}
        for stage, spec in specs.items():
            inputs = dict(data_inputs)
            for upstream in spec.upstream:
                inputs[f"notebooks/{owner}/{specs[upstream].slug}"] = run_dir / "stages" / upstream / "working"
            jobs[stage] = KernelRun(spec, kernels[stage], inputs, run_dir / "stages" / stage, env,
                                    processes=gpus if spec.gpu else 1)
        for wave in _waves(specs):
            try:
                states = _run_wave(backend, [jobs[stage] for stage in wave], keys, plans)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(_interrupted(run_dir, shown_run_dir, wave, keys)) from None
            for stage in wave:
                result.stages[stage] = {**states[stage], "runtime": _kernel_runtime(run_dir / "stages" / stage)}
                (result.ran if states[stage]["ran"] else result.skipped).append(stage)
        _assemble(run_dir / "stages", submission_dir, recipe, truth, keys, result)
    return result


def stage_keys(specs: Mapping[str, StageSpec], recipe: Recipe, sources: Mapping[str, str], competition: Path,
               resized: Path | None, remote: bool | None = None) -> dict[str, str]:
    """Each stage's cache key: a hash of the code its kernel runs (its module's import closure in `sources`),
    its recipe sections, the competition files and images it reads, and its upstream stages' keys.

    `remote` (default: `resized` is None): the backend attaches Kaggle's fixed copies of the images, whose names
    stand for them. A local run without the resized dataset passes `resized` None, `remote` False."""
    remote = resized is None if remote is None else remote
    listings: dict[str, list[str]] = {}

    def images(kind: str) -> list[str]:
        if kind not in listings:
            if remote:
                listings[kind] = [{"resized": layout.RESIZED_DATASET, "originals": layout.COMPETITION_SLUG}[kind]]
            else:
                folders = ([resized / layout.RESIZED_MARKER] if kind == "resized"
                           else [competition / "train", competition / "test"])
                listings[kind] = [_fingerprint_listing(folder) for folder in folders]
        return listings[kind]

    keys: dict[str, str] = {}
    for name, spec in specs.items():  # in run order: upstream stages first
        keys[name] = sha256_json([
            hash_sources(closure_sources(spec.module, sources)),
            recipe.section_hash(*spec.sections),
            _fingerprint_files(competition, _metadata_files(spec)),
            *[listing for kind in spec.reads if kind != "detections" for listing in images(kind)],
            *[keys[upstream] for upstream in spec.upstream],
        ])
    return keys


def preflight(competition: Path, resized: Path | None, stages: Iterable[StageSpec], remote: bool | None = None) -> None:
    """Check what `stages` will read, before any of them runs: their image folders exist, and the competition
    files they read pass the kernels' own readers. A problem is an `IwcError` quoting the user's path.
    `remote` (default: `resized` is None): the backend attaches the images itself (Kaggle), so no image folder
    is checked here."""
    stages = list(stages)
    if not stages:
        return
    remote = resized is None if remote is None else remote
    folders = {} if remote else {"originals": [competition / split for split in ("train", "test")], **(
        {"resized": [resized / layout.RESIZED_MARKER / split / "images" for split in ("train", "test")]}
        if resized else {})}
    for spec in stages if folders else ():
        for kind in set(spec.reads) & set(folders):
            for folder in folders[kind]:
                if not folder.is_dir():
                    raise IwcError(f"{folder} is not a folder: the {spec.name} stage reads its images there; lay the "
                                   "data out as Kaggle's downloads do (the competition folder with train/ and test/, "
                                   "the resized dataset with 256_images/<split>/images/)")
    print(f"checking the competition files in {competition} ...")
    Competition.load(competition)
    if any("detections" in spec.reads for spec in stages):  # its structure; the boxes are the crop stage's to read
        check_megadetector(competition / MD_JSON)


def _waves(specs: Mapping[str, StageSpec]) -> list[list[str]]:
    """The stages in groups, each needing only stages of earlier groups (e.g. [full, crop], [aggregate])."""
    waves: list[list[str]] = []
    done: set[str] = set()
    while len(done) < len(specs):
        waves.append([s for s, spec in specs.items() if s not in done and set(spec.upstream) <= done])
        done.update(waves[-1])
    return waves


def _run_wave(backend: Backend, jobs: list[KernelRun], keys: dict[str, str], plans: dict[str, tuple[str, str]]
              ) -> dict[str, dict]:
    """Run one wave's stages (`_run_stage`): at the same time when the backend is `parallel`, else in turn.

    In parallel, every stage is seen to its end before the first failure is raised, so a stage that
    succeeds beside a failing one is kept. Returns `{stage: its state}`.
    """
    if len(jobs) < 2 or not backend.parallel:
        return {job.spec.name: _run_stage(backend, job, keys[job.spec.name], plans[job.spec.name]) for job in jobs}
    states: dict[str, dict] = {}
    errors: dict[str, Exception] = {}

    def work(job: KernelRun) -> None:
        try:
            states[job.spec.name] = _run_stage(backend, job, keys[job.spec.name], plans[job.spec.name])
        except Exception as e:  # raised again below, in the calling thread
            errors[job.spec.name] = e

    # Daemon threads: Ctrl-C interrupts the joins below, and the process ends without waiting for them.
    threads = [threading.Thread(target=work, args=(job,), name=f"iwc-{job.spec.name}", daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(errors) > 1 and all(isinstance(e, IwcError) for e in errors.values()):
        raise IwcError("; ".join(f"[{stage}] {e}" for stage, e in errors.items()))
    if errors:
        raise next(iter(errors.values()))
    return states


def _interrupted(run_dir: Path, shown_run_dir: Path, wave: list[str], keys: dict[str, str]) -> str:
    """How to resume after a Ctrl-C in `wave`: the stages that began with this key keep their progress; those
    that had not started yet are named as such."""
    states = {s: read_json_object(run_dir / "stages" / s / STATE_FILE) for s in wave}
    begun = [s for s in wave if states[s].get("key") == keys[s] and not states[s].get("complete")]
    waiting = [s for s in wave if s not in begun and not _finished(run_dir / "stages" / s, keys[s])]
    kept = [f"stage {s} keeps its progress in {shown_run_dir / 'stages' / s}" for s in begun]
    return "rerun the same command to resume (" + "; ".join(
        [*kept, *([f"{' + '.join(waiting)} had not started"] if waiting else [])]) + ")"


def _finished(stage_dir: Path, key: str) -> bool:
    state = read_json_object(stage_dir / STATE_FILE)
    return state.get("key") == key and bool(state.get("complete"))


def _plan(stage_dir: Path, key: str, force: bool) -> tuple[str, str]:
    """What a stage needs, from its key and its `stage.json`: ("skip", ""), finished with this key and its outputs
    as it recorded them; ("resume", ""), interrupted with this key; ("redo", what changed), finished, but its
    outputs changed since; ("start", ""), another key, or `force`."""
    state = read_json_object(stage_dir / STATE_FILE)
    if force or state.get("key") != key:
        return "start", ""
    if not state.get("complete"):
        return "resume", ""
    changed = outputs.changes(stage_dir / "working", state.get("outputs"))
    return ("redo", outputs.describe(changed)) if changed else ("skip", "")


def _run_stage(backend: Backend, job: KernelRun, key: str, plan: tuple[str, str]) -> dict:
    """Run one kernel as `plan` (`_plan`) says: skip it, resume it, run it again or start it afresh.

    Returns the stage's state: `ran`, `attempts` (runs of this key, including interrupted ones) and
    `seconds` (their total). A resumed stage's log gets a marked restart line and keeps what came before.
    A finished stage records its outputs' hashes (`outputs.record`); one whose outputs changed since runs again
    from the start (its log and its backend's record, e.g. a Kaggle version to pull again, are kept).
    """
    stage, stage_dir = job.spec.name, job.stage_dir
    state_path = stage_dir / STATE_FILE
    state = read_json_object(state_path)
    action, why = plan
    if action == "skip":
        print(f"[{stage}] unchanged (key {key[:12]}): skipped")
        return {"ran": False, "attempts": state.get("attempts", 1), "seconds": state.get("seconds", 0.0)}
    resuming = action == "resume"
    if resuming:
        state = _settle(state, job.log_path)
        print(f"[{stage}] resuming an interrupted run (attempt {state['attempts'] + 1})")
    elif action == "redo":
        print(f"[{stage}] outputs changed since it finished ({why}): running it again")
        shutil.rmtree(stage_dir / "working", ignore_errors=True)
        state = {"key": key, "attempts": state.get("attempts", 1), "seconds": state.get("seconds", 0.0)}
    else:  # a different key: nothing to resume
        shutil.rmtree(stage_dir / "working", ignore_errors=True)
        job.state_path.unlink(missing_ok=True)
        job.log_path.unlink(missing_ok=True)
        state = {"key": key, "attempts": 0, "seconds": 0.0}
    attempt, started = state["attempts"] + 1, time.time()
    state.update(complete=False, attempts=attempt, running_since=started)
    write_json(state_path, state)
    _mark_log(job.log_path, attempt, resuming)
    print(f"[{stage}] running {job.spec.code_file} ({backend.name})")
    try:
        backend.run(job)
        outputs.unpack_extras(stage_dir / "working")  # what the kernel packed (iwc.extras), as it wrote it
        state.update(complete=True, outputs=outputs.record(stage_dir / "working"))
    finally:  # also on Ctrl-C or a failure: the attempt's time counts
        state["seconds"] = round(state["seconds"] + time.time() - state.pop("running_since"), 1)
        write_json(state_path, state)
    return {"ran": True, "attempts": state["attempts"], "seconds": state["seconds"]}


def _settle(state: dict, log_path: Path) -> dict:
    """A state whose last attempt was cut short without recording its time (the host was killed): that
    attempt counts until its log's last write."""
    state = {"attempts": 1, "seconds": 0.0, **state}
    since = state.pop("running_since", None)
    if since is not None and log_path.is_file():
        state["seconds"] = round(state["seconds"] + max(0.0, log_path.stat().st_mtime - since), 1)
    return state


def _mark_log(log_path: Path, attempt: int, resuming: bool) -> None:
    """Append the line that opens an attempt in the stage's log (the backend appends the kernel's output)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with open(log_path, "a", encoding="utf-8") as log:  # a log is appended as it comes, never atomically
        log.write(f"==== attempt {attempt}{' (resuming)' if resuming else ''} at {when} ====\n")


def _assemble(stages: Path, out: Path, recipe: Recipe, truth: Path | None, keys: dict[str, str],
              result: RunResult) -> None:
    """Copy the aggregator's outputs and every model's training curves into `out`; write run.json and report.md
    (the aggregator's metrics, plus the test accuracy where `truth` is known).

    Everything is written into a folder beside `out`, which then replaces it: a failure leaves `out` as it was.
    """
    aggregate = stages / AGGREGATE / "working"
    _check_pair(aggregate)
    metrics = read_json_object(aggregate / METRICS_JSON)
    if not {"steps", "accuracy", "validation"} <= metrics.keys():
        raise _stage_output_error(aggregate.parent, f"{aggregate / METRICS_JSON} is missing or damaged")
    with replacing_folder(out) as new:
        for name in COPIED:
            _copy(_stage_file(aggregate / name), new / name)
        if (out / SUBMITTED).is_file():  # what was sent to Kaggle from this folder: kept, to refuse duplicates
            _copy(out / SUBMITTED, new / SUBMITTED)
        for model in recipe.models:
            _copy(_stage_file(stages / model / "working" / model / "training_curves.png"),
                  new / f"{model}_training_curves.png")
            for name in model_files(model):
                _copy(_stage_file(aggregate / name), new / name)
        if truth is not None:
            predictions = pd.read_csv(new / "predictions.csv", dtype={"Id": str})
            metrics["accuracy"]["test"] = _test_accuracy(predictions, truth, dict(metrics["steps"]))
        result.accuracy = metrics["accuracy"]
        result.table = accuracy_table(result.accuracy, dict(metrics["steps"]))
        write_json(new / "run.json", {"recipe": recipe.to_dict(), "stage_keys": keys, "ran": result.ran,
                                      "skipped": result.skipped, "stages": result.stages,
                                      "accuracy": result.accuracy})
        curves = "\n\n".join(f"![{m}]({m}_training_curves.png)" for m in recipe.models)
        write_text(new / "report.md", report_markdown(
            f"iwc run {out.name!r} (recipe {recipe.name!r})", metrics,
            DataIssues.load(aggregate / ISSUES_JSON).markdown(), [
                ("Training curves", curves),
                ("Stages", _stage_table(result.stages)),
                ("Files", "`submission.csv` (validated against the sample), `manifest.json` (hashes, code version, "
                          "runtime), `validation.csv` / `predictions.csv` (each step's predictions), "
                          "`metrics.json` (the aggregator's accuracies), `run.json` (stage keys, attempts)."),
            ]))


def _stage_table(stages: dict[str, dict]) -> str:
    lines = ["| stage | this run | attempts | seconds (all attempts) | ran with |", "|---|---|---:|---:|---|"]
    for stage, state in stages.items():
        ran_with = ", ".join(f"{k} {v}" for k, v in state["runtime"].items())
        lines.append(f"| {stage} | {'ran' if state['ran'] else 'skipped (unchanged)'} | {state['attempts']} "
                     f"| {state['seconds']:.1f} | {ran_with} |")
    return "\n".join(lines)


def _kernel_runtime(stage_dir: Path) -> dict[str, str]:
    """The versions and device a stage's kernel reported in its manifest (where it ran: here, Docker, Kaggle), and
    for a model stage the devices its processes trained on."""
    working = stage_dir / "working"
    manifest = next((p for p in (working / f"{stage_dir.name}.manifest.json", working / "manifest.json")
                     if p.is_file()), None)
    record = read_json_object(manifest) if manifest else {}
    devices = record.get("devices")
    trained = {"trained on": ", ".join(map(str, devices))} if isinstance(devices, list) else {}
    return {**record.get("code", {}).get("runtime", {}), **trained}


def _check_pair(folder: Path) -> None:
    """`folder`'s submission.csv is the one its manifest.json describes (not a stale or half-written file)."""
    csv, manifest = _stage_file(folder / "submission.csv"), _stage_file(folder / "manifest.json")
    if read_json_object(manifest).get("submission", {}).get("sha256") != sha256_file(csv):
        raise _stage_output_error(folder.parent, f"{csv} does not match its {manifest.name}")


def _stage_file(path: Path) -> Path:
    """`path`, an output in `stages/<stage>/working/`, when it is a file; else `_stage_output_error`."""
    if not path.is_file():
        stage_dir = next(p for p in path.parents if p.name == "working").parent
        raise _stage_output_error(stage_dir, f"expected stage output {path} is missing")
    return path


def _stage_output_error(stage_dir: Path, problem: str) -> IwcError:
    """The error for a stage's bad output: the stage forgets its recorded outputs, so that rerunning the same
    command runs it again (and only it), as the message says."""
    state = read_json_object(stage_dir / STATE_FILE)
    if state.get("complete"):
        write_json(stage_dir / STATE_FILE, {**state, "outputs": None})
    return IwcError(f"{problem}: rerun the same command to run the {stage_dir.name} stage again")


def _test_accuracy(predictions: pd.DataFrame, truth_csv: Path, steps: Iterable[str]) -> dict[str, float]:
    truth = pd.read_csv(truth_csv, dtype={"Id": str}).set_index("Id")["Category"]
    missing = ~predictions["Id"].isin(truth.index)
    if missing.any():
        raise IwcError(f"{truth_csv} lacks labels for {int(missing.sum())} predicted test images; "
                       "pass the ground truth of this data set")
    labels = truth.loc[predictions["Id"]].to_numpy()
    return accuracies({s: predictions[s].to_numpy(np.int64) for s in steps}, labels)


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as f, atomic_write(dst, "wb") as g:
        shutil.copyfileobj(f, g)



def _metadata_files(spec: StageSpec) -> tuple[str, ...]:
    """The competition files a stage's kernel reads: the detector boxes only where it cuts crops."""
    return (TRAIN_JSON, TEST_JSON, SAMPLE_CSV, *((MD_JSON,) if "detections" in spec.reads else ()))


def _fingerprint_files(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in names}


def _fingerprint_listing(folder: Path) -> str:
    """Hash of (name, size, mtime_ns) of every file in `folder`, recursively; a dangling symlink counts as a
    missing file (the kernel records its image as `missing`).

    Why not the contents: hashing 100 GB of originals would cost minutes on every rerun. A file rewritten in
    place keeps its size but gets a new mtime: the quick check make, rsync and dvc use. Its cost: copying the
    data anew (new mtimes, same bytes) reruns the stages that read it."""
    entries = []
    for dirpath, _, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
                entries.append((rel, name, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:  # a symlink to nothing (os.walk listed it, so it exists as a link)
                entries.append((rel, name, -1, -1))
    return sha256_json(sorted(entries))
