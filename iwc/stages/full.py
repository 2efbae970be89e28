"""Full-image model stage: ResNet on the resized (256 px) competition images.

Reads the competition folder and the resized dataset under the input root; writes `full_val.npz`,
`full_test.npz`, training curves and the `full.manifest.json` marker to the working dir.
"""

from __future__ import annotations

from iwc import layout
from iwc.data.competition import Competition
from iwc.data.splits import make_split
from iwc.recipe import Recipe
from iwc.stages.common import setup_logging, train_model, write_outputs


def main(recipe: Recipe) -> None:
    setup_logging()
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
    trained = train_model("full", recipe.full, recipe.seed, train, test, work)
    write_outputs("full", recipe, trained.val, trained.test, trained.summary, work)
