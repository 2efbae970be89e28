"""Aggregation: blend any number of models by category id, then vote within sequences.

Pure, vectorized functions over `ProbTable` and numpy arrays. Columns are always matched by ORIGINAL
category id (a crop model may know fewer classes than a full-image model), rows by image id.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from iwc.data.categories import EMPTY
from iwc.errors import IwcError
from iwc.probs import ProbTable
from iwc.recipe import Recipe

NO_CROP = ("full", "empty")  # blend.no_crop: what an image without a crop gets


def align(table: ProbTable, category_ids: np.ndarray) -> np.ndarray:
    """(N, len(category_ids)) float32: `table.probs` re-indexed by category id.

    Ids the table lacks become zero columns. A table column whose id is not in `category_ids` is an
    error: dropping it would silently lose probability mass.
    """
    ids = np.asarray(category_ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise IwcError("align: target category ids contain duplicates; pass each id once")
    target = pd.Index(ids).get_indexer(table.category_ids)  # output column of each table column
    if np.any(target < 0):
        dropped = table.category_ids[target < 0]
        raise IwcError(
            f"align: {len(dropped)} table categories are not in the target list "
            f"(e.g. {dropped[:5].tolist()}); align to a list that contains every model category"
        )
    out = np.zeros((len(table), len(ids)), dtype=np.float32)
    # Copy runs of consecutive columns as slices: a column-wise fancy scatter is several times slower.
    # (-2 is never a neighbour: the first column starts a run, the last one ends one.)
    starts = np.flatnonzero(np.diff(target, prepend=-2) != 1)
    stops = np.flatnonzero(np.diff(target, append=-2) != 1) + 1
    for start, stop in zip(starts, stops, strict=True):
        out[:, target[start] : target[start] + stop - start] = table.probs[:, start:stop]
    return out


def blend(tables: Mapping[str, ProbTable], weights: Mapping[str, float], image_ids: np.ndarray) -> ProbTable:
    """The models' tables (name -> table) blended over the union of their category ids, one row per image of
    `image_ids`, in that order.

    Each image gets sum(w_m * p_m) / sum(w_m) over the models with a row for it: a crop model has none for an
    image without a crop, which so gets the blend of the others (the full-image models) renormalized. Where
    those models' weights are all 0, the image gets their plain mean. A table row for an image outside
    `image_ids`, or an image no table covers, is an error.
    """
    names = list(tables)
    w = np.array([weights[name] for name in names], dtype=np.float64)
    if not names or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise IwcError(f"blend weights {dict(weights)} must be non-negative with a positive sum; fix recipe.blend")
    index = pd.Index(image_ids)
    rows = {}
    for name in names:
        rows[name] = index.get_indexer(tables[name].image_ids)
        if np.any(rows[name] < 0):
            raise _missing_ids(tables[name].image_ids[rows[name] < 0], f"images of model {name!r}",
                               "the images blended")
    present = np.zeros((len(index), len(names)), dtype=bool)
    for j, name in enumerate(names):
        present[rows[name], j] = True
    share = present * w
    zero = share.sum(axis=1) == 0
    share[zero] = present[zero]  # every weight 0: the plain mean
    total = share.sum(axis=1)
    if np.any(total == 0):
        raise _missing_ids(np.asarray(image_ids)[total == 0], "images", "any model's table")
    ids = functools.reduce(np.union1d, [t.category_ids for t in tables.values()])
    probs = np.zeros((len(index), len(ids)), dtype=np.float32)
    for j, name in enumerate(names):
        r = rows[name]
        probs[r] += (share[r, j] / total[r]).astype(np.float32)[:, None] * align(tables[name], ids)
    return ProbTable(np.asarray(image_ids), ids, probs)


def no_crop_rule(blended: ProbTable, crop_tables: Iterable[ProbTable], no_crop: str = "full") -> ProbTable:
    """`blended` with the recipe's rule for images no crop model has a row for (`blend.no_crop`).

    "full": unchanged (the full-image models alone, as `blend` renormalized them). "empty": those images are
    certain empty (category 0, a column added when missing), as 3rd place predicted them.
    """
    if no_crop not in NO_CROP:
        raise IwcError(f"blend.no_crop = {no_crop!r} must be one of {', '.join(map(repr, NO_CROP))}")
    if no_crop == "full":
        return blended
    cropped = functools.reduce(np.union1d, [t.image_ids for t in crop_tables], np.array([], dtype=str))
    bare = ~np.isin(blended.image_ids, cropped)
    ids = np.union1d(blended.category_ids, [EMPTY])
    probs = align(blended, ids)
    probs[bare] = 0.0
    probs[bare, np.searchsorted(ids, EMPTY)] = 1.0
    return ProbTable(blended.image_ids, ids, probs)


def sequence_vote(predicted: np.ndarray, seq_keys: np.ndarray, empty_id: int = EMPTY) -> np.ndarray:
    """(N,) int64: every image gets its sequence's winning category (the reference rule).

    `predicted` holds each image's category id, `seq_keys` its sequence key (any hashable values,
    same order). The winner is the most frequent NON-EMPTY category when any image of the sequence
    predicts one, else `empty_id`. Ties go to the smallest category id.
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    seq, n_seq = _sequence_codes(seq_keys, len(predicted))
    if not len(predicted):
        return predicted.copy()
    cat_code, cats = pd.factorize(predicted, sort=True)  # codes follow category id order
    pairs, counts = np.unique(seq * len(cats) + cat_code, return_counts=True)
    pair_seq, pair_cat = np.divmod(pairs, len(cats))
    # Within each sequence: non-empty first, then most frequent, then smallest id (lexsort: last key primary).
    order = np.lexsort((pair_cat, -counts, cats[pair_cat] == empty_id, pair_seq))
    pair_seq, pair_cat = pair_seq[order], pair_cat[order]
    first = np.r_[True, pair_seq[1:] != pair_seq[:-1]]
    winner = np.empty(n_seq, dtype=np.int64)
    winner[pair_seq[first]] = cats[pair_cat[first]]
    return winner[seq]


