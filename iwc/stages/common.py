"""What every model stage shares: cache the images, train on the split, predict validation and test.

A model stage hands `train_model` two frames of rows to learn from and predict:
train rows `(row_id, image_id, path, category_id, is_val)` and test rows `(row_id, image_id, path)`;
rows are images for a model whose input is "full" and crops for one whose input is "crop".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from iwc import layout
from iwc.data.cache import build_cache
from iwc.data.categories import CategoryMap
from iwc.data.issues import DataIssues, issues_name, record_unreadable
from iwc.errors import IwcError
from iwc.io import child_path, write_json
from iwc.probs import ProbTable
from iwc.provenance import code_version
from iwc.recipe import Model, Recipe
from iwc.stages import manifest_name, sheet_file, stage_specs
from iwc.train import distributed
from iwc.train.augment import BatchAugment
from iwc.train.device import device_name, model_device
from iwc.train.fit import fit
from iwc.train.model import create_model
from iwc.train.predict import predict_tta
from iwc.train.session import SessionPlan, SessionStop, restore, write_marker
from iwc.train.sheets import show_batch, top_losses

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    """A model stage's outcome: tables keyed by row id (image or crop), and what to put in the manifest."""

    val: ProbTable
    test: ProbTable
    categories: CategoryMap
    summary: dict


class Rows:
    """A read-only view of some rows of a (memory-mapped) array: `len()`, slices and index arrays."""

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array, self.rows = array, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return self.array[self.rows[key]]


def image_paths(folder: Path, ids: Iterable[str]) -> list[Path]:
    """`<folder>/<id>.jpg` for each image id (ids are data: `child_path` keeps each inside `folder`)."""
    return [child_path(folder, f"{i}.jpg", f"image id {i!r}") for i in ids]


def train_model(name: str, m: Model, seed: int, train: pd.DataFrame, test: pd.DataFrame, work: Path,
                issues: DataIssues, names: Mapping[int, str]) -> Trained | None:
    """Cache the rows' images, fit `m` on the non-validation rows, TTA-predict the validation and test rows,
    and draw the model's image sheets into `work` (`sheet_file`: training inputs as the network sees them,
    the validation rows with the highest loss; `names`: category id -> name).

    Rows whose image cannot be read are left out of training; a test row that cannot be read is still
    predicted (from a blank image) so that no submission row goes missing. Each is recorded in `issues`.
    Under torchrun every process trains (rank 0 builds the caches first) and only rank 0 predicts: the
    others get None. A stage that stops before the session limit (`iwc.train.session`) leaves its checkpoint and
    resumable marker in `work` and gets None too; one whose input holds a previous session's marker resumes.
    """
    started = time.perf_counter()
    scratch = layout.scratch_dir() / name
    with distributed.main_first():
        train_cache = build_cache(train["path"].tolist(), train["row_id"].tolist(), m.cache_size,
                                  scratch / "train")
        test_cache = build_cache(test["path"].tolist(), test["row_id"].tolist(), m.cache_size, scratch / "test")
    unreadable = train["row_id"].isin(train_cache.failed).to_numpy()
    if unreadable.any():
        log.warning("%s: %d of %d training images are missing or corrupt; left out of training and validation",
                    name, unreadable.sum(), len(train))
    if test_cache.failed:
        log.warning("%s: %d test images are missing or corrupt; predicted from a blank image so their rows "
                    "stay in the submission", name, len(test_cache.failed))
    bad_test = test["row_id"].isin(test_cache.failed).to_numpy()
    record_unreadable(issues, train["image_id"][unreadable], train["path"][unreadable],
                      "train image, left out of training and validation", base=layout.input_root())
    record_unreadable(issues, test["image_id"][bad_test], test["path"][bad_test],
                      "test image, predicted from a blank image", base=layout.input_root())
    is_val = train["is_val"].to_numpy(bool)
    fit_rows = np.flatnonzero(~is_val & ~unreadable)
    val_rows = np.flatnonzero(is_val & ~unreadable)
    if not len(fit_rows):
        raise IwcError(f"{name}: no readable training images; check the input data")
    categories = CategoryMap.from_labels(train["category_id"].to_numpy()[fit_rows])
    labels = train["category_id"].to_numpy()
    known_val = val_rows[np.isin(labels[val_rows], categories.category_ids)]

    dev = model_device(m)  # the model's recipe device: "cpu" forces the CPU, else CUDA when there is one
    torch.manual_seed(seed)  # the initial weights are drawn from the global generator
    with distributed.main_first():  # pretrained weights: rank 0 downloads them into the hub's cache
        model = create_model(m, len(categories))
    log.info("%s: %s on %s, %d classes, %d train / %d validation rows", name, m.arch, dev, len(categories),
             len(fit_rows), len(val_rows))
    with distributed.main_first():  # rank 0 copies a previous session's checkpoint into `work` first
        session = restore(name, work)
    plan = SessionPlan(name, m, len(fit_rows), len(known_val), len(val_rows) + len(test), session)
    try:
        result = fit(model, Rows(train_cache.images, fit_rows), categories.to_index(labels[fit_rows]),
                     Rows(train_cache.images, known_val), categories.to_index(labels[known_val]),
                     m, seed, work / name, dev, session=plan)
    except SessionStop as stop:  # the checkpoint is saved: leave the marker, end the session cleanly
        if distributed.is_main():
            write_marker(work, stop)
        return None
    devices = distributed.all_gather(device_name(dev))  # every process's, in rank order
    if not distributed.is_main():
        return None
    ids = train["row_id"].to_numpy(str)
    val = predict_tta(model, Rows(train_cache.images, val_rows), ids[val_rows], categories, m, dev, seed)
    test_table = predict_tta(model, test_cache.images, np.asarray(test_cache.ids), categories, m, dev, seed)
    show_batch(Rows(train_cache.images, fit_rows), labels[fit_rows], names,  # fit's own training augmentation
               BatchAugment(m.augment, m.image_size), seed, work / sheet_file(name, "show_batch"))
    worst = top_losses(Rows(train_cache.images, val_rows), labels[val_rows], val, names,
                       work / sheet_file(name, "top_losses"), "crops" if m.input == "crop" else "images")
    summary = {
        "rows": {"train": len(fit_rows), "validation": len(val_rows), "test": len(test),
                 "train_unreadable": int(unreadable.sum()), "test_unreadable": len(test_cache.failed)},
        "classes": len(categories),
        "processes": distributed.world_size(),  # training processes (GPUs): results differ with their number
        "devices": devices,  # what each process trained on, e.g. ["cuda:0 Tesla T4", "cuda:1 Tesla T4"]
        "history": result.history,
        "top_losses": worst,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return Trained(val, test_table, categories, summary)


def write_outputs(name: str, recipe: Recipe, trained_val: ProbTable, trained_test: ProbTable, summary: dict,
                  work: Path, issues: DataIssues) -> None:
    """`<name>_val.npz`, `<name>_test.npz` (+ category maps), `<name>.data_issues.json` and, last, the
    `<name>.manifest.json` marker (with the count of data issues per reason)."""
    trained_val.save(work / f"{name}_val.npz")
    trained_test.save(work / f"{name}_test.npz")
    issues.save(work / issues_name(name))
    issues.log(log, name)
    code = code_version(stage_specs(recipe)[name].module)
    write_json(work / manifest_name(name), {"stage": name, "recipe": recipe.to_dict(), "code": code,
                                           "data_issues": issues.summary(issues_name(name)), **summary})
