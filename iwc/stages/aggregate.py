"""Aggregator stage: blend every model by category id, vote over sequences, write the submission.

Reads the competition folder (not its MegaDetector file) and the outputs of every model's kernel under the
input root. Writes `submission.csv` + `manifest.json` (validated against the sample submission), per-step
predictions for validation and test (`validation.csv`, `predictions.csv`: a column per model, the blend, the
vote, the baseline), `metrics.json` (the accuracies, once), `data_issues.json` (the model stages' records
merged with its own: test images not in the sample, sample Ids without a test image) and `report.md` with
its plots, with each model's image sheets copied from its stage's output beside it; the files of each model (its
confusion matrix, its sheets, ...) go into one `extras.zip` (`iwc.extras`), so the kernel's outputs stay a few
dozen files however many models the recipe has.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from iwc import layout
from iwc.aggregate import blend_recipe, vote
from iwc.data.categories import EMPTY
from iwc.data.competition import SAMPLE_CSV, Competition
from iwc.data.issues import ISSUES_JSON, DataIssues, issues_name
from iwc.data.sequences import assign_sequences
from iwc.errors import IwcError
from iwc.extras import pack, per_model_files
from iwc.insight import model_insight
from iwc.io import write_bytes, write_json, write_text
from iwc.probs import ProbTable
from iwc.provenance import code_version
from iwc.recipe import Recipe
from iwc.report import (
    BLEND,
    FINAL,
    METRICS_JSON,
    VALIDATION,
    accuracies,
    most_frequent_class,
    plot_confusion,
    plot_per_location,
    report_markdown,
    step_labels,
)
from iwc.stages import SHEETS, manifest_name, setup_logging, sheet_file
from iwc.submission import assemble, write_submission

log = logging.getLogger(__name__)


def main(recipe: Recipe, name: str) -> None:
    """Blend the outputs of every model of `recipe` (found under the input root), vote, and write the
    submission, the per-step predictions, the metrics and the report to the working dir."""
    setup_logging()
    root = layout.input_root()
    comp = Competition.load(layout.find_competition(root))
    work = layout.working_dir()
    tables: dict[str, dict[str, ProbTable]] = {"val": {}, "test": {}}
    issues = DataIssues(name)
    for model in recipe.models:
        folder = layout.find_kernel_output(root, manifest_name(model))
        issues.extend(DataIssues.load(folder / issues_name(model)))
        for split in tables:
            tables[split][model] = ProbTable.load(folder / f"{model}_{split}.npz")
        copy_sheets(folder, model, work)

    full_models = [m for m, spec in recipe.models.items() if spec.input == "full"]
    val_images = _rows_of(comp.train, tables["val"][full_models[0]].image_ids)
    # The baseline predicts the most frequent category of the images the models trained on, for every image.
    trained_on = np.ones(len(comp.train), dtype=bool)
    trained_on[pd.Index(comp.train["id"]).get_indexer(val_images["id"])] = False
    baseline = most_frequent_class(comp.train.loc[trained_on, "category_id"])
    val = step_predictions(tables["val"], val_images, recipe).assign(baseline=baseline)
    test_images = _rows_of(comp.test, tables["test"][full_models[0]].image_ids)
    test = step_predictions(tables["test"], test_images, recipe).assign(baseline=baseline)
    truth = val_images["category_id"].to_numpy()
    labels = step_labels(recipe)
    val_steps = {s: val[s].to_numpy() for s in labels}
    metrics = {"steps": list(labels.items()), "accuracy": {VALIDATION: accuracies(val_steps, truth)},
               "validation": {"images": len(val), "locations": int(val_images["location"].nunique())}}

    write_text(work / "validation.csv", val.assign(truth=truth, location=val_images["location"].to_numpy())
               .to_csv(index=False, lineterminator="\n"))
    write_text(work / "predictions.csv", test.to_csv(index=False, lineterminator="\n"))
    names = comp.category_names
    metrics["insight"] = model_insight(truth, {m: val[m].to_numpy() for m in recipe.models}, names, work)
    write_json(work / METRICS_JSON, metrics)
    submission = assemble(comp.sample, match_sample(comp.sample, test.set_index("Id")[FINAL], issues))
    issues.save(work / ISSUES_JSON)
    issues.log(log, "aggregate (all stages)")
    write_submission(submission, work, {"sample_submission": comp.root / SAMPLE_CSV},
                     sample=comp.sample, category_ids=comp.categories["id"].tolist(),
                     code=code_version(__name__),
                     extra={"recipe": recipe.to_dict(), "validation_accuracy": metrics["accuracy"][VALIDATION],
                            "data_issues": issues.summary()})

    plot_confusion(truth, val[FINAL].to_numpy(), names, work / "confusion_matrix.png")
    plot_per_location(val_images["location"].to_numpy(), truth, val_steps, labels, work / "per_location.png")
    write_text(work / "report.md", report_markdown(f"iwc run: recipe {recipe.name!r}", metrics, issues.markdown()))
    pack(work, per_model_files(work, recipe.models))  # their number grows with the recipe's models: one archive
    log.info("validation accuracy: %s", ", ".join(f"{s} {a:.4f}" for s, a in metrics["accuracy"][VALIDATION].items()))


def copy_sheets(folder: Path, model: str, work: Path) -> None:
    """Copy a model stage's image sheets (`SHEETS`) from its output `folder` into `work`, beside the report that
    shows them; one line naming the missing file when the stage left none."""
    for sheet in SHEETS:
        source = folder / sheet_file(model, sheet)
        if not source.is_file():
            raise IwcError(f"{source} is missing: the {model} stage's output is incomplete; rerun that stage")
        write_bytes(work / source.name, source.read_bytes())


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


def _rows_of(images: pd.DataFrame, image_ids: np.ndarray) -> pd.DataFrame:
    """The rows of `images` (competition frame with `id`) for `image_ids`, in that order (a hash join)."""
    rows = pd.Index(images["id"]).get_indexer(image_ids)
    unknown = np.asarray(image_ids)[rows < 0]
    if len(unknown):
        raise IwcError(f"{len(unknown)} model-table images are not in the competition data (e.g. "
                       f"{', '.join(unknown[:3])}): rerun the model kernels on this competition data")
    return images.iloc[rows].reset_index(drop=True)


def step_predictions(tables: dict[str, ProbTable], images: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """Predicted category of each image of `images` (in its order) after each step: each model alone (a crop
    model predicts empty for an image without a crop), the blend, the blend + sequence vote."""
    ids = images["id"].to_numpy(str)
    alone = {name: pd.Series(t.argmax_category(), index=t.image_ids).reindex(ids, fill_value=EMPTY).to_numpy(np.int64)
             for name, t in tables.items()}
    keys = assign_sequences(images, recipe.sequences.method, recipe.sequences.gap_s)
    blended = blend_recipe(tables, recipe, ids)
    final = vote(blended, pd.Series(keys.to_numpy(), index=ids), recipe.sequences.vote)
    return pd.DataFrame({"Id": ids, **alone, BLEND: blended.argmax_category(), FINAL: final.to_numpy(np.int64)})
