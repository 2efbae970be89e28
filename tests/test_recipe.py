"""The recipe: named recipes, TOML files, overrides, round trips and hashes."""

import json

import pytest

from iwc.errors import IwcError
from iwc.recipe import DEMO, REFERENCE, Recipe, load_recipe


def test_reference_matches_the_write_up():
    assert list(REFERENCE.models) == ["full", "crop"]
    full, crop = REFERENCE.models["full"], REFERENCE.models["crop"]
    assert (full.input, crop.input) == ("full", "crop")
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
    assert (crop.crops.rule, crop.crops.threshold, crop.crops.size) == ("best", 0.3, 128)
    assert REFERENCE.blend.weights == {"full": 0.3, "crop": 0.7}
    assert (REFERENCE.sequences.gap_s, REFERENCE.sequences.vote) == (20.0, "majority")
    aug = full.augment
    assert (aug.rotate_deg, aug.zoom_max, aug.warp, aug.brightness, aug.padding) == (20, 1.3, 0.4, 0.4, "reflection")


@pytest.mark.parametrize("recipe", [REFERENCE, DEMO])
def test_dict_round_trip(recipe):
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_overrides_reach_nested_values():
    r = load_recipe("demo", ["full.batch_size=16", "crop.stages.1.epochs=3", "sequences.vote=mean_prob"])
    assert r.models["full"].batch_size == 16
    assert r.models["crop"].stages[1].epochs == 3
    assert r.sequences.vote == "mean_prob"
    assert r.models["crop"].stages[0] == DEMO.models["crop"].stages[0]
    assert load_recipe("demo", ["models.full.batch_size=16"]) == load_recipe("demo", ["full.batch_size=16"])


