"""`iwc reproduce --demo`: the synthetic data is kept per data seed and scale; `--seed` is the recipe's."""

import filecmp

import pytest

import iwc.host.pipeline
from iwc.errors import IwcError
from iwc.host.cli import main


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """Run `iwc reproduce` in `tmp_path` with the pipeline replaced by a recorder of what it was given."""
    monkeypatch.chdir(tmp_path)
    seen = []

    def record(root, recipe, run_dir, submission_dir, **kwargs):
        seen.append((root, recipe))
        raise IwcError("recorded")  # stop here: the data and recipe are what is tested

    monkeypatch.setattr(iwc.host.pipeline, "reproduce", record)
    return seen


def test_each_data_seed_gets_its_own_synthetic_competition_and_seed_sets_the_recipe(calls, tmp_path, capsys):
    assert main(["reproduce", "--demo", "--scale", "small"]) == 2
    assert main(["reproduce", "--demo", "--scale", "small", "--data-seed", "7", "--seed", "5"]) == 2
    (root0, recipe0), (root7, recipe7) = calls
    assert root0.resolve() == tmp_path / "data/demo/small-seed0"
    assert root7.resolve() == tmp_path / "data/demo/small-seed7"
    assert (recipe0.name, recipe7.name) == ("demo", "demo") and recipe7.seed == 5 and recipe0.seed != 5
    train = "iwildcam-2020-fgvc7/iwildcam2020_train_annotations.json"
    assert not filecmp.cmp(root0.resolve() / train, root7.resolve() / train, shallow=False)  # other data, not reused

    capsys.readouterr()
    assert main(["reproduce", "--demo", "--scale", "small", "--data-seed", "7"]) == 2
    assert f"reusing {calls[-1][0]}" in capsys.readouterr().out
    assert calls[-1][0].resolve() == root7.resolve() and calls[-1][1].seed == recipe0.seed