def mean_prob_vote(table: ProbTable, seq_keys: np.ndarray) -> np.ndarray:
    """(N,) int64: each image gets the argmax category of its sequence's mean probabilities.

    `seq_keys` follows the table's row order. Ties go to the smallest category id.
    """
    seq, n_seq = _sequence_codes(seq_keys, len(table))
    order = np.argsort(seq, kind="stable")  # rows grouped by sequence, row order kept inside each
    grouped = seq[order]
    rank = np.arange(len(seq)) - np.searchsorted(grouped, grouped)  # position within its sequence
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max(initial=-1) + 2))
    # One pass per frame position: the k-th frames of all sequences hit distinct rows of `sums`, so a
    # fancy-indexed += is exact. (np.add.reduceat / np.add.at are several times slower here.)
    sums = np.zeros((n_seq, len(table.category_ids)), dtype=np.float32)
    for lo, hi in itertools.pairwise(bounds):
        rows = by_rank[lo:hi]
        sums[grouped[rows]] += table.probs[order[rows]]
    # The argmax of the sum is the argmax of the mean.
    return table.category_ids[np.argmax(sums, axis=1)][seq]


_VOTES: dict[str, Callable[[ProbTable, np.ndarray], np.ndarray]] = {
    "majority": lambda table, keys: sequence_vote(table.argmax_category(), keys),
    "mean_prob": mean_prob_vote,
}


def combine(tables: Mapping[str, ProbTable], image_ids: np.ndarray, seq_keys: pd.Series, recipe: Recipe) -> pd.Series:
    """Final predictions: blend (recipe.blend, its no-crop rule) over `image_ids`, then the recipe's sequence vote.

    `seq_keys` maps image id (index) -> sequence key. Returns a Series image id -> category id in
    `image_ids`' order, ready for `iwc.submission.assemble`.
    """
    return vote(blend_recipe(tables, recipe, image_ids), seq_keys, recipe.sequences.vote)


def blend_recipe(tables: Mapping[str, ProbTable], recipe: Recipe, image_ids: np.ndarray) -> ProbTable:
    """`blend` with `recipe.blend.weights`, then `no_crop_rule` with `recipe.blend.no_crop`."""
    crops = [t for name, t in tables.items() if recipe.models[name].input == "crop"]
    return no_crop_rule(blend(tables, recipe.blend.weights, image_ids), crops, recipe.blend.no_crop)


def vote(table: ProbTable, seq_keys: pd.Series, method: str) -> pd.Series:
    """Each image's category after the sequence vote `method` ("majority" | "mean_prob" | "none").

    `seq_keys` maps image id (index) -> sequence key. Returns a Series image id -> category id in the
    table's row order.
    """
    if method != "none" and method not in _VOTES:
        raise IwcError(f"unknown sequence vote {method!r}; use one of {['none', *sorted(_VOTES)]}")
    if method == "none":
        categories = table.argmax_category()
    else:
        if not seq_keys.index.is_unique:
            raise IwcError("sequence keys: image ids are duplicated; pass one key per image")
        keys = seq_keys.reindex(table.image_ids)
        if keys.isna().any():
            raise _missing_ids(table.image_ids[keys.isna().to_numpy()], "images", "the sequence keys")
        categories = _VOTES[method](table, keys.to_numpy())
    return pd.Series(categories, index=pd.Index(table.image_ids, name="image_id"), name="category_id")


def _sequence_codes(seq_keys: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Sequence keys -> (codes 0..S-1 in order of first appearance, S)."""
    keys = np.asarray(seq_keys)
    if keys.shape != (n,):
        raise IwcError(f"sequence keys have shape {keys.shape}, expected one key per image ({n},)")
    codes, uniques = pd.factorize(keys)
    if np.any(codes < 0):
        raise IwcError(f"{int(np.sum(codes < 0))} images have a missing sequence key; assign every image one")
    return codes.astype(np.int64), len(uniques)


def _missing_ids(ids: np.ndarray, what: str, where: str) -> IwcError:
    return IwcError(
        f"{len(ids)} {what} are not in {where} (e.g. {', '.join(map(str, ids[:5]))}); "
        "both must come from the same test set"
    )
