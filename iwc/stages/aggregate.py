"""Aggregator stage: blend the two models by category id, vote over sequences, write the submission.

Reads the competition folder (not its MegaDetector file) and the outputs of the full and crop kernels under
the input root. Writes `submission.csv` + `manifest.json` (validated against the sample submission), per-step
predictions for validation and test (`validation.csv`, `predictions.csv`), `data_issues.json` (the model
stages' records merged with its own: test images not in the sample, sample Ids without a test image) and
`report.md` with its plots.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from iwc import layout
from iwc.aggregate import blend, vote
from iwc.data.categories import EMPTY
from iwc.data.competition import SAMPLE_CSV, Competition
from iwc.data.issues import ISSUES_JSON, DataIssues, issues_name
from iwc.data.sequences import assign_sequences
from iwc.errors import IwcError
from iwc.io import write_text
from iwc.probs import ProbTable
from iwc.recipe import Recipe
from iwc.report import (
    STEPS,
    accuracies,
    accuracy_table,
    judgement,
    most_frequent_class,
    plot_confusion,
    plot_per_location,
    write_report,
)
from iwc.stages.common import manifest_name, setup_logging
from iwc.submission import assemble, write_submission

log = logging.getLogger(__name__)


def main(recipe: Recipe) -> None:
    setup_logging()
    root = layout.input_root()
    comp = Competition.load(layout.find_competition(root))
    work = layout.working_dir()
    tables = {}
    issues = DataIssues("aggregate")
    for stage in ("full", "crop"):
        folder = layout.find_kernel_output(root, manifest_name(stage))
        issues.extend(DataIssues.load(folder / issues_name(stage)))
        for split in ("val", "test"):
            tables[stage, split] = ProbTable.load(folder / f"{stage}_{split}.npz")

    val_images = _rows_of(comp.train, tables["full", "val"])
    # The baseline predicts the most frequent category of the images the models trained on, for every image.
    baseline = most_frequent_class(comp.train.loc[~comp.train["id"].isin(val_images["id"]), "category_id"])
    val = step_predictions(tables["full", "val"], tables["crop", "val"], val_images, recipe).assign(baseline=baseline)
    test = step_predictions(tables["full", "test"], tables["crop", "test"],
                            _rows_of(comp.test, tables["full", "test"]), recipe).assign(baseline=baseline)
    truth = val_images["category_id"].to_numpy()
    val_steps = {s: val[s].to_numpy() for s in STEPS}
    val_acc = accuracies(val_steps, truth)

    write_text(work / "validation.csv", val.assign(truth=truth, location=val_images["location"].to_numpy())
               .to_csv(index=False, lineterminator="\n"))
    write_text(work / "predictions.csv", test.to_csv(index=False, lineterminator="\n"))
    submission = assemble(comp.sample, match_sample(comp.sample, test.set_index("Id")["final"], issues))
    issues.save(work / ISSUES_JSON)
    issues.log(log, "aggregate (all stages)")
    write_submission(submission, work, {"sample_submission": comp.root / SAMPLE_CSV},
                     sample=comp.sample, category_ids=comp.categories["id"].tolist(),
                     extra={"recipe": recipe.to_dict(), "validation_accuracy": val_acc,
                            "data_issues": issues.summary()})

    names = dict(zip(comp.categories["id"].tolist(), comp.categories["name"].tolist(), strict=True))
    plot_confusion(truth, val["final"].to_numpy(), names, work / "confusion_matrix.png")
    plot_per_location(val_images["location"].to_numpy(), truth, val_steps, work / "per_location.png")
    write_report(work / "report.md", f"iwc run: recipe {recipe.name!r}", [
        ("Accuracy", accuracy_table({"validation (held-out locations)": val_acc})),
        ("Judgement", judgement(val_acc)),
        ("Validation", f"{len(val)} images from {val_images['location'].nunique()} held-out locations.\n\n"
                       "![confusion matrix](confusion_matrix.png)\n\n![accuracy per location](per_location.png)"),
        ("Data issues", issues.markdown()),
    ])
    log.info("validation accuracy: %s", ", ".join(f"{s} {a:.4f}" for s, a in val_acc.items()))


def match_sample(sample: pd.DataFrame, predictions: pd.Series, issues: DataIssues) -> pd.Series:
    """Test predictions (image id -> category) -> one per sample Id, recording every difference in `issues`.

    A predicted test image the sample lacks is recorded `not_in_sample` (`assemble` leaves it out); a sample
    Id with no test image gets the empty category (0: the commonest class and the sample's own fill) and is
    recorded `sample_without_image`.
    """
    in_sample = predictions.index.isin(sample["Id"])
    for image_id in predictions.index[~in_sample]:
        issues.add("not_in_sample", image_id, f"predicted category {predictions[image_id]}, not submitted: "
                                              f"{SAMPLE_CSV} has no row for it")
    orphans = sample["Id"][~sample["Id"].isin(predictions.index)]
    for image_id in orphans:
        issues.add("sample_without_image", image_id, f"no test image with this Id: submitted as category {EMPTY}")
    return pd.concat([predictions, pd.Series(EMPTY, index=orphans.to_numpy(), dtype=np.int64)])


def _rows_of(images: pd.DataFrame, table: ProbTable) -> pd.DataFrame:
    """The rows of `images` (competition frame with `id`) in `table`'s row order."""
    indexed = images.set_index("id")
    unknown = table.image_ids[~np.isin(table.image_ids, indexed.index)]
    if len(unknown):
        raise IwcError(f"{len(unknown)} model-table images are not in the competition data (e.g. "
                       f"{', '.join(unknown[:3])}): rerun the full and crop kernels on this competition data")
    return indexed.loc[table.image_ids].reset_index()


def step_predictions(full: ProbTable, crop: ProbTable, images: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """Predicted category of each image of `full` (rows of `images`, same order) after each step:
    full model alone, crop model alone (no crop -> empty), blend, blend + sequence vote."""
    ids = full.image_ids
    if not np.array_equal(images["id"].to_numpy(str), ids):
        raise ValueError("images must follow the full-model table's row order")
    crop_alone = pd.Series(crop.argmax_category(), index=crop.image_ids).reindex(ids, fill_value=EMPTY)
    keys = assign_sequences(images, recipe.sequences.method, recipe.sequences.gap_s)
    blended = blend(full, crop, recipe.blend)
    final = vote(blended, pd.Series(keys.to_numpy(), index=ids), recipe.sequences.vote)
    return pd.DataFrame({
        "Id": ids,
        "full": full.argmax_category(),
        "crop": crop_alone.to_numpy(np.int64),
        "blend": blended.argmax_category(),
        "final": final.to_numpy(np.int64),
    })
