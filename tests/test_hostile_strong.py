"""Hostile input for issue 15's options (`blend.no_crop`, `crops.background`, the strong recipes, `iwc tune`):
exit code 2, one `iwc: error:` line naming the field or file, no traceback, nothing on disk changed. The checks
are test_hostile's own."""

from __future__ import annotations

import json

import pytest
from test_hostile import Case, _recipe, _reproduce, _run, _snapshot, _text
from test_hostile import test_hostile_input_is_refused_in_one_line_and_changes_nothing as refused
from test_hostile import world as world  # the fixture

from iwc.recipe import load_recipe


def _tune(*extra: str):
    return lambda w: ["tune", *extra]


def _half_run():
    """runs/half/: the aggregator's manifest (with the demo recipe) but no model tables."""
    def setup(w):
        work = w.root / "runs" / "half" / "stages" / "aggregate" / "working"
        work.mkdir(parents=True)
        (work / "manifest.json").write_text(json.dumps({"recipe": load_recipe("demo").to_dict()}))
    return setup

CASES = [
    Case("no-crop-unknown", _recipe("blend.no_crop=maybe"),
         _text("blend.no_crop = 'maybe' must be one of 'full', 'empty'")),
    Case("no-crop-number", _recipe("blend.no_crop=1"), _text("blend.no_crop = 1 must be one of")),
    Case("no-crop-empty-without-crop-model", _recipe("crop.input=full", "blend.no_crop=empty"),
         _text("blend.no_crop = 'empty' needs a model with input = 'crop'")),
    Case("background-not-bool", _recipe('crop.crops.background="yes"'),
         _text("models.crop.crops.background = 'yes' must be bool")),
    Case("strong-demo-threshold-1", _recipe("crop2.crops.threshold=1.0", recipe="strong-demo"),
         _text("models.crop2.crops.threshold = 1.0 must be in [0, 1)")),
    Case("strong-demo-weight-missing", _recipe("blend.weights={full=0.5, crop=0.5}", recipe="strong-demo"),
         _text("must name each model once")),
    Case("reproduce-no-crop-unknown", _reproduce("--set", "blend.no_crop=none"),
         _text("blend.no_crop = 'none' must be one of")),
]
# tune reads runs/: test_hostile's check leaves runs/ out of the comparison; these compare everything
TUNE_CASES = [
    Case("tune-no-such-run", _tune("nope"), _text("runs/nope: no such run; run iwc reproduce first")),
    Case("tune-run-is-a-path", _tune("../elsewhere"), _text("run '../elsewhere' must be a run name")),
    Case("tune-unfinished-run", _tune("half"), _text("has no recipe: tune reads a FINISHED run"),
         setup=lambda w: (w.root / "runs" / "half").mkdir(parents=True)),
    Case("tune-model-unfinished", _tune("half"), _text("full_val.npz is missing: model 'full'"),
         setup=_half_run()),
    Case("tune-write-not-toml", _tune("half", "--write", "best.json"),
         _text("--write best.json: an overlay is a .toml"),
         setup=_half_run()),
    Case("tune-data-missing", _tune("half", "--data", "nowhere"), _text("--data nowhere: no such folder"),
         setup=_half_run()),
    Case("tune-step-off-grid", _tune("half", "--step", "0.3"), _text("--step: invalid choice")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_strong_options_refuse_bad_values_in_one_line(case, world, capsys, monkeypatch):
    refused(case, world, capsys, monkeypatch)


@pytest.mark.parametrize("case", TUNE_CASES, ids=[c.id for c in TUNE_CASES])
def test_tune_refuses_what_it_cannot_read_in_one_line_and_changes_nothing(case, world, capsys):
    if case.setup:
        case.setup(world)
    before = _snapshot(world.root)
    code = _run(case.argv(world))
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err, err
    assert [line for line in err.splitlines() if line.startswith("iwc: error:")] == err.splitlines()[:1], err
    assert case.expect(world) in err, err
    assert _snapshot(world.root) == before
