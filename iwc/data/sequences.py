"""Group images into camera-trap sequences (bursts), the unit the sequence vote works on.

"time" is the reference rule: per location, in datetime order, a new sequence starts when the location
changes or the gap to the previous image exceeds `gap_s` (a gap of exactly `gap_s` stays in the same
sequence). "seq_id" uses the competition's own `seq_id` field instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iwc.errors import IwcError

METHODS = ("time", "seq_id")


def assign_sequences(images: pd.DataFrame, method: str = "time", gap_s: float = 20.0) -> pd.Series:
    """Images (location, datetime, seq_id) -> int64 sequence key per image, same index and order.

    Keys are 0..S-1, numbered by (location, first datetime) for "time", by first appearance for "seq_id".
    """
    if method == "seq_id":
        keys = pd.factorize(images["seq_id"])[0]
    elif method == "time":
        keys = _time_keys(images["location"].to_numpy(), images["datetime"], gap_s)
    else:
        raise IwcError(f"sequence method {method!r} is not one of {list(METHODS)}: set sequences.method")
    return pd.Series(keys.astype(np.int64), index=images.index, name="sequence")


def _time_keys(location: np.ndarray, datetime: pd.Series, gap_s: float) -> np.ndarray:
    if datetime.isna().any():
        raise IwcError("some images have no datetime, so the time rule cannot group them: "
                       "use sequences.method = 'seq_id'")
    ns = datetime.to_numpy(dtype="datetime64[ns]").view(np.int64)
    order = np.lexsort((ns, location))  # stable: equal timestamps keep input order
    loc, t = location[order], ns[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (loc[1:] != loc[:-1]) | (np.diff(t) > round(gap_s * 1e9))
    keys = np.empty(len(order), dtype=np.int64)
    keys[order] = np.cumsum(starts) - 1
    return keys
