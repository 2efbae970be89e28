import numpy as np
import pandas as pd
import pytest

from iwc.data.sequences import assign_sequences
from iwc.errors import IwcError

T0 = pd.Timestamp("2013-08-02 21:44:00")


def frame(rows, index=None):
    """rows: (location, seconds after T0, seq_id)."""
    return pd.DataFrame({"location": np.array([r[0] for r in rows], dtype=np.int64),
                         "datetime": [T0 + pd.Timedelta(seconds=r[1]) for r in rows],
                         "seq_id": [r[2] for r in rows]}, index=index)


def test_gap_of_exactly_gap_s_stays_in_the_sequence_longer_starts_a_new_one():
    keys = assign_sequences(frame([(1, 0, "a"), (1, 20, "a"), (1, 40.001, "b"), (1, 60.001, "b")]))
    assert keys.tolist() == [0, 0, 1, 1]


def test_location_change_starts_a_new_sequence_even_at_the_same_time():
    keys = assign_sequences(frame([(1, 0, "a"), (2, 0, "a"), (2, 5, "a"), (1, 10, "a")]))
    assert keys.tolist() == [0, 1, 1, 0]


def test_keys_follow_input_order_and_index_whatever_the_order():
    images = frame([(7, 100, "x"), (3, 50, "y"), (7, 0, "z"), (3, 45, "y"), (7, 110, "x")],
                   index=[10, 4, 8, 2, 6])
    keys = assign_sequences(images)
    assert keys.dtype == np.int64
    assert keys.index.tolist() == [10, 4, 8, 2, 6]
    # sorted: loc 3 @45,50 -> 0; loc 7 @0 -> 1; loc 7 @100,110 -> 2
    assert keys.tolist() == [2, 0, 1, 0, 2]


def test_gap_s_is_configurable():
    images = frame([(1, 0, "a"), (1, 30, "a")])
    assert assign_sequences(images, gap_s=20).tolist() == [0, 1]
    assert assign_sequences(images, gap_s=30).tolist() == [0, 0]


def test_seq_id_method_uses_the_competition_field():
    images = frame([(1, 0, "s1"), (1, 999, "s1"), (1, 1, "s2"), (2, 0, "s1")])
    keys = assign_sequences(images, method="seq_id")
    assert keys.dtype == np.int64
    assert keys.tolist() == [0, 0, 1, 0]


def test_unknown_method_and_missing_datetime_are_iwc_errors():
    with pytest.raises(IwcError, match=r"sequences\.method"):
        assign_sequences(frame([(1, 0, "a")]), method="burst")
    images = frame([(1, 0, "a"), (1, 5, "a")])
    images.loc[1, "datetime"] = pd.NaT
    with pytest.raises(IwcError, match="seq_id"):
        assign_sequences(images)
