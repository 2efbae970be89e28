"""`iwc tune RUN`: search the aggregator's cheap settings on a finished run's validation predictions.

In: `runs/<run>/` (each model's `<model>_val.npz`, the aggregator's manifest with the run's recipe, the
competition frame for labels, locations and datetimes). Out: a table of settings by validation accuracy, two
plots and `tune.md` in `submissions/<run>/` (linked from its `report.md`), a bootstrap interval over
validation LOCATIONS, and the best settings (blend weights over a simplex grid, `blend.no_crop`, the vote,
`sequences.gap_s`), which `iwc.host.overlay` saves as a recipe overlay. Nothing is retrained.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iwc import layout
from iwc.aggregate import NO_CROP, blend, no_crop_rule, vote
from iwc.data.competition import Competition
from iwc.data.sequences import assign_sequences
from iwc.errors import IwcError
from iwc.io import read_json_object, write_text
from iwc.probs import ProbTable
from iwc.recipe import Recipe
from iwc.report import save_figure
from iwc.stages import AGGREGATE

GAPS_S = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
VOTES = ("majority", "mean_prob", "none")
PLOTS = ("tune_full_weight.png", "tune_gap.png")


@dataclass(frozen=True)
class Setting:
    """One point of the search: blend weights (model -> weight), the no-crop rule, the vote, the gap."""

    weights: tuple[tuple[str, float], ...]
    no_crop: str
    vote: str
    gap_s: float

    def weights_label(self) -> str:
        return ", ".join(f"{m} {v:.2f}" for m, v in self.weights)

    def label(self) -> str:
        return f"{self.weights_label()} | no_crop {self.no_crop} | {self.vote} | gap {self.gap_s:g} s"


@dataclass(frozen=True)
class Validation:
    """What the search reads: each model's validation table, the images (location, datetime), the truth."""

    tables: dict[str, ProbTable]
    images: pd.DataFrame
    truth: np.ndarray
    crop_models: tuple[str, ...]


def load_run(run_dir: Path, data: Path | None = None) -> tuple[Recipe, Validation]:
    """The run's recipe and validation predictions; `IwcError` naming what is missing (an unfinished run,
    no competition data found: pass `--data`)."""
    manifest = run_dir / "stages" / AGGREGATE / "working" / "manifest.json"
    stored = read_json_object(manifest).get("recipe")
    if not isinstance(stored, dict):
        raise IwcError(f"{manifest} is missing or has no recipe: tune reads a FINISHED run (iwc reproduce first)")
    recipe = Recipe.from_dict(stored)
    tables = {}
    for model in recipe.models:
        path = run_dir / "stages" / model / "working" / f"{model}_val.npz"
        if not path.is_file():
            raise IwcError(f"{path} is missing: model {model!r} of run {run_dir.name!r} has not finished; "
                           "rerun iwc reproduce")
        tables[model] = ProbTable.load(path)
    root = data if data is not None else run_dir / "stages" / AGGREGATE / "input"
    try:
        comp = Competition.load(layout.find_competition(root))
    except IwcError as e:
        raise IwcError(f"{e} (tune reads the competition's labels and datetimes: pass --data DIR)") from e
    full = next(m for m, spec in recipe.models.items() if spec.input == "full")
    rows = pd.Index(comp.train["id"]).get_indexer(tables[full].image_ids)
    if np.any(rows < 0):
        raise IwcError(f"run {run_dir.name!r}: its validation images are not in {comp.root}: pass the --data the "
                       "run used")
    images = comp.train.iloc[rows].reset_index(drop=True)
    crops = tuple(m for m, spec in recipe.models.items() if spec.input == "crop")
    return recipe, Validation(tables, images, images["category_id"].to_numpy(np.int64), crops)


def simplex(models: list[str], step: float = 0.1) -> Iterator[tuple[tuple[str, float], ...]]:
    """Every weight vector on a grid of `step` over the simplex (weights >= 0, summing to 1)."""
    n = round(1 / step)
    for parts in itertools.product(range(n + 1), repeat=len(models) - 1):
        if sum(parts) <= n:
            yield tuple(zip(models, [p / n for p in (*parts, n - sum(parts))], strict=True))


def sequence_keys(val: Validation, gaps: set[float]) -> dict[float, pd.Series]:
    """gap_s -> each validation image's sequence key (location + datetime, "time" sequences), by image id."""
    ids = val.images["id"].to_numpy(str)
    return {g: pd.Series(assign_sequences(val.images, "time", g).to_numpy(), index=ids) for g in sorted(gaps)}


def correct(val: Validation, s: Setting, keys: Mapping[float, pd.Series]) -> np.ndarray:
    """(N,) bool: which validation images setting `s` gets right (`keys`: gap -> sequence keys)."""
    ids = val.images["id"].to_numpy(str)
    blended = blend(val.tables, dict(s.weights), ids)
    blended = no_crop_rule(blended, [val.tables[m] for m in val.crop_models], s.no_crop)
    return vote(blended, keys[s.gap_s], s.vote).to_numpy(np.int64) == val.truth


def current(recipe: Recipe) -> Setting:
    """The run's own setting."""
    w = recipe.blend.weights
    total = sum(w.values())
    return Setting(tuple((m, w[m] / total) for m in recipe.models), recipe.blend.no_crop, recipe.sequences.vote,
                   recipe.sequences.gap_s)


