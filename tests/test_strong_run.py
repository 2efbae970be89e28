"""Issue 15 items 2 and 3: the strong recipes, a strong-demo run end to end, and `iwc tune` on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from test_reproduce import _category_ids

from iwc.host.cli import main
from iwc.insight import model_files
from iwc.recipe import load_recipe
from iwc.submission import validate_file

MODELS = ("full", "crop", "crop2")
# strong-demo shrunk like tests/test_reproduce.py's TINY: the same structure, seconds per model
TINY = [f"{m}.{k}" for m in MODELS for k in (
    "image_size=32", "cache_size=36", "batch_size=64", "stages.0.epochs=1", "stages.1.epochs=1", "tta.views=1")]


def test_strong_recipe_has_three_models_two_on_224_px_crops_at_conf_0_6(capsys):
    assert main(["recipe", "--recipe", "strong"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    models = recipe["models"]
    crops = {name: m for name, m in models.items() if m["input"] == "crop"}
    assert len(models) >= 3 and len(crops) == 2
    assert {m["arch"] for m in crops.values()} == {"efficientnet_b0", "resnet50"}
    for m in crops.values():
        assert m["crops"]["threshold"] == 0.6 and m["crops"]["size"] == 224 and m["image_size"] == 224
        assert m["crops"]["background"] is True and m["pretrained"] is True
    assert recipe["blend"]["weights"] == {"full": 0.3, "crop": 0.35, "crop2": 0.35}


def test_strong_demo_has_the_same_structure_at_demo_sizes(capsys):
    assert main(["recipe", "--recipe", "strong-demo"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert [m["input"] for m in models.values()] == ["full", "crop", "crop"]
    assert all(m["crops"]["threshold"] == 0.6 and m["crops"]["background"] for n, m in models.items() if n != "full")
    assert all(m["image_size"] == 64 and not m["pretrained"] for m in models.values())


@pytest.fixture(scope="module")
def strong_run(small_demo, tiny_run, tmp_path_factory):
    """`iwc reproduce --demo --scale small --recipe strong-demo` (shrunk), run in a folder of its own.

    Its full model, shrunk, is the demo's: the session's shrunk demo run seeds the run folder, so that stage is
    not trained twice (the others' keys differ: they run)."""
    tmp = tmp_path_factory.mktemp("strong")
    tiny_run.copy(tmp / "runs" / "strong-demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        code = main(["reproduce", "--demo", "--scale", "small", "--data", str(small_demo.root),
                     "--recipe", "strong-demo", *[a for o in TINY for a in ("--set", o)]])
    assert code == 0
    return tmp


def test_strong_demo_runs_end_to_end_with_a_row_per_model(strong_run, small_demo, capsys):
    out = strong_run / "submissions" / "strong-demo"
    sample = small_demo.competition_dir / "sample_submission.csv"
    assert validate_file(out / "submission.csv", sample, _category_ids(small_demo)) == []
    metrics = json.loads((out / "metrics.json").read_text())
    steps = [step for step, _ in metrics["steps"]]
    assert steps == ["baseline", *MODELS, "blend", "final"]
    assert set(metrics["accuracy"]["validation (held-out locations)"]) == set(steps)
    report = (out / "report.md").read_text()
    assert all(f"| {m}: " in report for m in MODELS)
    assert set(pd.read_csv(out / "predictions.csv").columns) >= {"Id", *MODELS, "blend", "final"}
    assert "## Per model: what each confuses" in report
    assert [report.index(f"### {m}\n") for m in MODELS] == sorted(report.index(f"### {m}\n") for m in MODELS)
    aggregator = strong_run / "runs" / "strong-demo" / "stages" / "aggregate" / "working"
    own_report = (aggregator / "report.md").read_text()
    for model in MODELS:  # issue 15 item 4: per model a confusion matrix, its pairs, show-batch and top losses
        for name, alt in zip(model_files(model), ("confusion matrix", "training inputs", "top losses"), strict=True):
            assert f"![{alt} of {model}]({name})" in report and f"]({name})" in own_report
            assert (aggregator / name).read_bytes() == (out / name).read_bytes()
            with Image.open(out / name) as image:
                assert image.format == "PNG" and min(image.size) > 100 and max(image.size) <= 2000
        manifest = json.loads((aggregator.parent.parent / model / "working" / f"{model}.manifest.json").read_text())
        losses = [r["loss"] for r in manifest["top_losses"]]
        assert len(losses) == 16 and losses == sorted(losses, reverse=True)
    assert set(metrics["insight"]) == set(MODELS)


def test_tune_searches_writes_plots_and_an_overlay_that_reruns_only_the_aggregator(strong_run, small_demo,
                                                                                    capsys):
    out = strong_run / "submissions" / "strong-demo"
    cwd = Path.cwd()
    os.chdir(strong_run)
    try:
        assert main(["tune", "strong-demo", "--write", "best.toml"]) == 0
        printed = capsys.readouterr().out
        assert "interval over" in printed and "validation locations" in printed
        own = next(line for line in printed.splitlines() if "(the run)" in line)
        metrics = json.loads((out / "metrics.json").read_text())
        final = metrics["accuracy"]["validation (held-out locations)"]["final"]
        assert own.endswith(f"| {final:.4f} |")  # tune's replay of the run's own setting is the run's result
        for name in ("tune_full_weight.png", "tune_gap.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "## Tuning" in (out / "report.md").read_text()
        overlay = (strong_run / "best.toml").read_text().splitlines()
        assert overlay[:2] == ['base = "strong-demo"', 'name = "strong-demo"']
        run = load_recipe("strong-demo", TINY)
        tuned = load_recipe(strong_run / "best.toml")
        assert tuned.models == run.models and tuned.split == run.split and tuned.seed == run.seed
        assert (tuned.blend, tuned.sequences) != (run.blend, run.sequences)
        assert main(["reproduce", "--demo", "--scale", "small", "--data", str(small_demo.root),
                     "--recipe", "best.toml"]) == 0
        printed = capsys.readouterr().out
        assert "stages run: aggregate; skipped (unchanged): full, crop, crop2" in printed
    finally:
        os.chdir(cwd)
