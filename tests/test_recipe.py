"""The recipe: named recipes, TOML files, overrides, round trips and hashes."""

import pytest

from iwc.errors import IwcError
from iwc.recipe import DEMO, REFERENCE, Recipe, load_recipe


def test_reference_matches_the_write_up():
    full, crop = REFERENCE.full, REFERENCE.crop
    assert (full.arch, full.image_size, full.batch_size) == ("resnet50", 128, 256)
    assert [(s.epochs, s.lr_lo, s.lr_hi, s.frozen, s.mixup > 0) for s in full.stages] == [
        (10, 1e-2, 1e-2, True, True),
        (10, 1e-5, 1e-4, False, True),
    ]
    assert crop.batch_size == 128
    assert [(s.epochs, s.lr_lo, s.lr_hi, s.frozen, s.mixup) for s in crop.stages] == [
        (12, 3e-3, 3e-3, True, 0.0),
        (12, 5e-6, 5e-4, False, 0.0),
    ]
    assert (REFERENCE.crops.rule, REFERENCE.crops.threshold) == ("best", 0.3)
    assert (REFERENCE.blend.full_weight, REFERENCE.blend.crop_weight) == (0.3, 0.7)
    assert (REFERENCE.sequences.gap_s, REFERENCE.sequences.vote) == (20.0, "majority")
    aug = full.augment
    assert (aug.rotate_deg, aug.zoom_max, aug.warp, aug.brightness, aug.padding) == (20, 1.3, 0.4, 0.4, "reflection")


@pytest.mark.parametrize("recipe", [REFERENCE, DEMO])
def test_dict_round_trip(recipe):
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_overrides_reach_nested_values():
    r = load_recipe("demo", ["full.batch_size=16", "crop.stages.1.epochs=3", "sequences.vote=mean_prob"])
    assert r.full.batch_size == 16
    assert r.crop.stages[1].epochs == 3
    assert r.sequences.vote == "mean_prob"
    assert r.crop.stages[0] == DEMO.crop.stages[0]


def test_toml_file_with_base(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "demo"\nseed = 7\n[blend]\nfull_weight = 0.5\n')
    r = load_recipe(path)
    assert (r.name, r.seed, r.blend.full_weight, r.blend.crop_weight) == ("mine", 7, 0.5, 0.7)
    assert r.full == DEMO.full


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nope.x=1"], "no recipe section 'nope'"),
        (["full.bogus=1"], "unknown recipe key 'bogus'"),
        (["full.batch_size=big"], "full.batch_size must be int"),
        (["seed"], "section.key=value"),
    ],
)
def test_bad_overrides_say_what_is_wrong(overrides, message):
    with pytest.raises(IwcError, match=message):
        load_recipe("demo", overrides)


def test_unknown_recipe_name():
    with pytest.raises(IwcError, match="neither a named recipe"):
        load_recipe("no-such-recipe")


def test_section_hash_tracks_only_its_sections():
    changed = load_recipe("demo", ["blend.full_weight=0.5"])
    assert changed.section_hash("full") == DEMO.section_hash("full")
    assert changed.section_hash("blend") != DEMO.section_hash("blend")
