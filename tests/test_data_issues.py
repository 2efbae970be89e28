"""The data-issues record, the aggregator's sample matching, and stages reading only the files they use."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_decode import bomb_jpeg

from iwc import layout
from iwc.data.competition import MD_JSON
from iwc.data.issues import (
    ISSUES_JSON,
    REASONS,
    DataIssues,
    file_problem,
    issues_name,
    record_unreadable,
)
from iwc.errors import IwcError
from iwc.recipe import load_recipe
from iwc.stages import aggregate, full


def _issues() -> DataIssues:
    issues = DataIssues("crop")
    issues.add("box_clamped", "b", "detections[0] bbox [-0.01, 0, 1, 1] clamped to [0, 0, 1, 1]")
    issues.add("missing", "a", "train/a.jpg: train original, no crop")
    issues.add("box_clamped", "b", "detections[1] bbox [0, 0, 1.004, 1] clamped to [0, 0, 1, 1]")
    issues.add("box_clamped", "c", "detections[0] ...")
    return issues


def test_counts_ids_and_summary_by_reason():
    issues = _issues()
    assert len(issues) == 4
    assert issues.counts() == {"missing": 1, "box_clamped": 3}  # in REASONS order
    assert issues.ids() == {"missing": ["a"], "box_clamped": ["b", "c"]}
    assert issues.summary("crop.data_issues.json") == {"counts": {"missing": 1, "box_clamped": 3},
                                                       "file": "crop.data_issues.json"}
    assert {r.stage for r in issues.records} == {"crop"}
    with pytest.raises(ValueError, match="unknown data-issue reason"):
        issues.add("lost", "x", "")


def test_save_load_round_trip_with_stable_bytes_and_merge(tmp_path):
    issues = _issues()
    issues.save(tmp_path / "one.json")
    shuffled = DataIssues("crop", reversed(issues.records))
    shuffled.save(tmp_path / "two.json")
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    data = json.loads((tmp_path / "one.json").read_text())
    assert data["counts"] == {"missing": 1, "box_clamped": 3} and set(data["reasons"]) == {"missing", "box_clamped"}
    assert data["issues"][0] == {"reason": "box_clamped", "image_id": "b", "stage": "crop",
                                 "detail": "detections[0] bbox [-0.01, 0, 1, 1] clamped to [0, 0, 1, 1]"}
    merged = DataIssues("aggregate")
    merged.extend(DataIssues.load(tmp_path / "one.json"))
    merged.add("not_in_sample", "t9", "predicted category 3, not submitted")
    assert sorted(merged.records) == sorted([*issues.records, *merged.records[-1:]])
    assert merged.records[-1].stage == "aggregate" and merged.records[0].stage == "crop"


@pytest.mark.parametrize("text", [None, "[]", '{"issues": [{"reason": "missing"}]}', "{broken"])
def test_load_of_an_absent_or_damaged_record_names_the_file(tmp_path, text):
    path = tmp_path / ISSUES_JSON
    if text is not None:
        path.write_text(text)
    with pytest.raises(IwcError, match=f"{path}: missing or damaged data-issues record"):
        DataIssues.load(path)


def test_log_lines_and_markdown(caplog):
    issues = _issues()
    with caplog.at_level(logging.INFO):
        issues.log(logging.getLogger("t"), "crop")
        DataIssues().log(logging.getLogger("t"), "full")
    assert "crop: data issue box_clamped: 3 (b, c) - MegaDetector box" in caplog.text
    assert "full: no data issues" in caplog.text
    table = issues.markdown()
    assert "| box_clamped | 3 | b, c |" in table and "| missing | 1 | a |" in table
    assert f"`{ISSUES_JSON}`" in table
    assert "No image was skipped or repaired" in DataIssues().markdown()
    many = DataIssues()
    for i in range(5):
        many.add("zero_byte", f"z{i}", "")
    assert "| zero_byte | 5 | z0, z1, z2, ... |" in many.markdown()


def test_file_problem_tells_missing_zero_byte_and_unreadable_apart(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert file_problem(tmp_path / "gone.jpg") == "missing"
    assert file_problem(tmp_path / "empty.jpg") == "zero_byte"
    assert file_problem(tmp_path / "bad.jpg") == "unreadable"
    issues = DataIssues("full")
    record_unreadable(issues, ["gone", "empty", "bad"], [tmp_path / "train" / "gone.jpg", tmp_path / "empty.jpg",
                                                         Path("/elsewhere/bad.jpg")], "left out", base=tmp_path)
    assert [(r.reason, r.image_id, r.detail) for r in issues.records] == [
        ("missing", "gone", "train/gone.jpg: left out"), ("zero_byte", "empty", "empty.jpg: left out"),
        ("missing", "bad", "/elsewhere/bad.jpg: left out")]


def test_an_unreadable_file_is_recorded_with_why_it_does_not_decode(tmp_path):
    issues = DataIssues("crop")
    record_unreadable(issues, ["bomb", "bad"], [bomb_jpeg(tmp_path / "bomb.jpg"), tmp_path / "bad.jpg"], "no crop",
                      base=tmp_path)
    (tmp_path / "bad.jpg").write_bytes(b"x")  # after the call: the record was about a missing file
    bomb, bad = issues.records
    assert bomb.reason == "unreadable"
    assert bomb.detail.startswith("bomb.jpg (DecompressionBombError: Image size (900000000 pixels) exceeds")
    assert bomb.detail.endswith("): no crop")
    assert (bad.reason, bad.detail) == ("missing", "bad.jpg: no crop")


def test_every_reason_has_a_meaning_and_model_stage_files_are_named_by_stage():
    assert set(REASONS) == {"missing", "unreadable", "zero_byte", "no_detector_entry", "box_clamped", "box_dropped",
                            "not_in_sample", "sample_without_image"}
    assert issues_name("crop") == "crop.data_issues.json"


def test_match_sample_records_what_it_leaves_out_and_what_it_fills():
    sample = pd.DataFrame({"Id": ["t2", "ghost", "t0"], "Category": [0, 0, 0]})
    predictions = pd.Series([5, 7, 9], index=["t0", "t1", "t2"], dtype=np.int64)
    issues = DataIssues("aggregate")
    matched = aggregate.match_sample(sample, predictions, issues)
    assert matched.to_dict() == {"t0": 5, "t1": 7, "t2": 9, "ghost": 0}
    assert issues.ids() == {"not_in_sample": ["t1"], "sample_without_image": ["ghost"]}
    assert "predicted category 7" in issues.records[0].detail
    assert "submitted as category 0" in issues.records[1].detail
    submission = aggregate.assemble(sample, matched)
    assert submission.to_dict("list") == {"Id": ["t2", "ghost", "t0"], "Category": [9, 0, 5]}


class _Stop(Exception):
    pass


def test_the_full_stage_neither_reads_nor_needs_the_megadetector_file(small_demo, tmp_path, monkeypatch):
    comp = tmp_path / "input" / "competitions" / layout.COMPETITION_SLUG
    comp.mkdir(parents=True)
    for entry in small_demo.competition_dir.iterdir():
        if entry.name != MD_JSON:
            os.symlink(entry, comp / entry.name)
    (comp / MD_JSON).write_text('{"images": [{"id": "x", "detections": [{"bbox": "broken"}]}', encoding="utf-8")
    resized = tmp_path / "input" / "datasets" / layout.RESIZED_DATASET
    resized.parent.mkdir(parents=True)
    os.symlink(small_demo.resized_dir, resized)
    monkeypatch.setenv(layout.INPUT_ENV, str(tmp_path / "input"))
    monkeypatch.setenv(layout.WORKING_ENV, str(tmp_path / "work"))
    seen = {}

    def stop(name, m, seed, train, test, work, issues, names):
        seen.update(train=len(train), test=len(test))
        raise _Stop

    monkeypatch.setattr(full, "train_model", stop)
    with pytest.raises(_Stop):
        full.main(load_recipe("demo"), "full")
    assert seen == {"train": small_demo.n_train, "test": small_demo.n_test}
