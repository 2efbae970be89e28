"""Issue 15 item 1: `blend.no_crop`, the crop models' background class, and the vote over non-empty
predictions."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from iwc.aggregate import blend, blend_recipe, combine, no_crop_rule, sequence_vote
from iwc.errors import IwcError
from iwc.probs import ProbTable
from iwc.recipe import DEMO, load_recipe
from iwc.stages.crop import background_rows


def table(image_ids, category_ids, probs) -> ProbTable:
    return ProbTable(np.array(image_ids), np.array(category_ids), np.array(probs, dtype=np.float32))


FULL = table(["a", "b", "c"], [0, 5, 9], [[0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
CROP = table(["a"], [5, 9], [[0.1, 0.9]])  # only image "a" has a crop; the crop model never saw empty


def test_no_crop_full_keeps_the_full_model_for_images_without_a_crop():
    blended = blend({"full": FULL, "crop": CROP}, {"full": 0.3, "crop": 0.7}, FULL.image_ids)
    out = no_crop_rule(blended, [CROP], "full")
    assert out is blended
    assert out.argmax_category().tolist() == [9, 9, 0]  # b, c: the full model's own argmax


def test_no_crop_empty_makes_images_without_a_crop_certain_empty():
    blended = blend({"full": FULL, "crop": CROP}, {"full": 0.3, "crop": 0.7}, FULL.image_ids)
    out = no_crop_rule(blended, [CROP], "empty")
    assert out.argmax_category().tolist() == [9, 0, 0]  # b had 9 from the full model alone: now empty
    np.testing.assert_array_equal(out.probs[1:], [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(out.probs[0], blended.probs[0])  # a has a crop: unchanged


def test_no_crop_empty_adds_the_empty_column_when_no_model_knows_it():
    full = table(["a", "b"], [5, 9], [[0.6, 0.4], [0.3, 0.7]])
    out = no_crop_rule(full, [table(["a"], [5], [[1.0]])], "empty")
    assert out.category_ids.tolist() == [0, 5, 9]
    assert out.argmax_category().tolist() == [5, 0]


def test_no_crop_rule_refuses_an_unknown_rule():
    with pytest.raises(IwcError, match=r"blend\.no_crop = 'maybe'"):
        no_crop_rule(FULL, [CROP], "maybe")


def test_the_recipe_rule_reaches_combine():
    keys = pd.Series([1, 2, 3], index=["a", "b", "c"])
    tables = {"full": FULL, "crop": CROP}
    full_rule = combine(tables, FULL.image_ids, keys, DEMO)
    empty = replace(DEMO, blend=replace(DEMO.blend, no_crop="empty"))
    assert full_rule.tolist() == [9, 9, 0]
    assert combine(tables, FULL.image_ids, keys, empty).tolist() == [9, 0, 0]
    assert blend_recipe(tables, empty, FULL.image_ids).argmax_category().tolist() == [9, 0, 0]


def test_recipe_no_crop_and_background_load_and_are_checked():
    r = load_recipe("demo", ["blend.no_crop=empty", "crop.crops.background=false"])
    assert r.blend.no_crop == "empty" and r.models["crop"].crops.background is False
    assert load_recipe("demo").blend.no_crop == "full"  # today's rule stays the default
    assert load_recipe("demo").models["crop"].crops.background is True  # today's training set stays too
    with pytest.raises(IwcError, match=r"blend\.no_crop = 'maybe' must be one of 'full', 'empty'"):
        load_recipe("demo", ["blend.no_crop=maybe"])
    with pytest.raises(IwcError, match="needs a model with input = 'crop'"):
        load_recipe("demo", ["crop.input=full", "blend.no_crop=empty"])


def test_background_rows_keep_or_drop_the_crops_of_empty_training_frames():
    train = pd.DataFrame({"row_id": ["a", "b", "c", "d"], "category_id": [0, 5, 0, 0],
                          "is_val": [False, False, True, False]})
    assert background_rows(train, True).equals(train)
    kept = background_rows(train, False)
    assert kept["row_id"].tolist() == ["b", "c"]  # validation crops stay: they are predicted, not trained on


def test_majority_vote_already_prefers_non_empty_predictions():
    # Nothing to add for 3rd place's "vote over non-background": the reference vote already does it.
    assert sequence_vote(np.array([0, 0, 0, 7, 0]), np.zeros(5)).tolist() == [7] * 5
    assert sequence_vote(np.array([0, 0]), np.zeros(2)).tolist() == [0, 0]


def test_confused_pairs_by_name_most_frequent_first_and_the_report_section():
    from iwc.insight import confused_pairs, insight_markdown

    names = {0: "empty", 5: "deer", 9: "fox"}
    truth = np.array([5, 5, 5, 9, 9, 0, 0, 5])
    pred = np.array([9, 9, 5, 5, 0, 5, 0, 0])
    pairs = confused_pairs(truth, pred, names)
    assert pairs == [["deer (5)", "fox (9)", 2], ["empty (0)", "deer (5)", 1], ["deer (5)", "empty (0)", 1],
                     ["fox (9)", "empty (0)", 1], ["fox (9)", "deer (5)", 1]]
    assert confused_pairs(truth, pred, names, k=1) == pairs[:1]
    assert confused_pairs(truth, truth, names) == []
    text = insight_markdown({"crop": pairs})
    assert "![confusion matrix of crop](confusion_crop.png)" in text and "| deer (5) | fox (9) | 2 |" in text
