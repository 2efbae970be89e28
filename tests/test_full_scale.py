"""The full-size synthetic competition (`--scale full`) and the `bench.scale` JSON, without writing 280k files."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iwc.data.competition import Competition
from iwc.errors import IwcError
from iwc.host.synth import bulk, write_demo
from iwc.host.synth.world import SCALES, Scale

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plan() -> bulk.BulkPlan:
    return bulk.plan_bulk(np.random.default_rng(0), SCALES["full"])


def test_full_plan_has_the_real_counts(plan: bulk.BulkPlan) -> None:
    assert (len(plan.train), len(plan.test)) == (217_959, 62_894)
    assert (plan.train["location"].nunique(), plan.test["location"].nunique()) == (441, 111)
    assert not set(plan.train["location"]) & set(plan.test["location"])
    ids = [c["id"] for c in plan.categories]
    assert len(ids) == 267 and ids == sorted(ids) and ids[0] == 0 and ids[-1] <= 675
    assert {2, 3, 6, 8, 24, 72, 75, 96, 101, 347, 348, 372, 404} <= set(ids)  # the real ids the demo knows
    assert sum(c["count"] > 0 for c in plan.categories) == 216
    assert 0.3 < (plan.train["category_id"] == 0).mean() < 0.38
    assert len(set(plan.train["id"]) | set(plan.test["id"])) == 217_959 + 62_894
    assert (len(plan.corrupt), len(plan.undecodable)) == (6, 24) and set(plan.undecodable) <= set(plan.test["id"])


def test_full_plan_detections_are_long_tailed_and_mostly_unsure(plan: bulk.BulkPlan) -> None:
    per_image = plan.detections_per_image()
    assert per_image.max() == bulk.MAX_BOXES and np.median(per_image) <= 3
    conf = plan.boxes["conf"]
    assert (conf < 0.3).mean() > 0.7
    with_box = np.unique(plan.boxes["image"][conf > 0.3]).size / per_image.size
    assert 0.55 < with_box < 0.65
    first = np.r_[0, np.cumsum(per_image)][:-1][per_image > 0]
    assert (plan.boxes["image"][first] == np.flatnonzero(per_image)).all()


def test_a_sample_of_the_full_scale_writes_small_real_shaped_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(SCALES, "full", Scale(200, 80, 4, 2, missing=0, corrupt=2, omitted=3))
    info = write_demo(tmp_path / "demo", seed=1, scale="full", progress=False)
    comp = Competition.load(info.competition_dir, detections=True)
    assert (len(comp.train), len(comp.test), len(comp.sample)) == (200, 80, 77)
    assert not info.resized_dir.exists()
    assert set(comp.test["id"]) - set(comp.sample["Id"]) == set(info.omitted_from_sample)
    row = comp.train.iloc[0]
    with Image.open(info.competition_dir / "train" / f"{row['id']}.jpg") as image:
        assert image.width == bulk.THUMB_WIDTH
        assert abs(image.height / image.width - row["height"] / row["width"]) < 0.05
    for image_id in info.corrupt_train:
        with pytest.raises(OSError), Image.open(info.competition_dir / "train" / f"{image_id}.jpg") as image:
            image.load()
    assert json.loads(info.planted_file.read_text())["data_issues"]["not_in_sample"] == list(info.omitted_from_sample)
    again = write_demo(tmp_path / "again", seed=1, scale="full", progress=False)
    for name in ("iwildcam2020_megadetector_results.json", "iwildcam2020_train_annotations.json"):
        assert (again.competition_dir / name).read_bytes() == (info.competition_dir / name).read_bytes()


def test_full_scale_refuses_quirks_before_writing(tmp_path: Path) -> None:
    with pytest.raises(IwcError, match=r"--quirks .* small and medium"):
        write_demo(tmp_path / "demo", scale="full", quirks=True, progress=False)
    assert not (tmp_path / "demo").exists()


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOG = """==== attempt 1 at 2026-12-02 00:09:16 UTC ====
iwc kernel: iwc.stages.crop:main with recipe 'demo', code 563405578425
2026-12-02 00:09:22,000 INFO iwc.data.scratch: cutting 232 crops at 32px: needs 0.00 GB of scratch in /x
crops: 100%|██████████| 232/232 [01:02<00:00, 3.7img/s]
2026-12-02 00:10:30,000 INFO iwc.data.scratch: cache 32px of 230 images: needs 0.00 GB of scratch in /y
cache 32px:  50%|█████     | 115/230 [00:01<00:01]\rcache 32px: 100%|██████████| 230/230 [00:03<00:00]
2026-12-02 00:10:40,000 INFO iwc.stages.common: crop: test_resnet on cpu, 10 classes, 158 train / 72 validation rows
2026-12-02 00:11:40,500 INFO iwc.train.fit: stage 1/1 epoch 1/1: train loss 2.1877 acc 0.2025, 772 img/s
2026-12-02 00:11:41,000 WARNING iwc.stages.common: crop: data issue unreadable: 2 (a, b)
"""


def test_bench_reads_steps_and_bars_from_a_stage_log() -> None:
    scale = _bench()
    assert scale.step_seconds(LOG, seconds=150.0) == {
        "starting and reading": 6.0, "crops": 68.0, "caching": 10.0, "training": 60.5, "predicting": 5.5}
    assert scale.progress_bars(LOG) == [{"bar": "crops", "items": 232, "seconds": 62},
                                        {"bar": "cache 32px", "items": 230, "seconds": 3}]


def test_bench_json_records_stages_memory_disk_counts_images_and_machine(tmp_path: Path, monkeypatch) -> None:
    scale = _bench()
    monkeypatch.chdir(tmp_path)
    stages = tmp_path / "runs" / "r" / "stages"
    for name in scale.STAGES:
        (stages / name / "working").mkdir(parents=True)
        (stages / name / "stage.json").write_text(json.dumps({"seconds": 150.0, "complete": True}))
        (stages / name / "log.txt").write_text(LOG)
    Image.new("RGB", (2001, 40)).save(stages / "aggregate" / "working" / "per_location.png")
    (stages / "aggregate" / "working" / "report.md").write_bytes(b"x" * 3 * 2**20)
    out = scale.result("r", tmp_path / "data", "small", 1.5, 300.0, {"host": 0.5, "full": 1.2}, [1.0, 1.0, 1.0], 0)
    assert out["stages"]["crop"]["steps_s"]["crops"] == 68.0 and out["stages"]["full"]["peak_rss_gb"] == 1.2
    assert out["peak_rss_gb"] == {"host": 0.5, "full": 1.2, "crop": None, "aggregate": None}
    assert out["stages"]["aggregate"]["outputs_mb"] >= 3 and out["disk_mb"]["stage_outputs"] >= 3
    assert out["report_images"] == [{"file": "per_location.png", "width": 2001, "height": 40}]
    assert out["report_images_max_side"] == 2001 and out["report_images_within_limit"] is False
    assert set(out["machine"]) >= {"cpu_count", "load_average", "load_average_before", "platform", "torch"}
    assert out["recipe"]["overrides"] == list(scale.TINY) and "test_resnet" in out["command"]
    assert (out["demo_data_s"], out["reproduce_s"], out["exit_code"], out["counts"]) == (1.5, 300.0, 0, {})


def test_bench_relays_the_host_output_and_marks_its_preflight(capfdbinary) -> None:
    output = b"reusing x\nchecking the competition files in x ...\n[full] running iwc_full.py (local)\nmore\n"
    marks = _bench().relay(io.BytesIO(output), 0.0)
    assert set(marks) == {"preflight", "first kernel"} and marks["preflight"] <= marks["first kernel"]
    assert capfdbinary.readouterr().out == output
