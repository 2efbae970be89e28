"""Run report: the accuracy table, a judgement of each step, a confusion matrix and per-location accuracy.

Inputs are plain arrays of original category ids, so the same functions serve validation (labels known
to the aggregator) and the synthetic test set (labels known only to local evaluation). The steps come from
the recipe (`step_labels`): a baseline predicting the most frequent training category for every image, each
model alone, the blend, the blend + sequence vote. `judge` flags a step that lowers accuracy compared with
the step it builds on, and a final result below that baseline. The aggregator writes its figures once, to
`metrics.json`; `report_markdown` renders them, for the aggregator's report and the run's alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iwc.insight import insight_markdown
from iwc.io import atomic_write, save_png
from iwc.recipe import Recipe

BASELINE, BLEND, FINAL = "baseline", "blend", "final"
METRICS_JSON = "metrics.json"
VALIDATION = "validation (held-out locations)"


def step_labels(recipe: Recipe) -> dict[str, str]:
    """The report's steps in table order (baseline, each model, blend, vote), each with its row label."""
    models = {name: f"{name}: " + ("full-image model" if m.input == "full" else "crop model (no crop -> empty)")
              for name, m in recipe.models.items()}
    return {BASELINE: "most frequent class (baseline)", **models,
            BLEND: f"blend ({' + '.join(recipe.models)})", FINAL: "blend + sequence vote"}


def accuracies(predictions: Mapping[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Accuracy of each step's predictions against `truth` (all arrays aligned, original ids)."""
    truth = np.asarray(truth)
    return {step: float(np.mean(np.asarray(pred) == truth)) for step, pred in predictions.items()}


def most_frequent_class(labels: Iterable[int]) -> int:
    """The most frequent category id of `labels` (the smallest id among ties): the baseline's answer."""
    counts = pd.Series(np.asarray(list(labels), dtype=np.int64)).value_counts()
    if counts.empty:
        raise ValueError("no labels to take the most frequent class of")
    return int(counts[counts == counts.max()].index.min())


@dataclass(frozen=True)
class Flag:
    """A step that does worse than it should: `note` for the table, `sentence` for the report."""

    step: str
    note: str
    sentence: str


def judge(accuracy: Mapping[str, float], on: str = "validation") -> list[Flag]:
    """Flags for one evaluation set's accuracies (step -> accuracy; `on` names the set in the sentences).

    The blend is flagged when it is below the best single model (every step but baseline, blend and final),
    the sequence vote when it is below the blend, and the final result when it is below the
    most-frequent-class baseline. Steps missing from `accuracy` are not judged.
    """
    a = accuracy
    flags = []
    models = [s for s in a if s not in (BASELINE, BLEND, FINAL)]
    if models and BLEND in a:
        best = max(models, key=lambda s: a[s])
        if a[BLEND] < a[best]:
            flags.append(Flag(BLEND, f"lower than model {best}",
                              f"On {on}, the blend ({a[BLEND]:.4f}) is lower than the best single model, {best} "
                              f"({a[best]:.4f}): the blend weights hurt; revisit them."))
    if {BLEND, FINAL} <= a.keys() and a[FINAL] < a[BLEND]:
        flags.append(Flag(FINAL, "lower than the blend",
                          f"On {on}, the sequence vote lowers accuracy from {a[BLEND]:.4f} (blend) to "
                          f"{a[FINAL]:.4f}: check the sequence settings (method, gap_s, vote)."))
    if {BASELINE, FINAL} <= a.keys() and a[FINAL] < a[BASELINE]:
        flags.append(Flag(FINAL, "below the baseline",
                          f"On {on}, the final result ({a[FINAL]:.4f}) is below the baseline that predicts the "
                          f"most frequent class for every image ({a[BASELINE]:.4f}): the models learned less "
                          "than the class prior."))
    return flags


def judgement(accuracy: Mapping[str, float], on: str = "validation") -> str:
    """The report's paragraph on `judge(accuracy, on)`: one warning sentence per flag, or that none fired."""
    flags = judge(accuracy, on)
    if not flags:
        return (f"On {on}, no step lowers accuracy compared with the step it builds on, and the final result "
                "beats the most-frequent-class baseline.")
    return "\n".join(f"- ⚠ {f.sentence}" for f in flags)


def accuracy_table(columns: Mapping[str, Mapping[str, float]], labels: Mapping[str, str]) -> str:
    """Markdown table: one row per step of `labels` (step -> row label, in order), one column per evaluation
    set (e.g. validation, test).

    The first set is judged (`judge`); when a step is flagged, a last "note" column says why.
    """
    sets = list(columns)
    notes: dict[str, list[str]] = {}
    for flag in judge(columns[sets[0]]) if sets else []:
        notes.setdefault(flag.step, []).append(flag.note)
    header = [*sets, *(["note"] if notes else [])]
    lines = ["| step | " + " | ".join(header) + " |", "|---|" + "---:|" * len(sets) + ("---|" if notes else "")]
    for step, label in labels.items():
        cells = [f"{columns[s][step]:.4f}" if step in columns[s] else "-" for s in sets]
        if notes:
            cells.append("; ".join(f"⚠ {n}" for n in notes.get(step, [])))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_confusion(truth: np.ndarray, pred: np.ndarray, names: Mapping[int, str], path: Path,
                   top: int = 30) -> None:
    """Row-normalized confusion matrix over the `top` most frequent true categories, every other category
    pooled as "other" (at most 2,000 px a side whatever the count); the full matrix of counts (true id rows,
    predicted id columns, over the categories in truth or pred) goes to `path` with the suffix .csv."""
    full = pd.crosstab(pd.Series(truth, name="true"), pd.Series(pred, name="predicted"))
    ids = np.union1d(full.index.to_numpy(), full.columns.to_numpy())
    full = full.reindex(index=ids, columns=ids, fill_value=0)
    with atomic_write(path.with_suffix(".csv"), "w") as f:
        full.to_csv(f, lineterminator="\n")
    counts = pd.Series(truth).value_counts()
    kept = sorted(counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable").index[:top].tolist())
    pooled = len(ids) > len(kept)
    group = {c: i for i, c in enumerate(kept)}
    rows = [group.get(t, len(kept)) for t in truth.tolist()]
    cols = [group.get(p, len(kept)) for p in pred.tolist()]
    n = len(kept) + pooled
    m = np.zeros((n, n))
    np.add.at(m, (rows, cols), 1)
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    labels = [f"{c} {names.get(int(c), '')}".strip() for c in kept] + ([f"other ({len(ids) - len(kept)})"] * pooled)
    size = min(max(4.0, 0.35 * n + 2), 16.0)  # 110 dpi: at most 1,870 px a side
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalized)" + (f", the {len(kept)} most frequent true categories"
                                                         if pooled else ""))
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(fig, path)


