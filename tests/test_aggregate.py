"""Aggregation: alignment by category id, the blend of N models, and the two sequence votes."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from iwc.aggregate import align, blend, combine, mean_prob_vote, sequence_vote
from iwc.errors import IwcError
from iwc.probs import ProbTable
from iwc.recipe import DEMO, Sequences

REF = {"full": 0.3, "crop": 0.7}


def two(full: ProbTable, crop: ProbTable, weights: dict = REF) -> ProbTable:
    """The reference's blend of a full-image and a crop model, over the full model's images."""
    return blend({"full": full, "crop": crop}, weights, full.image_ids)


def table(image_ids, category_ids, seed=0) -> ProbTable:
    """Random row-normalized probabilities."""
    rng = np.random.default_rng(seed)
    p = rng.random((len(image_ids), len(category_ids)), dtype=np.float32)
    return ProbTable(np.array(image_ids), np.array(category_ids), p / p.sum(axis=1, keepdims=True))


def test_align_places_columns_by_category_id_and_zero_fills():
    t = ProbTable(np.array(["a"]), np.array([2, 7, 40]), np.array([[0.1, 0.3, 0.6]]))
    out = align(t, [40, 0, 7, 2, 99])
    np.testing.assert_array_equal(out, np.array([[0.6, 0.0, 0.3, 0.1, 0.0]], dtype=np.float32))
    assert out.dtype == np.float32


def test_align_copies_runs_of_columns_and_handles_an_empty_table():
    t = table(["a", "b"], [1, 2, 3, 8, 9])
    out = align(t, [0, 1, 2, 3, 5, 8, 9])
    np.testing.assert_array_equal(out[:, [1, 2, 3, 5, 6]], t.probs)
    np.testing.assert_array_equal(out[:, [0, 4]], 0.0)
    empty = ProbTable(np.array(["a"]), np.array([], dtype=np.int64), np.zeros((1, 0)))
    np.testing.assert_array_equal(align(empty, [4, 5]), [[0.0, 0.0]])


def test_align_refuses_to_drop_a_category():
    t = table(["a"], [2, 7])
    with pytest.raises(IwcError, match="not in the target list"):
        align(t, [2, 3])


def test_blend_crop_with_seven_fewer_classes():
    full_ids = np.array([0, 3, 10, 11, 12, 20, 30, 40, 50, 60, 70])
    crop_ids = np.delete(full_ids, [1, 2, 4, 6, 7, 8, 10])  # 7 fewer: [0, 11, 20, 60]
    full = table(["a", "b", "c"], full_ids, seed=1)
    crop = table(["c", "a"], crop_ids, seed=2)  # different row order, one image without a crop
    out = two(full, crop)
    np.testing.assert_array_equal(out.category_ids, full_ids)
    np.testing.assert_array_equal(out.image_ids, ["a", "b", "c"])
    for row, crop_row in ((0, 1), (2, 0)):
        expected = 0.3 * full.probs[row].astype(np.float64)
        expected[np.isin(full_ids, crop_ids)] += 0.7 * crop.probs[crop_row]
        np.testing.assert_allclose(out.probs[row], expected, rtol=1e-6)
    np.testing.assert_array_equal(out.probs[1], full.probs[1])  # no crop: p_full alone, exactly
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, rtol=1e-5)


def test_blend_disjoint_class_sets_uses_the_union():
    full = ProbTable(np.array(["a", "b"]), np.array([1, 5]), np.array([[0.2, 0.8], [0.9, 0.1]]))
    crop = ProbTable(np.array(["a"]), np.array([3, 9]), np.array([[0.4, 0.6]]))
    out = two(full, crop)
    np.testing.assert_array_equal(out.category_ids, [1, 3, 5, 9])
    np.testing.assert_allclose(out.probs, [[0.06, 0.28, 0.24, 0.42], [0.9, 0.0, 0.1, 0.0]], rtol=1e-6)
    assert out.argmax_category().tolist() == [9, 1]


def test_blend_normalizes_weights():
    full = ProbTable(np.array(["a"]), np.array([1, 2]), np.array([[1.0, 0.0]]))
    crop = ProbTable(np.array(["a"]), np.array([1, 2]), np.array([[0.0, 1.0]]))
    out = two(full, crop, {"full": 1.0, "crop": 3.0})
    np.testing.assert_allclose(out.probs, [[0.25, 0.75]])


def test_blend_rejects_crop_rows_for_unknown_images_and_bad_weights():
    full = table(["a", "b"], [0, 1])
    with pytest.raises(IwcError, match=r"2 images of model 'crop' .*zz, yy"):
        two(full, table(["zz", "a", "yy"], [0, 1]))
    with pytest.raises(IwcError, match="non-negative"):
        two(full, table(["a"], [0, 1]), {"full": -0.5, "crop": 0.7})
    with pytest.raises(IwcError, match=r"1 images are not in any model's table \(e\.g\. c\)"):
        blend({"full": full}, {"full": 1.0}, np.array(["a", "b", "c"]))


def test_blend_of_three_models_renormalizes_over_the_models_with_a_row():
    ids = np.array([0, 1])
    full = ProbTable(np.array(["a", "b", "c"]), ids, np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    crop = ProbTable(np.array(["a", "b"]), ids, np.array([[0.0, 1.0], [0.0, 1.0]]))
    crop2 = ProbTable(np.array(["a"]), ids, np.array([[0.5, 0.5]]))
    out = blend({"full": full, "crop": crop, "crop2": crop2}, {"full": 0.2, "crop": 0.4, "crop2": 0.4},
                np.array(["a", "b", "c"]))
    np.testing.assert_allclose(out.probs, [[0.2 + 0.2, 0.4 + 0.2], [0.2 / 0.6, 0.4 / 0.6], [1.0, 0.0]], rtol=1e-6)


def test_blend_of_models_whose_weights_are_all_zero_on_a_row_takes_their_mean():
    ids = np.array([0, 1])
    full = ProbTable(np.array(["a", "b"]), ids, np.array([[1.0, 0.0], [0.2, 0.8]]))
    crop = ProbTable(np.array(["a"]), ids, np.array([[0.0, 1.0]]))
    out = two(full, crop, {"full": 0.0, "crop": 1.0})
    np.testing.assert_array_equal(out.probs, np.array([[0.0, 1.0], [0.2, 0.8]], dtype=np.float32))  # b: p_full


def test_blend_of_two_models_is_the_reference_arithmetic_to_the_bit():
    full = table([f"i{k}" for k in range(500)], np.arange(30), seed=6)
    crop = table([f"i{k}" for k in range(0, 500, 3)], np.arange(0, 30, 2), seed=7)
    out = two(full, crop)
    rows = pd.Index(full.image_ids).get_indexer(crop.image_ids)
    expected = full.probs.copy()
    mixed = np.zeros((len(crop), 30), dtype=np.float32)
    mixed[:, ::2] = crop.probs
    mixed *= 0.7 / 1.0
    mixed += (0.3 / 1.0) * expected[rows]
    expected[rows] = mixed
    np.testing.assert_array_equal(out.probs, expected)


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        ([0, 0, 0, 5], [5, 5, 5, 5]),  # any non-empty beats a larger empty count
        ([0, 0], [0, 0]),
        ([3, 3, 5], [3, 3, 3]),
        ([5, 3, 0, 0, 0], [3, 3, 3, 3, 3]),  # tie 3 vs 5: smallest id, not first seen
        ([7], [7]),
    ],
)
def test_sequence_vote_single_sequence(predicted, expected):
    assert sequence_vote(np.array(predicted), np.zeros(len(predicted), dtype=np.int64)).tolist() == expected


def test_sequence_vote_interleaved_sequences_and_custom_empty_id():
    predicted = np.array([0, 4, 9, 4, 0, 9, 9])
    keys = np.array(["s1", "s2", "s1", "s2", "s3", "s1", "s2"])
    assert sequence_vote(predicted, keys).tolist() == [9, 4, 9, 4, 0, 9, 4]
    # With 9 as "empty", s1 = [0, 9, 9] prefers 0, s2 = [4, 4, 9] stays 4.
    assert sequence_vote(predicted, keys, empty_id=9).tolist() == [0, 4, 0, 4, 0, 0, 4]


def test_sequence_vote_is_independent_of_row_order():
    rng = np.random.default_rng(3)
    predicted = rng.choice([0, 0, 0, 2, 5, 17], size=500)
    keys = rng.integers(0, 60, size=500)
    voted = sequence_vote(predicted, keys)
    perm = rng.permutation(500)
    np.testing.assert_array_equal(sequence_vote(predicted[perm], keys[perm]), voted[perm])
    # Every image of a sequence gets one label, and it is one the sequence predicted.
    for k in np.unique(keys):
        assert len(set(voted[keys == k])) == 1
        assert voted[keys == k][0] in predicted[keys == k]


def test_votes_check_their_inputs():
    with pytest.raises(IwcError, match="one key per image"):
        sequence_vote(np.array([1, 2]), np.array([1]))
    with pytest.raises(IwcError, match="missing sequence key"):
        sequence_vote(np.array([1, 2]), np.array([1.0, np.nan]))
    assert sequence_vote(np.array([], dtype=np.int64), np.array([])).tolist() == []


def test_mean_prob_vote_weighs_confidence():
    # s1: two weak votes for 1, one strong vote for 8 -> mean favours 8 (majority would give 1).
    probs = np.array([[0.55, 0.45], [0.55, 0.45], [0.0, 1.0], [0.3, 0.7]], dtype=np.float32)
    t = ProbTable(np.array(["a", "b", "c", "d"]), np.array([1, 8]), probs)
    keys = np.array([1, 1, 1, 2])
    assert mean_prob_vote(t, keys).tolist() == [8, 8, 8, 8]
    assert sequence_vote(t.argmax_category(), keys).tolist() == [1, 1, 1, 8]


def test_mean_prob_vote_tie_goes_to_smallest_id_and_matches_explicit_means():
    t = ProbTable(np.array(["a", "b"]), np.array([4, 6]), np.array([[0.7, 0.3], [0.3, 0.7]]))
    assert mean_prob_vote(t, np.array([0, 0])).tolist() == [4, 4]
    big = table([f"i{k}" for k in range(300)], [0, 2, 5, 9], seed=4)
    keys = np.random.default_rng(5).integers(0, 40, size=300)
    expected = [big.category_ids[big.probs[keys == k].mean(axis=0).argmax()] for k in keys]
    assert mean_prob_vote(big, keys).tolist() == expected
    assert mean_prob_vote(table([], [0, 2]), np.array([])).tolist() == []


def test_combine_applies_blend_then_the_recipes_vote():
    full = ProbTable(np.array(["a", "b", "c"]), np.array([0, 1, 2]),
                     np.array([[0.9, 0.1, 0.0], [0.6, 0.0, 0.4], [0.0, 0.0, 1.0]]))
    crop = ProbTable(np.array(["a"]), np.array([0, 1]), np.array([[0.0, 1.0]]))
    keys = pd.Series([7, 7, 8], index=["c", "a", "b"])  # keyed by image id, not by position
    out = {vote: combine({"full": full, "crop": crop}, full.image_ids, keys,
                         replace(DEMO, sequences=Sequences(vote=vote)))
           for vote in ("none", "majority", "mean_prob")}
    assert out["none"].to_dict() == {"a": 1, "b": 0, "c": 2}
    assert out["majority"].to_dict() == {"a": 1, "b": 0, "c": 1}  # a, c share a sequence: tie -> 1
    assert out["mean_prob"].to_dict() == {"a": 2, "b": 0, "c": 2}  # sum of a, c: [0.27, 0.73, 1.0]
    assert list(out["none"].index) == ["a", "b", "c"]


def test_combine_rejects_unknown_vote_and_missing_keys():
    full, crop = table(["a", "b"], [0, 1]), table(["a"], [0, 1])
    with pytest.raises(IwcError, match="unknown sequence vote"):
        combine({"full": full, "crop": crop}, full.image_ids, pd.Series([1, 1], index=["a", "b"]),
                replace(DEMO, sequences=Sequences(vote="max")))
    with pytest.raises(IwcError, match=r"1 images are not in the sequence keys \(e\.g\. b\)"):
        combine({"full": full, "crop": crop}, full.image_ids, pd.Series([1], index=["a"]), DEMO)
