"""Issue 13 at the real size: progress that reaches the log while it happens, plots and scratch that scale."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_backends import write_kernel
from test_reproduce import TINY

from iwc import report
from iwc.data import scratch
from iwc.data.cache import build_cache, cache_bytes
from iwc.data.crops import crops_bytes, extract_crops
from iwc.data.scratch import require_free
from iwc.errors import IwcError
from iwc.host.backends.local import _Lines, run_local
from iwc.host.cli import main
from iwc.host.pipeline import reproduce
from iwc.layout import INPUT_ENV, WORKING_ENV
from iwc.recipe import DEMO, REFERENCE, load_recipe
from iwc.report import plot_confusion, plot_per_location
from iwc.stages import common, reading_originals, stage_specs
from iwc.submission import validate_file
from iwc.train import device

SLOW_EPOCH_STAGE = """\
import os
import time
from pathlib import Path

from tqdm import tqdm


def main(recipe, name):
    release = Path(os.environ["IWC_TEST_RELEASE"])
    bar = tqdm(total=2, desc="epoch 1", unit="batch")
    time.sleep(0.5)  # past the redraw interval: this update redraws
    bar.update(1)
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:  # the epoch lasts until the test has seen it
        time.sleep(0.05)
    print("released" if release.exists() else "never released", flush=True)
    bar.update(1)
    bar.close()
