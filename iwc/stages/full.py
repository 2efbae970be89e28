"""Model stage for a model whose input is "full": a network on the resized (256 px) competition images.

Reads the competition folder (not its MegaDetector file) and the resized dataset under the input root;
writes `<name>_val.npz`, `<name>_test.npz`, training curves, `<name>.data_issues.json` (images it could not
read) and the `<name>.manifest.json` marker to the working dir.
"""

from __future__ import annotations

from iwc import layout
from iwc.data.competition import Competition
from iwc.data.issues import DataIssues
from iwc.data.splits import make_split
from iwc.recipe import Recipe
from iwc.stages import setup_logging
from iwc.stages.common import image_paths, train_model, write_outputs
from iwc.train import distributed
from iwc.train.model import check_weights_source


def main(recipe: Recipe, name: str) -> None:
    """Train `recipe.models[name]` on the resized images and write its outputs."""
    setup_logging(quiet=not distributed.is_main())
    model = recipe.models[name]
    check_weights_source(model)  # an offline run without weights fails now, not after the data work
    comp = Competition.load(layout.find_competition())
    images = layout.find_resized() / layout.RESIZED_MARKER
    work = layout.working_dir()
    train = comp.train.assign(
        row_id=comp.train["id"],
        image_id=comp.train["id"],
        path=image_paths(images / "train" / "images", comp.train["id"]),
        is_val=make_split(comp.train, recipe.split, recipe.seed),
    )
    test = comp.test.assign(
        row_id=comp.test["id"],
        image_id=comp.test["id"],
        path=image_paths(images / "test" / "images", comp.test["id"]),
    )
    issues = DataIssues(name)
    trained = train_model(name, model, recipe.seed, train, test, work, issues)
    if trained is None:  # another process of a multi-GPU run: rank 0 predicts and writes the outputs
        return
    write_outputs(name, recipe, trained.val, trained.test, trained.summary, work, issues)

