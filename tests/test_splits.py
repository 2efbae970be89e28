import numpy as np
import pandas as pd
import pytest

from iwc.data.splits import category_split, location_split, make_split
from iwc.errors import IwcError
from iwc.recipe import Split


def images(n=3000, locations=60, categories=(0, 3, 75, 372), seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"location": rng.integers(0, locations, n) * 7,  # sparse location numbers
                         "category_id": rng.choice(categories, n, p=[0.5, 0.3, 0.15, 0.05])})


def test_location_split_holds_out_whole_locations_near_the_fraction():
    frame = images()
    val = location_split(frame, 0.3, seed=1)
    assert val.dtype == bool and val.shape == (len(frame),)
    assert set(frame.location[val]).isdisjoint(frame.location[~val])
    largest = frame.location.value_counts().max() / len(frame)
    assert 0.3 <= val.mean() < 0.3 + largest


def test_location_split_is_deterministic_by_seed():
    frame = images()
    first = location_split(frame, 0.3, seed=5)
    assert np.array_equal(first, location_split(frame, 0.3, seed=5))
    assert any(not np.array_equal(first, location_split(frame, 0.3, seed=s)) for s in range(6, 9))


def test_location_split_keeps_a_location_on_each_side_and_needs_two():
    two = pd.DataFrame({"location": [1] * 9 + [2]})
    val = location_split(two, 0.99, seed=0)
    assert 0 < val.sum() < len(two)
    with pytest.raises(IwcError, match="at least 2 locations"):
        location_split(pd.DataFrame({"location": [4, 4, 4]}), 0.3, seed=0)


def test_category_split_takes_the_fraction_of_each_category():
    frame = images()
    val = category_split(frame, 0.3, seed=2)
    for category, n in frame.category_id.value_counts().items():
        assert val[frame.category_id == category].sum() == int(0.3 * n + 0.5), category
    assert np.array_equal(val, category_split(frame, 0.3, seed=2))
    assert not np.array_equal(val, category_split(frame, 0.3, seed=3))


def test_make_split_follows_the_recipe():
    frame = images()
    assert np.array_equal(make_split(frame, Split("location", 0.25), 4), location_split(frame, 0.25, 4))
    assert np.array_equal(make_split(frame, Split("category", 0.25), 4), category_split(frame, 0.25, 4))
    with pytest.raises(IwcError, match=r"split\.method"):
        make_split(frame, Split("random", 0.25), 4)


def test_bad_fraction_or_unlabelled_images_are_iwc_errors():
    with pytest.raises(IwcError, match="val_fraction"):
        location_split(images(), 1.0, seed=0)
    with pytest.raises(IwcError, match="category_id"):
        category_split(pd.DataFrame({"location": [1, 2]}), 0.3, seed=0)