def test_toml_file_with_base(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "demo"\nseed = 7\n[blend]\nfull_weight = 0.5\n')
    r = load_recipe(path)
    assert (r.name, r.seed, r.blend.weights) == ("mine", 7, {"full": 0.5, "crop": 0.7})
    assert r.models == DEMO.models


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nope.x=1"], "no recipe section 'nope'"),
        (["full.bogus=1"], "unknown recipe key 'bogus'"),
        (["full.batch_size=big"], "models.full.batch_size = 'big' must be int"),
        (["blend.weights.other=1"], r"blend.weights names \['crop', 'full', 'other'\] must name each model once"),
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
    assert changed.section_hash("models.full", "split") == DEMO.section_hash("models.full", "split")
    assert changed.section_hash("blend") != DEMO.section_hash("blend")


# The reported cases first, then one per kind of rule. Each message is one line naming path, value and range.
BAD_VALUES = [
    ("full.batch_size=0", "models.full.batch_size = 0 must be > 0"),
    ("crop.stages.1.epochs=-8", "models.crop.stages[1].epochs = -8 must be >= 1"),
    ("full.stages=[{epochs=0, lr_lo=1e-3, lr_hi=1e-3, frozen=true}]", "models.full.stages[0].epochs = 0 must be >= 1"),
    ("full.stages.0.epochs=0", "models.full.stages[0].epochs = 0 must be >= 1"),  # a stage of no steps cannot train
    ("sequences.gap_s=1e300", "sequences.gap_s = 1e+300 must be in (0, 3.1536e+07]"),
    ("full.image_size=0", "models.full.image_size = 0 must be > 0"),
    ("crop.crops.rule=bogus", "models.crop.crops.rule = 'bogus' must be one of 'best', 'all'"),
    ("full.arch=nosuchnet", "models.full.arch = 'nosuchnet' is not a timm architecture"),
    ("sequences.vote=majorty", "sequences.vote = 'majorty' must be one of 'majority', 'mean_prob', 'none'"),
    ("sequences.gap_s=-5", "sequences.gap_s = -5.0 must be in (0, 3.1536e+07]"),
    ("full.stages=[]", "models.full.stages = [] must hold at least one stage"),
    ("full.stages=[{epochs=3}]",
     "models.full.stages[0] is missing lr_lo, lr_hi, frozen (required: epochs, lr_lo, lr_hi, frozen)"),
    ("full.augment.padding=mirror",
     "models.full.augment.padding = 'mirror' must be one of 'reflection', 'zeros', 'border'"),
    ("sequences.method=gps", "sequences.method = 'gps' must be one of 'time', 'seq_id'"),
    ("split.method=random", "split.method = 'random' must be one of 'location', 'category'"),
    ("full.stages.0.lr_lo=0", "models.full.stages[0].lr_lo = 0.0 must be > 0"),
    ("crop.stages.1.lr_lo=0.1", "models.crop.stages[1].lr_lo = 0.1 must be <= lr_hi (0.003)"),
    ("full.cache_size=60", "models.full.cache_size = 60 must be >= models.full.image_size (64)"),
    ("crop.crops.threshold=1", "models.crop.crops.threshold = 1.0 must be in [0, 1)"),
    ("crop.crops.threshold=-0.1", "models.crop.crops.threshold = -0.1 must be in [0, 1)"),
    ("crop.crops.margin=-0.5", "models.crop.crops.margin = -0.5 must be >= 0"),
    ("crop.crops.size=0", "models.crop.crops.size = 0 must be > 0"),
    ("split.val_fraction=0", "split.val_fraction = 0.0 must be in (0, 1)"),
    ("split.val_fraction=1", "split.val_fraction = 1.0 must be in (0, 1)"),
    ("blend.full_weight=-0.1", "blend.weights {'full': -0.1} must be numbers >= 0"),
    ("blend.full_weight=0", None),  # allowed alone: crop predictions only
    ("full.stages.0.mixup=-1", "models.full.stages[0].mixup = -1.0 must be >= 0"),
    ("full.stages.0.pct_start=1", "models.full.stages[0].pct_start = 1.0 must be in (0, 1)"),
    ("full.tta.views=-1", "models.full.tta.views = -1 must be >= 0"),
    ("full.tta.beta=1.5", "models.full.tta.beta = 1.5 must be in [0, 1]"),
    ("full.tta.scale=0.5", "models.full.tta.scale = 0.5 must be in [1, 4]"),
    ("full.label_smoothing=1", "models.full.label_smoothing = 1.0 must be in [0, 1)"),
    ("full.augment.rotate_deg=-1", "models.full.augment.rotate_deg = -1.0 must be in [0, 180]"),
    ("full.augment.zoom_max=0.9", "models.full.augment.zoom_max = 0.9 must be in [1, 4]"),
    ("full.augment.warp=nan", "models.full.augment.warp = nan must be in [0, 1)"),
    ("full.augment.brightness=1", "models.full.augment.brightness = 1.0 must be in [0, 1)"),
    ("full.augment.contrast=-0.2", "models.full.augment.contrast = -0.2 must be in [0, 1)"),
    ("full.stages.0.lr_hi=inf", "models.full.stages[0].lr_hi = inf must be > 0"),
    ("seed=-1", "seed = -1 must be in [0, 4294967295]"),
    ("name='../x'", "name = '../x' must be a plain folder name, not a path: it holds '/'"),
    ("full.pretrained=1", "models.full.pretrained = 1 must be bool"),
    ("full.stages=3", "models.full.stages = 3 must be a list of tables"),]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_values_fail_at_load_in_one_line_naming_field_value_and_range(override, message):
    if message is None:
        load_recipe("demo", [override])
        return
    with pytest.raises(IwcError) as e:
        load_recipe("demo", [override])
    assert str(e.value).startswith("recipe: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_both_blend_weights_zero_and_several_problems_are_one_line():
    with pytest.raises(IwcError) as e:
        load_recipe("demo", ["blend.full_weight=0", "blend.crop_weight=0", "full.batch_size=0", "crop.image_size=0"])
    message = str(e.value)
    assert "blend.weights sum to 0" in message
    assert "models.full.batch_size = 0 must be > 0" in message
    assert "models.crop.image_size = 0 must be > 0" in message
    assert "\n" not in message


def test_a_toml_stage_table_with_missing_fields_is_named(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text('base = "demo"\n[[full.stages]]\nepochs = 3\nlr_lo = 1e-3\n')
    with pytest.raises(IwcError, match=r"^recipe: models.full.stages\[0\] is missing lr_hi, frozen \(required: "):
        load_recipe(path)


def test_from_dict_checks_too_as_the_kernels_load_their_recipe():
    data = DEMO.to_dict()
    data["models"]["full"]["batch_size"] = 0
    with pytest.raises(IwcError, match=r"models.full.batch_size = 0 must be > 0"):
        Recipe.from_dict(data)
    data = DEMO.to_dict()
    del data["models"]["crop"]["stages"][0]["frozen"]
    with pytest.raises(IwcError, match=r"models.crop.stages\[0\] is missing frozen"):
        Recipe.from_dict(data)


def test_a_toml_file_adds_a_model_like_another_with_its_weight(tmp_path):
    path = tmp_path / "three.toml"
    path.write_text('base = "demo"\n[models.crop2]\nlike = "crop"\narch = "resnet34"\n[models.crop2.crops]\nsize = 80\n'
                    '[blend.weights]\ncrop2 = 0.35\ncrop = 0.35\n')
    r = load_recipe(path)
    assert list(r.models) == ["full", "crop", "crop2"]
    assert (r.models["crop2"].input, r.models["crop2"].arch, r.models["crop2"].crops.size) == ("crop", "resnet34", 80)
    assert r.models["crop"] == DEMO.models["crop"]  # the model it started from is unchanged
    assert r.blend.weights == {"full": 0.3, "crop": 0.35, "crop2": 0.35}
    assert load_recipe(path, ["crop2.crops.size=96"]).models["crop"].crops.size == 72


@pytest.mark.parametrize(("text", "message"), [
    ('base = ["demo"]', "base = ['demo'] must be the name of a recipe"),
    ('base = {a = 1}', "base = {'a': 1} must be the name of a recipe"),
    ('base = "demo"\n[models.Big]\nlike = "crop"\n[blend.weights]\nBig = 1.0', "models.Big : a model name must be"),
    ('base = "demo"\n[models.x]\nlike = "nope"', "models.x.like = 'nope' must name a model of the recipe"),
    ('base = "demo"\n[models.extra]\nlike = "crop"', "blend.weights names ['crop', 'full'] must name each model once"),
    ('base = "demo"\n[models.full]\ninput = "crop"', "at least one model must have input = 'full'"),
    ('base = "demo"\n[models.full_image]\nlike = "crop"\n[blend.weights]\nfull_image = 1.0',
     "would both be Kaggle kernel 'iwc-full-image-model'"),
])
def test_bad_recipe_files_are_one_line_naming_the_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(IwcError) as e:
        load_recipe(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_byte_order_mark_is_not_content(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'base = "demo"\nseed = 3\n')
    assert load_recipe(path).seed == 3


def test_a_saved_recipe_json_is_taken_whole_not_merged_onto_a_base(tmp_path):
    data = DEMO.to_dict()
    data["models"] = {"solo": data["models"]["full"]}
    data["blend"] = {"weights": {"solo": 1.0}}
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(data))
    r = load_recipe(path)
    assert (r.name, list(r.models)) == ("saved", ["solo"])  # the reference's full and crop are not added