def plot_per_location(locations: np.ndarray, truth: np.ndarray, preds: Mapping[str, np.ndarray],
                      labels: Mapping[str, str], path: Path, named: int = 3) -> None:
    """Accuracy per location as a sorted distribution: one line per step (`preds`: step -> predictions;
    `labels`: step -> legend), locations from worst to best; the `named` worst and best locations of the
    last step are named (with their image counts). The figure's size does not depend on the counts."""
    frame = pd.DataFrame({"location": locations, **{s: np.asarray(p) == truth for s, p in preds.items()}})
    acc = frame.groupby("location")[list(preds)].mean()
    counts = frame.groupby("location").size()
    last = list(preds)[-1]
    order = acc[last].sort_values(kind="stable")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(1, len(acc) + 1)
    for step in preds:
        ax.plot(x, np.sort(acc[step].to_numpy()), "o-" if len(acc) <= 30 else "-", markersize=3,
                label=labels.get(step, step))
    ends = [("worst", order.index[:named]), ("best", order.index[::-1][:named])]
    text = "\n".join(f"{what}: " + ", ".join(f"{loc} ({order[loc]:.2f}, n={counts[loc]})" for loc in locs)
                     for what, locs in ends)
    ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"})
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_xlabel(f"locations, sorted by accuracy ({len(acc)})")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"accuracy per location (named: {labels.get(last, last)})")
    save_figure(fig, path)


def report_markdown(title: str, metrics: Mapping[str, Any], data_issues: str,
                    extra: Sequence[tuple[str, str]] = ()) -> str:
    """The report of a run: its accuracy table and judgement (from `metrics`, as the aggregator writes it to
    `metrics.json`: `steps`, [step, label] pairs in table order; `accuracy` per evaluation set; `validation`
    counts), the validation plots, the
    `data_issues` section, then `extra` (heading, body) sections."""
    accuracy, counts = metrics["accuracy"], metrics["validation"]
    sections = [
        ("Accuracy", accuracy_table(accuracy, dict(metrics["steps"]))),
        ("Judgement", judgement(accuracy[VALIDATION])),
        ("Final predictions on validation", f"{counts['images']} images from {counts['locations']} held-out "
                                            "locations.\n\n![confusion matrix](confusion_matrix.png)\n\n"
                                            "![accuracy per location](per_location.png)"),
        *([("Per model: what each confuses", insight_markdown(_in_recipe_order(metrics["insight"], metrics["steps"])))]
          if "insight" in metrics else []),
        ("Data issues", data_issues),
        *extra,
    ]
    body = "\n\n".join(f"## {heading}\n\n{text}" for heading, text in sections)
    return f"# {title}\n\n{body}\n"


def _in_recipe_order(insight: Mapping[str, Any], steps: Sequence[Sequence[str]]) -> dict[str, Any]:
    """`insight` (model -> pairs; `metrics.json` sorts its keys) in the table's order of the models."""
    return {step: insight[step] for step, _ in steps if step in insight}


def save_figure(fig: plt.Figure, path: Path) -> None:
    """A pyplot figure -> a PNG with stable bytes (`iwc.io.save_png`), then closed."""
    save_png(fig, path)
    plt.close(fig)