def search(recipe: Recipe, val: Validation, step: float = 0.1) -> pd.DataFrame:
    """Accuracy of each setting tried, best first: weights x no_crop at the run's vote and gap, then vote x gap
    at the best of those, plus the run's own setting. Columns: setting, accuracy, full_weight, and the fields."""
    base = current(recipe)
    keys = sequence_keys(val, {*GAPS_S, base.gap_s})
    rules = NO_CROP if val.crop_models else ("full",)
    tried = {base}
    tried |= {replace(base, weights=w, no_crop=r) for w in simplex(list(recipe.models), step) for r in rules}
    score = {s: float(correct(val, s, keys).mean()) for s in tried}
    best = min(score, key=lambda s: (-score[s], s != base, s.label()))  # ties: the run's own, then by label
    for v, g in itertools.product(VOTES, GAPS_S):
        s = replace(best, vote=v, gap_s=g)
        score.setdefault(s, float(correct(val, s, keys).mean()))
    full = next(m for m, spec in recipe.models.items() if spec.input == "full")
    rows = [{"setting": s.label(), "weights": s.weights_label(), "accuracy": a,
             "full_weight": dict(s.weights)[full], "no_crop": s.no_crop, "vote": s.vote, "gap_s": s.gap_s,
             "is_current": s == base, "obj": s} for s, a in score.items()]
    frame = pd.DataFrame(rows)
    return frame.sort_values(["accuracy", "is_current", "setting"], ascending=[False, False, True],
                             kind="mergesort").reset_index(drop=True)


def location_interval(val: Validation, hits: np.ndarray, base_hits: np.ndarray, seed: int = 0,
                      rounds: int = 1000) -> dict[str, tuple[float, float]]:
    """95 % bootstrap intervals, resampling validation LOCATIONS with replacement: of the accuracy of `hits`
    and of its gain over `base_hits` (same images, paired)."""
    codes, _ = pd.factorize(val.images["location"])
    n_loc = codes.max() + 1
    right = np.bincount(codes, weights=hits, minlength=n_loc)
    base = np.bincount(codes, weights=base_hits, minlength=n_loc)
    count = np.bincount(codes, minlength=n_loc)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_loc, size=(rounds, n_loc))
    total = count[draws].sum(axis=1)
    acc = right[draws].sum(axis=1) / total
    gain = acc - base[draws].sum(axis=1) / total
    return {"accuracy": tuple(np.percentile(acc, [2.5, 97.5]).tolist()),
            "gain": tuple(np.percentile(gain, [2.5, 97.5]).tolist())}


def plot(frame: pd.DataFrame, out: Path) -> None:
    """`tune_full_weight.png` (best accuracy at each full-model weight) and `tune_gap.png` (accuracy against
    gap_s, a line per vote) into `out`."""
    by_weight = frame.groupby("full_weight")["accuracy"].max()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(by_weight.index, by_weight.to_numpy(), marker="o")
    ax.set_xlabel("full-image model weight (best of the rest)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("accuracy against the full model's weight")
    save_figure(fig, out / PLOTS[0])
    best = frame.iloc[0]
    gaps = frame[(frame["weights"] == best["weights"]) & (frame["no_crop"] == best["no_crop"])]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for v, part in gaps.groupby("vote"):
        part = part.sort_values("gap_s")
        ax.plot(part["gap_s"], part["accuracy"], marker="o", label=v)
    ax.set_xscale("log")
    ax.set_xlabel("sequence gap_s (s)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("accuracy against the sequence gap")
    ax.legend(fontsize=7)
    save_figure(fig, out / PLOTS[1])


def markdown(frame: pd.DataFrame, interval: Mapping[str, tuple[float, float]], rows: int = 10) -> str:
    """The tuning section: the top settings, the run's own, the location bootstrap and the plots."""
    own = frame[frame["is_current"]].iloc[0]
    top = frame[(frame.index < rows) | frame["is_current"]]  # the top rows, and the run's own wherever it ranks
    lines = ["| rank | setting | validation accuracy |", "|---:|---|---:|"]
    lines += [f"| {i + 1} | {r.setting}{' (the run)' if r.is_current else ''} | {r.accuracy:.4f} |"
              for i, r in top.iterrows()]
    lo, hi = interval["gain"]
    noise = "inside the noise (the interval holds 0)" if lo <= 0 <= hi else "outside the noise"
    return "\n".join([
        f"{len(frame)} settings tried on the stored validation predictions (no retraining).", "",
        *lines, "",
        f"The run's own setting: {own.accuracy:.4f}. Best: {frame.iloc[0].accuracy:.4f}, 95 % interval over "
        f"validation locations {interval['accuracy'][0]:.4f} .. {interval['accuracy'][1]:.4f}; gain over the run "
        f"{frame.iloc[0].accuracy - own.accuracy:+.4f} ({lo:+.4f} .. {hi:+.4f}): {noise}.", "",
        f"![accuracy against the full model's weight]({PLOTS[0]})", "",
        f"![accuracy against the sequence gap]({PLOTS[1]})"])


def write_report(out: Path, section: str) -> None:
    """`tune.md` in `out` and a "Tuning" section in its `report.md` (replacing an earlier one)."""
    write_text(out / "tune.md", f"# Tuning\n\n{section}\n")
    report = out / "report.md"
    if report.is_file():
        text = report.read_text(encoding="utf-8").split("\n## Tuning\n")[0].rstrip("\n")
        write_text(report, f"{text}\n\n## Tuning\n\n{section}\n")
