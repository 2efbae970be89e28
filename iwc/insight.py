"""Per-model insight for the report: which categories each model confuses, by name.

In: validation truth and each model's predictions (original category ids), the category names. Out: the ten
most-confused (true, predicted) pairs per model as plain lists (stored in `metrics.json` under `insight`), a
confusion matrix per model (`confusion_<model>.png`), and the report's markdown section, which also shows the
model stage's image sheets (`iwc.train.sheets`: a batch as the network sees it, the top losses).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iwc.stages import SHEETS, sheet_file


def confused_pairs(truth: np.ndarray, pred: np.ndarray, names: Mapping[int, str], k: int = 10) -> list[list[Any]]:
    """The `k` most frequent (true, predicted) pairs with true != predicted, as [true name, predicted name,
    count], most frequent first (ties: by true id, then predicted id)."""
    wrong = pd.DataFrame({"t": np.asarray(truth, np.int64), "p": np.asarray(pred, np.int64)})
    wrong = wrong[wrong["t"] != wrong["p"]]
    counts = wrong.groupby(["t", "p"]).size().reset_index(name="n")
    counts = counts.sort_values(["n", "t", "p"], ascending=[False, True, True], kind="mergesort").head(k)
    return [[_name(names, t), _name(names, p), int(n)] for t, p, n in counts.itertuples(index=False)]


def model_insight(truth: np.ndarray, preds: Mapping[str, np.ndarray], names: Mapping[int, str],
                  out: Path) -> dict[str, list[list[Any]]]:
    """For each model (name -> predictions): `confusion_<model>.png` in `out`, and its confused pairs."""
    from iwc.report import plot_confusion  # here: iwc.report renders `insight_markdown`
    for model, pred in preds.items():
        plot_confusion(np.asarray(truth), np.asarray(pred), names, out / confusion_file(model))
    return {model: confused_pairs(truth, pred, names) for model, pred in preds.items()}


def confusion_file(model: str) -> str:
    return f"confusion_{model}.png"


def model_files(model: str) -> list[str]:
    """The images the report shows for `model`: its confusion matrix (drawn by the aggregator) and its image
    sheets (drawn by its own stage, copied beside the report by the aggregator)."""
    return [confusion_file(model), *(sheet_file(model, sheet) for sheet in SHEETS)]


def insight_markdown(insight: Mapping[str, list[list[Any]]]) -> str:
    """The report section: per model, its confusion matrix and its most-confused pairs as a table."""
    parts = []
    for model, pairs in insight.items():
        rows = "\n".join(f"| {t} | {p} | {n} |" for t, p, n in pairs) or "| - | - | 0 |"
        parts.append(f"### {model}\n\n![confusion matrix of {model}]({confusion_file(model)})\n\n"
                     f"| true | predicted | images |\n|---|---|---:|\n{rows}\n\n"
                     f"What it trains on, as the network sees it (a batch after augmentation):\n\n"
                     f"![training inputs of {model}]({sheet_file(model, 'show_batch')})\n\n"
                     f"Where it errs most (validation, highest loss first; red: wrong):\n\n"
                     f"![top losses of {model}]({sheet_file(model, 'top_losses')})")
    return "\n\n".join(parts)


def _name(names: Mapping[int, str], category: int) -> str:
    return f"{names.get(int(category), '?')} ({int(category)})"
