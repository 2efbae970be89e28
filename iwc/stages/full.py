"""Model stage for a model whose input is "full": a network on the resized (256 px) competition images.

Reads the competition folder (not its MegaDetector file) and the resized dataset under the input root, or,
when no `256_images/` is attached, the competition's original images (the cache decodes each JPEG at the
largest reduction that still covers its size, then squashes it: the same pixels at a fraction of the work);
writes `<name>_val.npz`, `<name>_test.npz`, training curves, the image sheets `show_batch_<name>.png` and
`top_losses_<name>.png`, `<name>.data_issues.json` (images it could not read) and the `<name>.manifest.json`
marker to the working dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from iwc import layout
from iwc.data.competition import Competition
from iwc.data.issues import DataIssues
from iwc.data.splits import make_split
from iwc.errors import IwcError
from iwc.recipe import Recipe
from iwc.stages import setup_logging
from iwc.stages.common import image_paths, train_model, write_outputs
from iwc.train import distributed
from iwc.train.device import check_device
from iwc.train.launch import train_on_every_gpu
from iwc.train.model import check_weights_source

log = logging.getLogger(__name__)


def main(recipe: Recipe, name: str) -> None:
    """Train `recipe.models[name]` on the resized images and write its outputs."""
    setup_logging(quiet=not distributed.is_main())
    model = recipe.models[name]
    train_on_every_gpu(model, name)  # several GPUs: this kernel again under torchrun, one process each
    check_device(model, name)  # a model that needs CUDA stops here without a working GPU, before any data work
    check_weights_source(model)  # an offline run without weights fails now, not after the data work
    issues = DataIssues(name)
    comp, train, test = rows(recipe, name, issues)
    trained = train_model(name, model, recipe.seed, train, test, layout.working_dir(), issues, comp.category_names)
    if trained is None:  # a process other than rank 0 (which writes the outputs), or a planned session stop
        return
    write_outputs(name, recipe, trained.val, trained.test, trained.summary, layout.working_dir(), issues)


def rows(recipe: Recipe, name: str, issues: DataIssues) -> tuple[Competition, pd.DataFrame, pd.DataFrame]:
    """The competition under the input root, and model `name`'s train and test rows (`train_model`'s frames):
    one per image, its resized (or original) file, the split."""
    comp = Competition.load(layout.find_competition())
    folders = image_folders(comp.root, name)
    train = comp.train.assign(
        row_id=comp.train["id"],
        image_id=comp.train["id"],
        path=image_paths(folders["train"], comp.train["id"]),
        is_val=make_split(comp.train, recipe.split, recipe.seed),
    )
    test = comp.test.assign(
        row_id=comp.test["id"],
        image_id=comp.test["id"],
        path=image_paths(folders["test"], comp.test["id"]),
    )
    return comp, train, test



def image_folders(competition: Path, name: str) -> dict[str, Path]:
    """Where the train and test images are read: the resized dataset when one is attached, else the
    competition's originals (said once in the log)."""
    resized = layout.find_resized(required=False)
    if resized is not None:
        return {split: resized / layout.RESIZED_MARKER / split / "images" for split in ("train", "test")}
    originals = {split: competition / split for split in ("train", "test")}
    for folder in originals.values():
        if not folder.is_dir():
            raise IwcError(f"the resized image dataset not found and {folder} is not a folder of original images: "
                           f"attach the dataset {layout.RESIZED_DATASET!r} or the competition's images")
    log.info("%s: no resized dataset (%s/) attached: the model reads the original images in %s (JPEG draft "
             "decode at the cache size)", name, layout.RESIZED_MARKER, competition)
    return originals
