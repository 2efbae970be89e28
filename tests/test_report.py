"""Run report: accuracies, the markdown table, the two PNG plots and the markdown file."""

import numpy as np
import pytest
from PIL import Image

from iwc.recipe import DEMO, Recipe
from iwc.report import (
    VALIDATION,
    accuracies,
    accuracy_table,
    judge,
    judgement,
    most_frequent_class,
    plot_confusion,
    plot_per_location,
    report_markdown,
    step_labels,
)

LABELS = step_labels(DEMO)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRUTH = np.array([0, 3, 3, 72, 72, 0])
PREDS = {
    "full": np.array([0, 3, 0, 0, 72, 0]),  # 4/6
    "crop": np.array([3, 3, 3, 72, 72, 72]),  # 4/6
    "blend": np.array([0, 3, 3, 72, 0, 0]),  # 5/6
    "final": np.array([0, 3, 3, 72, 72, 0]),  # 6/6
}
LOCATIONS = np.array([10, 10, 10, 25, 25, 7])


def _check_png(path, min_px=200, max_px=3000) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert min_px <= im.width <= max_px and min_px <= im.height <= max_px
        return im.size


def test_accuracies_per_step():
    acc = accuracies(PREDS, TRUTH)
    assert list(acc) == list(PREDS)
    assert acc == pytest.approx({"full": 4 / 6, "crop": 4 / 6, "blend": 5 / 6, "final": 1.0})
    assert all(type(v) is float for v in acc.values())


def test_the_steps_come_from_the_recipe_a_row_per_model():
    assert list(LABELS) == ["baseline", "full", "crop", "blend", "final"]
    data = DEMO.to_dict()
    data["models"]["crop2"] = data["models"]["crop"]
    recipe = Recipe.from_dict({**data, "blend": {"weights": {"full": 0.3, "crop": 0.35, "crop2": 0.35}}})
    labels = step_labels(recipe)
    assert list(labels) == ["baseline", "full", "crop", "crop2", "blend", "final"]
    assert labels["crop2"] == "crop2: crop model (no crop -> empty)"
    assert labels["blend"] == "blend (full + crop + crop2)"


def test_accuracy_table_has_a_row_per_step_and_a_column_per_set():
    table = accuracy_table({"validation": {"baseline": 0.3, "full": 0.5, "crop": 0.25, "blend": 0.625, "final": 0.75},
                            "test": {"full": 0.4, "final": 0.123456}}, LABELS)
    lines = table.splitlines()
    assert lines[0] == "| step | validation | test |"  # nothing flagged: no note column
    assert lines[1] == "|---|---:|---:|"
    assert lines[2:] == [
        "| most frequent class (baseline) | 0.3000 | - |",
        "| full: full-image model | 0.5000 | 0.4000 |",
        "| crop: crop model (no crop -> empty) | 0.2500 | - |",
        "| blend (full + crop) | 0.6250 | - |",
        "| blend + sequence vote | 0.7500 | 0.1235 |",
    ]
    assert len(lines) == 2 + len(LABELS)


GOOD = {"baseline": 0.34, "full": 0.60, "crop": 0.55, "blend": 0.65, "final": 0.70}


def test_a_method_that_improves_at_every_step_is_not_flagged():
    assert judge(GOOD) == []
    assert judgement(GOOD).startswith("On validation, no step lowers accuracy")
    ties = {"baseline": 0.5, "full": 0.5, "crop": 0.5, "blend": 0.5, "final": 0.5}
    assert judge(ties) == []  # equal is not worse


@pytest.mark.parametrize(("change", "flagged"), [
    ({"blend": 0.58}, [("blend", "lower than model full")]),  # below the better single model
    ({"crop": 0.66}, [("blend", "lower than model crop")]),
    ({"crop2": 0.7}, [("blend", "lower than model crop2")]),  # any number of models
    ({"final": 0.62}, [("final", "lower than the blend")]),
    ({"full": 0.2, "crop": 0.2, "blend": 0.25, "final": 0.3},
     [("final", "below the baseline")]),
    ({"final": 0.3}, [("final", "lower than the blend"), ("final", "below the baseline")]),
])
def test_a_worse_step_is_flagged(change, flagged):
    accuracy = {**GOOD, **change}
    assert [(f.step, f.note) for f in judge(accuracy)] == flagged
    text = judgement(accuracy, on="validation")
    assert text.count("⚠") == len(flagged)
    assert all(f.sentence in text for f in judge(accuracy))


def test_the_table_flags_a_worse_step_in_a_note_column():
    table = accuracy_table({"validation": {**GOOD, "final": 0.3}, "test": {**GOOD, "blend": 0.1}}, LABELS)
    lines = table.splitlines()
    assert lines[0] == "| step | validation | test | note |"
    assert lines[1] == "|---|---:|---:|---|"
    assert lines[-1] == "| blend + sequence vote | 0.3000 | 0.7000 | ⚠ lower than the blend; ⚠ below the baseline |"
    assert lines[-2] == "| blend (full + crop) | 0.6500 | 0.1000 |  |"  # judged on the first set only
    assert "⚠" not in "".join(lines[2:-1])


def test_judging_skips_steps_that_are_absent():
    assert judge({"full": 0.9, "final": 0.1}) == []


def test_most_frequent_class_breaks_ties_by_the_smallest_id():
    assert most_frequent_class([3, 72, 72, 0, 3, 0]) == 0
    assert most_frequent_class(np.array([5, 5, 9])) == 5
    with pytest.raises(ValueError):
        most_frequent_class([])


def test_plot_confusion_writes_a_deterministic_png(tmp_path):
    names = {0: "empty", 3: "dasyprocta punctata"}  # 72 has no name: labelled by id alone
    plot_confusion(TRUTH, PREDS["full"], names, tmp_path / "a.png")
    plot_confusion(TRUTH, PREDS["full"], names, tmp_path / "b.png")
    width, height = _check_png(tmp_path / "a.png")
    assert width > height  # room for the colour bar
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()  # the full matrix beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.png", "b.csv", "b.png"]  # no temporary files


def test_plot_confusion_grows_with_the_number_of_categories(tmp_path):
    many = np.arange(40)
    plot_confusion(TRUTH, PREDS["full"], {}, tmp_path / "small.png")
    plot_confusion(many, many[::-1], {}, tmp_path / "large.png")
    small, large = _check_png(tmp_path / "small.png"), _check_png(tmp_path / "large.png")
    assert large[0] > small[0] and large[1] > small[1]


def test_plot_per_location_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "per_location.png"
    plot_per_location(LOCATIONS, TRUTH, PREDS, LABELS, path)
    _check_png(path)
    plot_per_location(LOCATIONS, TRUTH, {"final": PREDS["final"]}, LABELS, tmp_path / "one.png")
    _check_png(tmp_path / "one.png")


def test_report_markdown_renders_the_metrics_then_the_extra_sections():
    metrics = {"steps": list(LABELS.items()), "accuracy": {VALIDATION: GOOD, "test": {"final": 0.5}},
               "validation": {"images": 393, "locations": 4}}
    text = report_markdown("iwc run: recipe 'demo'", metrics, "no data issues", [("Stages", "| s |")])
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# iwc run: recipe 'demo'", "## Accuracy", "## Judgement", "## Final predictions on validation",
                        "## Data issues", "## Stages"]
    assert accuracy_table(metrics["accuracy"], LABELS) in text
    assert "393 images from 4 held-out locations" in text and text.endswith("| s |\n")