"""


def test_a_slow_epoch_has_its_progress_line_in_the_log_before_it_ends(tmp_path):
    log, release = tmp_path / "log.txt", tmp_path / "release"
    env = {"TQDM_MININTERVAL": "0.2", "IWC_TEST_RELEASE": str(release)}
    kernel = write_kernel(tmp_path, SLOW_EPOCH_STAGE)
    run = threading.Thread(target=run_local, args=(kernel, {}, tmp_path / "run", log, env))
    run.start()
    try:
        deadline = time.monotonic() + 300
        while not (log.is_file() and "epoch 1:  50%" in log.read_text()):
            assert run.is_alive() and time.monotonic() < deadline, "no progress line while the epoch ran"
            time.sleep(0.05)
        seen = log.read_text()
    finally:
        release.touch()
        run.join(timeout=300)
    assert "released" not in seen  # the line came while the epoch was still running
    lines = log.read_text().splitlines()
    assert "released" in lines and "\r" not in log.read_text()  # a redraw is a line of its own in the log
    assert [line for line in lines if line.startswith("epoch 1:  50%")][:1] == [seen.splitlines()[-1]]
    assert lines[-1].startswith("epoch 1: 100%")


def test_lines_end_at_carriage_returns_across_chunks():
    lines = _Lines()
    got = lines.feed(b"a\r") + lines.feed(b"\nb\xc3") + lines.feed(b"\xa9\rbar 1")
    assert got == [("a", "\r"), ("b\u00e9", "\r")] and lines.rest == "bar 1" and lines.redraw
    assert lines.feed(b"0\rbar 2\n") + lines.feed(b"tail") + lines.feed(b"") == [
        ("bar 10", "\r"), ("bar 2", "\n"), ("tail", "\n")]
    assert not lines.redraw  # the rest after a "\n" is not a redraw


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_report_plots_stay_under_2000_px_at_267_classes_and_111_locations(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.arange(267) * 2 + (np.arange(267) > 100) * 130  # sparse, like the real 0..675
    truth = ids[np.minimum(rng.zipf(1.3, 20_000) - 1, 266)]  # long-tailed: a few classes hold most images
    pred = np.where(rng.random(20_000) < 0.6, truth, rng.choice(ids, 20_000))
    locations = rng.integers(0, 111, 20_000)
    plot_confusion(truth, pred, {int(ids[0]): "empty"}, tmp_path / "confusion_matrix.png")
    steps = {"full": pred, "final": np.where(locations == 7, truth, pred)}
    plot_per_location(locations, truth, steps, {"final": "blend + vote"}, tmp_path / "per_location.png")
    for name in ("confusion_matrix.png", "per_location.png"):
        assert max(_png_size(tmp_path / name)) <= 2000, name
    full = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    present = np.union1d(truth, pred)
    assert full.index.tolist() == present.tolist() and full.columns.astype(int).tolist() == present.tolist()
    assert full.to_numpy().sum() == 20_000 and int(full.loc[ids[0], str(ids[0])]) == ((truth == ids[0]) &
                                                                                      (pred == ids[0])).sum()


def test_confusion_pools_the_rare_classes_as_other(tmp_path, monkeypatch):
    shown = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, path: shown.update(
        labels=[t.get_text() for t in fig.axes[0].get_yticklabels()], image=fig.axes[0].images[0].get_array()))
    truth = np.array([5] * 4 + [9] * 3 + [1, 2, 3])
    plot_confusion(truth, truth[::-1], {5: "deer"}, tmp_path / "c.png", top=2)
    assert shown["labels"] == ["5 deer", "9", "other (3)"]
    assert np.allclose(np.asarray(shown["image"]).sum(axis=1), 1)  # each true row normalized, "other" included


def test_per_location_names_the_worst_and_best_locations(tmp_path, monkeypatch):
    shown = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, path: shown.update(text=fig.axes[0].texts[0].get_text()))
    locations = np.repeat(np.arange(8), 4)
    truth = np.zeros(32, dtype=int)
    pred = np.where(np.arange(32) % 4 < locations % 5, 1, 0)  # location k % 5 gets k % 5 of 4 wrong
    plot_per_location(locations, truth, {"final": pred}, {}, tmp_path / "p.png", named=2)
    worst, best = shown["text"].splitlines()
    assert worst == "worst: 4 (0.00, n=4), 3 (0.25, n=4)" and best.startswith("best: 5 (1.00, n=4), 0 (1.00")


def _disk_with(monkeypatch, free: int) -> None:
    usage = shutil._ntuple_diskusage(10**12, 10**12 - free, free)
    monkeypatch.setattr(scratch.shutil, "disk_usage", lambda path: usage)


def test_cache_build_stops_before_it_starts_when_the_disk_lacks_its_scratch(tmp_path, monkeypatch):
    sources = tmp_path / "img"
    sources.mkdir()
    paths = []
    for k in range(3):
        Image.new("RGB", (40, 30), (k * 50, 0, 0)).save(sources / f"{k}.jpg")
        paths.append(sources / f"{k}.jpg")
    need = cache_bytes(3, 16)
    _disk_with(monkeypatch, need - 1)
    with pytest.raises(IwcError) as err:
        build_cache(paths, ["0", "1", "2"], 16, tmp_path / "cache")
    message = str(err.value)
    assert message.startswith("cache 16px of 3 images needs 0.00 GB of scratch in ") and "\n" not in message
    assert "IWC_SCRATCH_DIR" in str(err.value) and not (tmp_path / "cache").exists()  # nothing started
    _disk_with(monkeypatch, need)
    assert len(build_cache(paths, ["0", "1", "2"], 16, tmp_path / "cache")) == 3


def test_crop_cutting_stops_before_it_starts_when_the_disk_lacks_its_scratch(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 48), (0, 90, 0)).save(tmp_path / "img" / "a.jpg")
    selection = pd.DataFrame({"crop_id": ["a"], "image_id": ["a"], "conf": [0.9], "x": [0.1], "y": [0.1],
                              "w": [0.5], "h": [0.5]})
    _disk_with(monkeypatch, crops_bytes(1, 32) - 1)
    with pytest.raises(IwcError, match=r"^cutting 1 crops at 32px needs 0\.00 GB of scratch in .*IWC_SCRATCH_DIR"):
        extract_crops(selection, tmp_path / "img", tmp_path / "crops", size=32, progress=False)
    assert not (tmp_path / "crops").exists()
    _disk_with(monkeypatch, crops_bytes(1, 32))
    assert len(extract_crops(selection, tmp_path / "img", tmp_path / "crops", size=32, progress=False).index) == 1


def test_the_scratch_message_names_the_need_what_is_free_and_what_to_do(tmp_path, monkeypatch):
    _disk_with(monkeypatch, 0)
    with pytest.raises(IwcError) as err:
        require_free(tmp_path / "not" / "yet", 10**9, "cache 144px of 217959 images")
    assert str(err.value) == (f"cache 144px of 217959 images needs 1.00 GB of scratch in {tmp_path / 'not' / 'yet'} "
                              "and that disk has 0.00 GB free: free space there, or point IWC_SCRATCH_DIR at a "
                              "larger disk, then run again")


def test_reproduce_without_the_resized_dataset_reads_the_originals(small_demo, tiny_run, tmp_path):
    data = tmp_path / "data"  # the competition's own download alone: no 256_images/ anywhere
    data.mkdir()
    (data / small_demo.competition_dir.name).symlink_to(small_demo.competition_dir, target_is_directory=True)
    recipe = load_recipe("demo", TINY)
    tiny_run.copy(tmp_path / "run")  # the same recipe with the resized dataset there
    result = reproduce(data, recipe, tmp_path / "run", tmp_path / "submission", truth=small_demo.ground_truth)
    # only the full model read the resized images: the crop model (originals either way) keeps its key
    assert result.ran == ["full", "aggregate"] and result.skipped == ["crop"]
    sample = small_demo.competition_dir / "sample_submission.csv"
    train = json.loads((small_demo.competition_dir / "iwildcam2020_train_annotations.json").read_text())
    category_ids = [c["id"] for c in train["categories"]]
    assert validate_file(result.submission_dir / "submission.csv", sample, category_ids) == []
    log = (tmp_path / "run" / "stages" / "full" / "log.txt").read_text()
    assert log.count("the model reads the original images in") == 1
    specs = reading_originals(stage_specs(recipe))
    assert specs["full"].reads == ("originals",) and specs["crop"].reads == stage_specs(recipe)["crop"].reads


def _labels(path, rows):
    pd.DataFrame(rows, columns=["Id", "Category"]).to_csv(path, index=False)
    return str(path)


def test_score_grades_as_mle_bench_and_per_location(small_demo, tmp_path, capsys):
    answers = pd.read_csv(small_demo.ground_truth, dtype={"Id": str})
    wrong = answers.index % 4 == 0
    submission = answers.assign(Category=np.where(wrong, answers["Category"] + 1, answers["Category"]))
    sub = tmp_path / "submission.csv"
    submission.iloc[::-1].to_csv(sub, index=False)  # another row order grades the same
    assert main(["score", str(sub), "--answers", str(small_demo.ground_truth)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"accuracy {1 - wrong.mean():.5f} ({(~wrong).sum()} of {len(answers)} Ids correct; graded as "
                   "MLE-bench does)"]
    assert main(["score", str(sub), "--answers", str(small_demo.ground_truth), "--data", str(small_demo.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    test = json.loads((small_demo.competition_dir / "iwildcam2020_test_information.json").read_text())["images"]
    location = {image["id"]: image["location"] for image in test}
    frame = answers.assign(location=answers["Id"].map(location), correct=~wrong)
    expected = frame.groupby("location")["correct"].mean().sort_values(kind="stable")
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == frame["location"].nunique()
    assert [float(r[2]) for r in rows] == sorted(float(r[2]) for r in rows)  # worst first
    assert {int(r[0]): float(r[2]) for r in rows} == {k: round(v, 4) for k, v in expected.items()}


def test_score_refuses_different_id_sets_in_one_line(tmp_path, capsys):
    answers = _labels(tmp_path / "answers.csv", [("a", 1), ("b", 2), ("c", 3)])
    sub = _labels(tmp_path / "sub.csv", [("a", 1), ("b", 2), ("d", 3)])
    assert main(["score", sub, "--answers", answers]) == 2
    err = capsys.readouterr().err
    assert err == (f"iwc: error: {sub} lacks 1 Ids of the answers (e.g. 'c') and has 1 Ids the answers do not "
                   f"(e.g. 'd'): MLE-bench grades only a submission with exactly the Ids of {answers}\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("Id,Label\na,1\n")
    assert main(["score", str(bad), "--answers", answers]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"iwc: error: {bad}") and "expected 'Id,Category'" in err and "Traceback" not in err


def test_a_cuda_model_on_a_machine_without_cuda_stops_at_once_in_one_line(small_demo, tmp_path):
    if torch.cuda.is_available():
        pytest.fail("this test needs a machine without CUDA (it checks the refusal)")  # never silently skipped
    env = {**os.environ, "IWC_SCRATCH_DIR": str(tmp_path / "scratch")}
    done = subprocess.run([sys.executable, "-m", "iwc.host.cli", "stage", "full", "--recipe", "reference",
                           "--input-root", str(small_demo.root), "--working-dir", str(tmp_path / "work")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("iwc: error: model 'full' needs a CUDA GPU")
    assert "found only the CPU" in done.stderr and "--set full.device=cpu" in done.stderr
    assert not (tmp_path / "scratch").exists()  # stopped before any data work


def test_a_cuda_model_with_device_cpu_starts_training_on_the_cpu(small_demo, tmp_path, monkeypatch, capsys):
    started = {}

    def fit_started(model, train_images, *args, **kwargs):
        started.update(device=str(args[-1]), images=len(train_images))
        raise IwcError("stopped: training started")

    monkeypatch.setattr(common, "fit", fit_started)
    for var, folder in ((INPUT_ENV, small_demo.root), (WORKING_ENV, tmp_path / "work"),
                        ("IWC_SCRATCH_DIR", tmp_path / "scratch")):
        monkeypatch.setenv(var, str(folder))
    argv = ["stage", "full", "--recipe", "reference", "--set", "full.device=cpu", "--set", "full.pretrained=false",
            "--set", "full.cache_size=32", "--set", "full.image_size=32"]
    assert main(argv) == 2
    assert capsys.readouterr().err.endswith("\niwc: error: stopped: training started\n")  # after the cache bars
    assert started["device"] == "cpu" and started["images"] > 0


def test_a_gpu_this_torch_cannot_run_is_named_with_what_to_do(monkeypatch):
    monkeypatch.setattr(device.distributed, "device", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Tesla P100-PCIE-16GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (6, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_70", "sm_75"])

    def no_kernel(dev):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\nmore")

    monkeypatch.setattr(device, "probe_convolution", no_kernel)
    with pytest.raises(IwcError) as err:
        device.check_device(REFERENCE.models["crop"], "crop")
    assert str(err.value) == (
        f"model 'crop': the GPU Tesla P100-PCIE-16GB (sm_60) cannot run this torch build ({torch.__version__}, built "
        "for sm_70 sm_75): CUDA error: no kernel image is available for execution on the device; choose another GPU "
        "(Kaggle: machine_shape NvidiaTeslaT4, not a P100), or pass --set crop.device=cpu for a deliberate CPU run "
        "(far slower)")
    assert device.check_device(replace(REFERENCE.models["crop"], device="auto"), "crop") == torch.device("cuda")
    assert DEMO.models["full"].device == "auto" and REFERENCE.models["full"].device == "cuda"


def test_the_device_probe_runs_a_convolution_here():
    device.probe_convolution(torch.device("cpu"))  # the real probe, on the device this machine has
    assert device.check_device(replace(REFERENCE.models["full"], device="cpu"), "full") == torch.device("cpu")


def test_crops_on_many_threads_are_the_bytes_and_order_of_one_thread(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "img").mkdir()
    rows = []
    for k in range(12):
        pixels = rng.integers(0, 256, size=(96 + 8 * k, 128, 3), dtype=np.uint8)
        if k != 5:  # image 5 is missing: failed, in the same place either way
            Image.fromarray(pixels).save(tmp_path / "img" / f"i{k:02d}.jpg", quality=90)
        for j in range(1 + k % 3):
            rows.append((f"i{k:02d}_{j}", f"i{k:02d}", 0.5 + j / 10, 0.1 * j, 0.05, 0.5, 0.6))
    selection = pd.DataFrame(rows, columns=["crop_id", "image_id", "conf", "x", "y", "w", "h"]).sample(frac=1,
                                                                                                      random_state=0)
    one = extract_crops(selection, tmp_path / "img", tmp_path / "one", size=32, progress=False, workers=1)
    many = extract_crops(selection, tmp_path / "img", tmp_path / "many", size=32, progress=False, workers=4)
    assert one.failed == many.failed == ["i05"]
    assert one.index.drop(columns="path").equals(many.index.drop(columns="path"))
    assert one.index["image_id"].is_monotonic_increasing and len(one.index) == len(selection) - 3
    for crop_id in one.index["crop_id"]:
        assert (tmp_path / "one" / f"{crop_id}.jpg").read_bytes() == (tmp_path / "many" / f"{crop_id}.jpg").read_bytes()
    again = extract_crops(selection, tmp_path / "img", tmp_path / "many", size=32, progress=False, workers=4)
    assert again.reused == len(one.index) and again.index.equals(many.index)
