"""Model stage for a model whose input is "crop": a network on crops of the ORIGINAL images to their
MegaDetector boxes.

Reads the competition folder (originals + MegaDetector results) under the input root; cuts the model's crops
(its `crops` settings) into the scratch dir; writes `<name>_val.npz` and `<name>_test.npz` keyed by IMAGE id
(an image with several crops gets their confidence-weighted mean), training curves, the image sheets
`show_batch_<name>.png` and `top_losses_<name>.png` (of crops), `<name>.data_issues.json`
(boxes clamped or dropped, images without a detector entry, originals it could not read) and the
`<name>.manifest.json` marker.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from iwc import layout
from iwc.data import jpeg_region
from iwc.data.categories import EMPTY
from iwc.data.competition import Competition
from iwc.data.crops import extract_crops, select_boxes
from iwc.data.issues import DataIssues, record_unreadable
from iwc.data.splits import make_split
from iwc.probs import ProbTable
from iwc.recipe import Recipe
from iwc.stages import setup_logging
from iwc.stages.common import image_paths, train_model, write_outputs
from iwc.train import distributed
from iwc.train.device import check_device
from iwc.train.launch import train_on_every_gpu
from iwc.train.model import check_weights_source

log = logging.getLogger(__name__)
CROP_FAILED = {"train": "train original, no crop: the crop model does not train on it",
               "test": "test original, no crop: predicted by the full-image models alone"}


def main(recipe: Recipe, name: str) -> None:
    """Cut `recipe.models[name]`'s crops, train it on them and write its outputs."""
    setup_logging(quiet=not distributed.is_main())
    model = recipe.models[name]
    train_on_every_gpu(model, name)  # several GPUs: this kernel again under torchrun, one process each
    check_device(model, name)  # a model that needs CUDA stops here without a working GPU, before any data work
    check_weights_source(model)  # an offline run without weights fails now, not after the data work
    issues = DataIssues(name)
    comp, train, test = rows(recipe, name, issues)
    work = layout.working_dir()
    trained = train_model(name, model, recipe.seed, train, test, work, issues, comp.category_names)
    if trained is None:  # a process other than rank 0 (which writes the outputs), or a planned session stop
        return
    write_outputs(name, recipe, per_image(trained.val, train), per_image(trained.test, test),
                  trained.summary, work, issues)


def rows(recipe: Recipe, name: str, issues: DataIssues) -> tuple[Competition, pd.DataFrame, pd.DataFrame]:
    """The competition under the input root (with its detector file), and model `name`'s train and test rows
    (`train_model`'s frames): one per crop, cut into the scratch dir; what cutting met recorded in `issues`."""
    model = recipe.models[name]
    comp = Competition.load(layout.find_competition(), detections=True, issues=issues)
    boxes = select_boxes(comp.detections, model.crops.rule, model.crops.threshold)
    log.info("crops: cut with %s", jpeg_region.decoder())
    frames = {}
    for split, images in (("train", comp.train), ("test", comp.test)):
        chosen = boxes[boxes["image_id"].isin(images["id"])]
        with distributed.main_first():  # under torchrun rank 0 cuts the crops; the other processes reuse them
            result = extract_crops(chosen, comp.root / split, layout.scratch_dir() / name / "crops" / split,
                                   size=model.crops.size, margin=model.crops.margin)
        log.info("crops %s: %s", split, result.summary())
        record_unreadable(issues, result.failed, image_paths(comp.root / split, result.failed), CROP_FAILED[split],
                          base=layout.input_root())
        frames[split] = result.index.rename(columns={"crop_id": "row_id"})
    is_val = pd.Series(make_split(comp.train, recipe.split, recipe.seed), index=comp.train["id"])
    labels = comp.train.set_index("id")["category_id"]
    train = frames["train"].assign(category_id=lambda f: labels.loc[f["image_id"]].to_numpy(),
                                   is_val=lambda f: is_val.loc[f["image_id"]].to_numpy())
    return comp, background_rows(train, model.crops.background), frames["test"]


def background_rows(train: pd.DataFrame, background: bool) -> pd.DataFrame:
    """Training crop rows (`category_id`, `is_val`) as `crops.background` says: True keeps the crops of frames
    labelled empty as the empty class; False leaves them out of training (validation rows stay: predicted)."""
    if background:
        return train
    return train[train["is_val"] | (train["category_id"] != EMPTY)].reset_index(drop=True)


def per_image(table: ProbTable, crops: pd.DataFrame) -> ProbTable:
    """Crop rows -> image rows: the confidence-weighted mean of an image's crops (one crop: itself)."""
    info = crops.set_index("row_id").loc[table.image_ids]
    image_codes, image_ids = pd.factorize(info["image_id"])
    weights = np.maximum(info["conf"].to_numpy(np.float64), 1e-6)  # a zero-confidence box still counts
    sums = np.zeros((len(image_ids), len(table.category_ids)))
    np.add.at(sums, image_codes, table.probs * weights[:, None])
    totals = np.bincount(image_codes, weights=weights, minlength=len(image_ids))
    return ProbTable(np.asarray(image_ids), table.category_ids, sums / totals[:, None])
