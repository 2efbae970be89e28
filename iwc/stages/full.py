"""Full-image model stage: ResNet on the resized (256 px) competition images.

Reads the competition folder (not its MegaDetector file) and the resized dataset under the input root;
writes `full_val.npz`, `full_test.npz`, training curves, `full.data_issues.json` (images it could not read)
and the `full.manifest.json` marker to the working dir.
"""

from __future__ import annotations

from iwc import layout
from iwc.data.competition import Competition
from iwc.data.issues import DataIssues
from iwc.data.splits import make_split
from iwc.recipe import Recipe
from iwc.stages.common import setup_logging, train_model, write_outputs
from iwc.train.model import check_weights_source


def main(recipe: Recipe) -> None:
    setup_logging()
    check_weights_source(recipe.full)  # an offline run without weights fails now, not after the data work
    comp = Competition.load(layout.find_competition())
    images = layout.find_resized() / layout.RESIZED_MARKER
    work = layout.working_dir()
    train = comp.train.assign(
        row_id=comp.train["id"],
        image_id=comp.train["id"],
        path=[images / "train" / "images" / f"{i}.jpg" for i in comp.train["id"]],
        is_val=make_split(comp.train, recipe.split, recipe.seed),
    )
    test = comp.test.assign(
        row_id=comp.test["id"],
        image_id=comp.test["id"],
        path=[images / "test" / "images" / f"{i}.jpg" for i in comp.test["id"]],
    )
    issues = DataIssues("full")
    trained = train_model("full", recipe.full, recipe.seed, train, test, work, issues)
    if trained is None:  # another process of a multi-GPU run: rank 0 predicts and writes the outputs
        return
    write_outputs("full", recipe, trained.val, trained.test, trained.summary, work, issues)
