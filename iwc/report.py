"""Run report: the accuracy table, a confusion matrix and per-location accuracy, as markdown + PNGs.

Inputs are plain arrays of original category ids, so the same functions serve validation (labels known
to the aggregator) and the synthetic test set (labels known only to local evaluation).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iwc.io import atomic_write, write_text

STEPS = ("full", "crop", "blend", "final")
STEP_NAMES = {
    "full": "full-image model",
    "crop": "crop model (no crop -> empty)",
    "blend": "blend (full + crop)",
    "final": "blend + sequence vote",
}


def accuracies(predictions: Mapping[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Accuracy of each step's predictions against `truth` (all arrays aligned, original ids)."""
    truth = np.asarray(truth)
    return {step: float(np.mean(np.asarray(pred) == truth)) for step, pred in predictions.items()}


def accuracy_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table: one row per step, one column per evaluation set (e.g. validation, test)."""
    sets = list(columns)
    lines = ["| step | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
    for step in STEPS:
        cells = [f"{columns[s][step]:.4f}" if step in columns[s] else "-" for s in sets]
        lines.append(f"| {STEP_NAMES[step]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_confusion(truth: np.ndarray, pred: np.ndarray, names: Mapping[int, str], path: Path) -> None:
    """Row-normalized confusion matrix over the categories present in truth or pred."""
    ids = np.union1d(np.unique(truth), np.unique(pred))
    index = {c: i for i, c in enumerate(ids.tolist())}
    m = np.zeros((len(ids), len(ids)))
    np.add.at(m, ([index[t] for t in truth.tolist()], [index[p] for p in pred.tolist()]), 1)
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    labels = [f"{c} {names.get(int(c), '')}".strip() for c in ids]
    size = max(4.0, 0.35 * len(ids) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ids)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalized)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_per_location(locations: np.ndarray, truth: np.ndarray, preds: Mapping[str, np.ndarray], path: Path) -> None:
    """Grouped bars: accuracy of each step per location."""
    frame = pd.DataFrame({"location": locations, **{s: np.asarray(p) == truth for s, p in preds.items()}})
    acc = frame.groupby("location")[list(preds)].mean()
    counts = frame.groupby("location").size()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(acc) * len(preds) / 2 + 2), 4))
    width = 0.8 / len(preds)
    x = np.arange(len(acc))
    for i, step in enumerate(preds):
        ax.bar(x + i * width, acc[step].to_numpy(), width, label=STEP_NAMES.get(step, step))
    ax.set_xticks(x + 0.4 - width / 2, [f"{loc}\n(n={counts[loc]})" for loc in acc.index], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("location")
    ax.legend(fontsize=7)
    ax.set_title("accuracy per location")
    _save(fig, path)


def write_report(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """Markdown file: a title, then (heading, body) sections."""
    body = "\n\n".join(f"## {heading}\n\n{text}" for heading, text in sections)
    write_text(path, f"# {title}\n\n{body}\n")


def _save(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
