"""The stages' pure pieces: crop rows -> image rows, per-step predictions, and the `Rows` view."""

import numpy as np
import pandas as pd

from iwc.probs import ProbTable
from iwc.recipe import REFERENCE
from iwc.stages.aggregate import step_predictions
from iwc.stages.common import Rows
from iwc.stages.crop import per_image

CATEGORIES = [0, 3, 72]


def test_per_image_takes_the_confidence_weighted_mean_of_an_images_crops():
    crops = pd.DataFrame({
        "row_id": ["a_0", "b_0", "a_1", "a_2"],
        "image_id": ["a", "b", "a", "a"],
        "conf": [0.5, 0.9, 0.3, 0.2],
    })
    table = ProbTable(["a_0", "a_1", "b_0", "a_2"], CATEGORIES, [
        [0.1, 0.8, 0.1],
        [0.5, 0.5, 0.0],
        [0.2, 0.2, 0.6],
        [0.0, 0.0, 1.0],
    ])

    out = per_image(table, crops)

    assert out.image_ids.tolist() == ["a", "b"]
    assert out.category_ids.tolist() == CATEGORIES
    # a: (0.5 * a_0 + 0.3 * a_1 + 0.2 * a_2) / 1.0
    expected_a = [0.05 + 0.15, 0.4 + 0.15, 0.05 + 0.2]
    np.testing.assert_allclose(out.probs, [expected_a, [0.2, 0.2, 0.6]], atol=1e-6)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-6)


def test_per_image_with_one_crop_keeps_its_probabilities():
    crops = pd.DataFrame({"row_id": ["x_0", "y_0"], "image_id": ["x", "y"], "conf": [0.4, 0.95]})
    probs = np.array([[0.25, 0.5, 0.25], [0.1, 0.3, 0.6]], dtype=np.float32)
    out = per_image(ProbTable(["y_0", "x_0"], CATEGORIES, probs), crops)
    assert out.image_ids.tolist() == ["y", "x"]
    np.testing.assert_array_equal(out.probs, probs)


def _images(ids, locations, seconds) -> pd.DataFrame:
    start = pd.Timestamp("2020-01-01 12:00:00")
    return pd.DataFrame({
        "id": ids,
        "location": locations,
        "datetime": [start + pd.Timedelta(seconds=s) for s in seconds],
        "seq_id": [f"s{loc}" for loc in locations],
    })


def test_step_predictions_columns_per_step():
    # a, b, c: one burst (1 s apart); e: same camera a minute later; d: another camera.
    ids = ["a", "b", "c", "d", "e"]
    images = _images(ids, [1, 1, 1, 2, 1], [0, 1, 2, 0, 62])
    full = ProbTable(ids, CATEGORIES, [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.7, 0.2, 0.1],
        [0.1, 0.2, 0.7],
        [0.9, 0.05, 0.05],
    ])
    # The crop model knows fewer classes; only b and d have a crop.
    crop = ProbTable(["d", "b"], [3, 72], [[0.2, 0.8], [0.9, 0.1]])

    out = step_predictions({"full": full, "crop": crop}, images, REFERENCE)

    assert list(out.columns) == ["Id", "full", "crop", "blend", "final"]
    assert out["Id"].tolist() == ids
    assert out["full"].tolist() == [0, 0, 0, 72, 0]
    assert out["crop"].tolist() == [0, 3, 0, 72, 0]  # no crop -> empty
    # b: 0.3 * (0.6, 0.3, 0.1) + 0.7 * (0, 0.9, 0.1) = (0.18, 0.9, 0.1)
    assert out["blend"].tolist() == [0, 3, 0, 72, 0]
    # The burst takes its one non-empty answer; e (60 s later) and d (elsewhere) keep theirs.
    assert out["final"].tolist() == [3, 3, 3, 72, 0]
    assert all(out[c].dtype == np.int64 for c in ("full", "crop", "blend", "final"))


def test_step_predictions_follow_the_images_order_whatever_the_tables_order():
    full = ProbTable(["a", "b"], CATEGORIES, np.eye(3)[:2])
    crop = ProbTable([], CATEGORIES, np.zeros((0, 3)))
    out = step_predictions({"full": full, "crop": crop}, _images(["b", "a"], [1, 2], [0, 1]), REFERENCE)
    assert out["Id"].tolist() == ["b", "a"] and out["full"].tolist() == [3, 0] and out["crop"].tolist() == [0, 0]


def test_rows_maps_len_slices_and_index_arrays_to_the_underlying_rows():
    array = np.arange(10 * 3).reshape(10, 3)
    rows = Rows(array, [7, 2, 9, 4])

    assert len(rows) == 4
    np.testing.assert_array_equal(rows[:2], array[[7, 2]])
    np.testing.assert_array_equal(rows[1:4], array[[2, 9, 4]])
    np.testing.assert_array_equal(rows[np.array([3, 0])], array[[4, 7]])
    assert len(Rows(array, np.array([], dtype=np.int64))) == 0


def test_rows_reads_through_a_memory_map(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.arange(6 * 2, dtype=np.uint8).reshape(6, 2))
    rows = Rows(np.load(path, mmap_mode="r"), np.array([5, 0]))
    np.testing.assert_array_equal(rows[0:2], [[10, 11], [0, 1]])
