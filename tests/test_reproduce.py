"""End to end: the three generated kernels run through the local backend on the synthetic competition.

The recipe is the demo recipe shrunk (32 px, one epoch per stage) so the whole path stays quick; the
same code runs in `invoke reproduce --demo`.
"""

import hashlib
import json
import zipfile

import pandas as pd
import pytest
import torch

from iwc.errors import IwcError
from iwc.extras import EXTRAS_ZIP, MAX_OUTPUT_FILES
from iwc.host.backends.local import mount_inputs
from iwc.host.cli import main
from iwc.host.pipeline import reproduce
from iwc.recipe import DEMO, load_recipe
from iwc.report import step_labels
from iwc.submission import validate_file

TINY = [f"{m}.{k}" for m in ("full", "crop") for k in (
    "image_size=32", "cache_size=36", "batch_size=64", "stages.0.epochs=1", "stages.1.epochs=1", "tta.views=1")]
VOLATILE = {"seconds", "images_per_s", "runtime"}  # how long, and on which Python: records of a run, not results


def _stable(obj):
    """`obj` without `VOLATILE` keys, each tensor as the sha256 of its dtype, shape and bytes."""
    if isinstance(obj, dict):
        return {str(k): _stable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list | tuple):
        return [_stable(v) for v in obj]
    if hasattr(obj, "numpy"):  # a tensor
        t = obj.detach().cpu().contiguous()
        return f"{t.dtype} {tuple(t.shape)} {hashlib.sha256(t.view(-1).view(torch.uint8).numpy()).hexdigest()}"
    return obj


