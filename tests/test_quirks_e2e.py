"""End to end on the synthetic competition with the real files' quirks planted (`iwc demo-data --quirks`).

The run must complete with a valid submission, and its `data_issues.json` must list exactly the planted
image ids, by reason: nothing skipped or repaired goes unrecorded, and nothing is recorded that was not planted.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from test_reproduce import TINY
from test_tasks import _commands, _load_tasks

from iwc.data.competition import SAMPLE_CSV
from iwc.data.issues import ISSUES_JSON, DataIssues, issues_name
from iwc.host.cli import main
from iwc.host.pipeline import reproduce
from iwc.recipe import load_recipe
from iwc.submission import validate_file


@pytest.fixture(scope="module")
def run(quirky_demo, tmp_path_factory):
    """The session's quirks demo (`iwc demo-data --scale small --quirks`: test_demo shows they are the same bytes)
    as `tmp / "data"`, and one shrunk run on it."""
    tmp = tmp_path_factory.mktemp("quirks")
    (tmp / "data").symlink_to(quirky_demo.root, target_is_directory=True)
    planted = json.loads((tmp / "data" / "ground_truth" / "data_issues.json").read_text())["data_issues"]
    result = reproduce(tmp / "data", load_recipe("demo", TINY), tmp / "runs" / "q", tmp / "submissions" / "q",
                       truth=tmp / "data" / "ground_truth" / "test_labels.csv")
    return tmp, planted, result


def test_completes_with_a_valid_submission_holding_every_sample_id(run):
    tmp, planted, result = run
    assert result.ran == ["full", "crop", "aggregate"]
    comp = tmp / "data" / "iwildcam-2020-fgvc7"
    categories = [c["id"] for c in json.loads((comp / "iwildcam2020_train_annotations.json").read_text())["categories"]]
    out = result.submission_dir
    assert validate_file(out / "submission.csv", comp / SAMPLE_CSV, categories) == []
    submission = pd.read_csv(out / "submission.csv", dtype={"Id": str}).set_index("Id")["Category"]
    assert submission.index.tolist() == pd.read_csv(comp / SAMPLE_CSV, dtype={"Id": str})["Id"].tolist()
    assert (submission.loc[planted["sample_without_image"]] == 0).all()  # the documented fill
    assert not submission.index.isin(planted["not_in_sample"]).any()
    predicted = pd.read_csv(out / "predictions.csv", dtype={"Id": str})["Id"]
    assert predicted.isin(planted["not_in_sample"]).sum() == len(planted["not_in_sample"])  # predicted all the same


def test_data_issues_list_exactly_the_planted_ids_by_reason(run):
    _, planted, result = run
    issues = DataIssues.load(result.submission_dir / ISSUES_JSON)
    assert issues.ids() == planted
    stages = {}
    for record in issues.records:
        stages.setdefault(record.reason, set()).add(record.stage)
    assert stages["zero_byte"] == stages["unreadable"] == {"full", "crop"}  # each stage saw the broken files
    assert stages["missing"] == {"full", "crop"}
    assert stages["box_clamped"] == stages["box_dropped"] == stages["no_detector_entry"] == {"crop"}
    assert stages["not_in_sample"] == stages["sample_without_image"] == {"aggregate"}


def test_counts_reach_every_manifest_and_the_reports(run):
    tmp, planted, result = run
    merged = DataIssues.load(result.submission_dir / ISSUES_JSON)
    manifest = json.loads((result.submission_dir / "manifest.json").read_text())
    assert manifest["data_issues"] == {"counts": merged.counts(), "file": ISSUES_JSON}
    for stage in ("full", "crop"):
        work = tmp / "runs" / "q" / "stages" / stage / "working"
        own = DataIssues.load(work / issues_name(stage))
        assert json.loads((work / f"{stage}.manifest.json").read_text())["data_issues"] == {
            "counts": own.counts(), "file": issues_name(stage)}
        assert {r.stage for r in own.records} == {stage}
    for report in (result.submission_dir / "report.md", tmp / "runs" / "q" / "stages" / "aggregate" / "working"
                   / "report.md"):
        text = report.read_text()
        assert "## Data issues" in text and f"`{ISSUES_JSON}`" in text
        for reason, ids in planted.items():
            assert f"| {reason} | {merged.counts()[reason]} | {ids[0]}" in text


def test_quirks_need_the_demo(capsys):
    assert main(["reproduce", "--quirks", "--data", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--quirks" in err and "Traceback" not in err


def test_invoke_tasks_forward_quirks_and_key_the_demo_folder_by_them():
    tasks = _load_tasks()
    cli = f"{sys.executable} -m iwc.host.cli"
    assert _commands(tasks.data_demo, seed=3, scale="small", quirks=True) == [
        f"{cli} demo-data data/demo/small-seed3-quirks --seed 3 --scale small --quirks"]
    assert _commands(tasks.data_demo, seed=3, scale="small") == [
        f"{cli} demo-data data/demo/small-seed3 --seed 3 --scale small"]
    assert _commands(tasks.reproduce, demo=True, quirks=True, scale="small") == [
        f"{cli} reproduce --demo --quirks --scale small"]  # in the order iwc declares its options