def stage_files(folder) -> dict:
    """Relative path -> bytes of every file under `folder`; the run records among them (manifests, the training
    history, and the checkpoint, which holds that history) without their `VOLATILE` fields, which no two runs
    share: the checkpoint's weights, optimizer and random states are compared bit for bit."""
    def comparable(path):
        if path.name.endswith("manifest.json") or path.name == "history.json":
            return json.dumps(_stable(json.loads(path.read_bytes())), sort_keys=True).encode()
        if path.suffix == ".pt":
            return json.dumps(_stable(torch.load(path, map_location="cpu", weights_only=True)), sort_keys=True,
                              default=repr).encode()
        return path.read_bytes()
    return {p.relative_to(folder).as_posix(): comparable(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def run(demo, tmp, name, overrides=(), **kwargs):
    recipe = load_recipe("demo", [*TINY, *overrides])
    return reproduce(demo.root, recipe, tmp / "runs" / name, tmp / "submissions" / name,
                     truth=demo.ground_truth, **kwargs)


@pytest.fixture(scope="module")
def first(tiny_run, tmp_path_factory):
    """The session's shrunk run (`run(demo, tmp, "a")` as it first ran), copied to run "a" for these tests to rerun."""
    tmp = tmp_path_factory.mktemp("e2e")
    tiny_run.copy(tmp / "runs" / "a", tmp / "submissions" / "a")
    return tmp, tiny_run.result, tiny_run.submission


def test_first_run_runs_every_stage_and_leaves_a_valid_submission(first, small_demo):
    _, result, _ = first
    assert result.ran == ["full", "crop", "aggregate"] and result.skipped == []
    out = result.submission_dir
    for name in ("submission.csv", "manifest.json", "report.md", "run.json", "confusion_matrix.png",
                 "per_location.png", "full_training_curves.png", "crop_training_curves.png"):
        assert (out / name).is_file(), name
    sample = small_demo.competition_dir / "sample_submission.csv"
    assert validate_file(out / "submission.csv", sample, _category_ids(small_demo)) == []
    submission = pd.read_csv(out / "submission.csv", dtype={"Id": str})
    assert submission["Id"].tolist() == pd.read_csv(sample, dtype={"Id": str})["Id"].tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["submission"]["rows"] == len(submission)
    assert set(manifest["code"]["runtime"]) == {"python", "torch", "timm", "numpy", "device"}
    stages = json.loads((out / "run.json").read_text())["stages"]
    for stage in ("full", "crop"):  # what each kernel ran with, as its own manifest reported it
        assert stages[stage]["runtime"]["device"] == "cpu" and stages[stage]["runtime"]["torch"].startswith("2.")
        assert stages[stage]["runtime"]["trained on"] == "cpu"  # one process, on the CPU
    assert set(result.accuracy) == {"validation (held-out locations)", "test"}
    for accuracy in result.accuracy.values():
        assert set(accuracy) == set(step_labels(DEMO)) and all(0 <= a <= 1 for a in accuracy.values())
    assert "blend + sequence vote" in (out / "report.md").read_text()


def test_each_kernel_writes_a_few_dozen_files_at_most_and_packs_the_per_model_ones(first):
    tmp, _, _ = first
    written = {}
    for stage in ("full", "crop", "aggregate"):  # as each kernel wrote them: the host unpacked the archive since
        working = tmp / "runs" / "a" / "stages" / stage / "working"
        files = {p.relative_to(working).as_posix() for p in working.rglob("*") if p.is_file()}
        archive = working / EXTRAS_ZIP
        packed = set(zipfile.ZipFile(archive).namelist()) if archive.is_file() else set()
        assert packed <= files  # unpacked beside the archive, for the report and a rerun's check
        written[stage] = files - packed
    assert all(0 < len(files) <= MAX_OUTPUT_FILES for files in written.values()), written  # no cache, no crops
    assert EXTRAS_ZIP in written["aggregate"] and not any(f.startswith("confusion_full") for f in written["aggregate"])


def test_cli_validate_accepts_the_submission(first, small_demo, capsys):
    _, result, _ = first
    code = main(["validate", str(result.submission_dir / "submission.csv"),
                 "--sample", str(small_demo.competition_dir / "sample_submission.csv")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "valid" in out


def test_rerun_skips_every_stage_and_changing_blend_reruns_only_aggregate(first, small_demo):
    tmp, _, before = first
    again = run(small_demo, tmp, "a")
    assert again.ran == [] and again.skipped == ["full", "crop", "aggregate"]
    assert (again.submission_dir / "submission.csv").read_bytes() == before
    changed = run(small_demo, tmp, "a", ["blend.full_weight=0.9", "blend.crop_weight=0.1"])
    assert changed.ran == ["aggregate"] and changed.skipped == ["full", "crop"]
    changed_crop = run(small_demo, tmp, "a", ["blend.full_weight=0.9", "blend.crop_weight=0.1",
                                              "crop.crops.threshold=0.5"])
    assert changed_crop.ran == ["crop", "aggregate"] and changed_crop.skipped == ["full"]


def test_interrupted_stage_resumes_from_its_checkpoint(first, small_demo, capsys):
    tmp, _, _ = first
    stage = tmp / "runs" / "a" / "stages" / "full"
    history = (stage / "working" / "full" / "history.json").read_text()
    state = json.loads((stage / "stage.json").read_text())
    (stage / "stage.json").write_text(json.dumps({**state, "complete": False}))  # as if killed mid-stage
    (stage / "working" / "full.manifest.json").unlink()
    result = run(small_demo, tmp, "a", ["blend.full_weight=0.9", "blend.crop_weight=0.1", "crop.crops.threshold=0.5"])
    assert result.ran == ["full"]  # same key downstream: the aggregate stays as it was
    assert "[full] resuming" in capsys.readouterr().out
    # images_per_s differs between any two real epochs: identical history means no epoch was retrained
    assert (stage / "working" / "full" / "history.json").read_text() == history
    log = (stage / "log.txt").read_text()
    first, _, second = log.partition("==== attempt 2 (resuming) at ")
    assert first.startswith("==== attempt 1 at ") and "iwc kernel: iwc.stages.full:main" in first  # kept
    assert "iwc kernel: iwc.stages.full:main" in second
    assert json.loads((stage / "stage.json").read_text())["attempts"] == 2


def test_same_seed_gives_a_byte_identical_submission(first, small_demo):
    tmp, _, first_bytes = first
    fresh = run(small_demo, tmp, "b")
    assert fresh.ran == ["full", "crop", "aggregate"]
    assert (fresh.submission_dir / "submission.csv").read_bytes() == first_bytes
    # every file the full stage wrote, byte for byte (run "a"'s other stages were rerun with other settings above,
    # and its full stage last resumed under another blend, which its manifest records with the whole recipe)
    a, b = (stage_files(tmp / "runs" / name / "stages" / "full" / "working") for name in ("a", "b"))
    assert {"full_test.npz", "full_val.npz", "full/training_curves.png", "full/checkpoint.pt",
            "show_batch_full.png", "top_losses_full.png"} <= a.keys()
    manifests = [{k: v for k, v in json.loads(d.pop("full.manifest.json")).items() if k != "recipe"} for d in (a, b)]
    assert manifests[0] == manifests[1] and a.keys() == b.keys() and [n for n in a if a[n] != b[n]] == []


def _category_ids(demo):
    data = json.loads((demo.competition_dir / "iwildcam2020_train_annotations.json").read_text())
    return [c["id"] for c in data["categories"]]


def test_iwc_stage_runs_the_aggregator_in_process(first, small_demo, tmp_path):
    tmp, _, _ = first
    stages = tmp / "runs" / "b" / "stages"
    root = mount_inputs({"competitions/iwildcam-2020-fgvc7": small_demo.competition_dir,
                         "notebooks/me/full": stages / "full" / "working",
                         "notebooks/me/crop": stages / "crop" / "working"}, tmp_path / "input")
    args = ["stage", "aggregate", "--input-root", str(root), "--working-dir", str(tmp_path / "out"),
            "--recipe", "demo", *[a for o in TINY for a in ("--set", o)]]
    assert main(args) == 0
    assert (tmp_path / "out" / "submission.csv").read_bytes() == \
        (tmp / "submissions" / "b" / "submission.csv").read_bytes()


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(IwcError, match="invoke reproduce --demo"):
        reproduce(tmp_path, load_recipe("demo"), tmp_path / "runs", tmp_path / "submissions")
    assert not (tmp_path / "runs").exists()
