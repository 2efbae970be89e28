"""Submission: assembly in sample order, validation reporting every defect, atomic CSV + manifest."""

import json

import numpy as np
import pandas as pd
import pytest

from iwc.errors import IwcError
from iwc.io import sha256_file
from iwc.provenance import code_version
from iwc.submission import (
    assemble,
    check,
    read_predictions,
    validate,
    validate_file,
    write_submission,
)

CATEGORIES = [0, 3, 72, 372]
SAMPLE = pd.DataFrame({"Id": ["c", "a", "d", "b"], "Category": [0, 0, 0, 0]})


def good() -> pd.DataFrame:
    return pd.DataFrame({"Id": ["c", "a", "d", "b"], "Category": [3, 0, 372, 3]})


def test_assemble_follows_sample_order_and_ignores_extra_predictions():
    predictions = pd.Series({"a": 3, "b": 0, "zz": 72, "c": 372, "d": 3})
    out = assemble(SAMPLE, predictions)
    assert list(out.columns) == ["Id", "Category"]
    assert out["Id"].tolist() == ["c", "a", "d", "b"]
    assert out["Category"].tolist() == [372, 3, 3, 0]
    assert out["Category"].dtype == np.int64


def test_assemble_refuses_missing_or_duplicate_predictions():
    with pytest.raises(IwcError, match=r"2 of 4 sample Ids have no prediction \(e\.g\. 'c', 'd'\)"):
        assemble(SAMPLE, pd.Series({"a": 3, "b": 0}))
    dup = pd.Series([1, 2, 3, 4, 5], index=["a", "b", "c", "d", "a"])
    with pytest.raises(IwcError, match=r"1 image ids are duplicated \(e\.g\. 'a'\)"):
        assemble(SAMPLE, dup)


def test_validate_accepts_a_good_submission_in_any_order():
    assert validate(good(), SAMPLE, CATEGORIES) == []
    assert validate(good().iloc[::-1], SAMPLE, CATEGORIES) == []
    check(good(), SAMPLE, CATEGORIES)


def test_validate_file_reports_every_defect_at_once(tmp_path):
    sample_csv = tmp_path / "sample.csv"
    SAMPLE.to_csv(sample_csv, index=False)
    bad = tmp_path / "bad.csv"
    # Header order swapped; 'd' missing; 'x' and 'e' extra; 'a' twice; 999 unknown; 'cat' and '3.0'
    # not integers; row 6 has a blank category.
    bad.write_text("Category,Id\n3,a\n0,a\n999,b\ncat,c\n3.0,x\n,e\n")
    problems = validate_file(bad, sample_csv, CATEGORIES)
    text = "\n".join(problems)
    assert "header is 'Category,Id'" in text
    assert "1 sample Ids are missing (e.g. 'd')" in text
    assert "2 Ids are not in the sample submission (e.g. 'x', 'e')" in text
    assert "1 Ids appear more than once (e.g. 'a')" in text
    assert "1 distinct Category values are unknown ids (e.g. 999)" in text
    assert "2 distinct Category values are not integers (e.g. 'cat', '3.0')" in text
    assert "1 rows have a blank or NaN Category (1-based row numbers) (e.g. 6)" in text
    assert len(problems) == 7


def test_validate_in_memory_catches_nan_blank_ids_and_float_categories():
    df = pd.DataFrame({"Id": ["c", "a", "d", None], "Category": [3.0, np.nan, 0.0, 3.0]})
    text = "\n".join(validate(df, SAMPLE, CATEGORIES))
    assert "1 rows have a blank Id (1-based row numbers) (e.g. 4)" in text
    assert "1 sample Ids are missing (e.g. 'b')" in text
    assert "1 rows have a blank or NaN Category (1-based row numbers) (e.g. 2)" in text
    assert "2 distinct Category values are not integers (e.g. '3.0', '0.0')" in text  # written as '3.0'


def test_validate_examples_are_capped(tmp_path):
    sample = pd.DataFrame({"Id": [f"id{k}" for k in range(20)], "Category": 0})
    problems = validate(pd.DataFrame({"Id": ["id0"], "Category": [0]}), sample, CATEGORIES)
    assert problems == ["19 sample Ids are missing (e.g. 'id1', 'id2', 'id3', 'id4', 'id5', ...)"]


def test_validate_file_unreadable_submission_is_a_problem_and_bad_sample_an_error(tmp_path):
    sample_csv = tmp_path / "sample.csv"
    SAMPLE.to_csv(sample_csv, index=False)
    problems = validate_file(tmp_path / "nope.csv", sample_csv, CATEGORIES)
    assert len(problems) == 1 and "does not exist" in problems[0]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "not a readable CSV" in validate_file(empty, sample_csv, CATEGORIES)[0]
    with pytest.raises(IwcError, match="no 'Id' column"):
        validate_file(empty, _write(tmp_path / "not_sample.csv", "X\n1\n"), CATEGORIES)


def _write(path, text):
    path.write_text(text)
    return path


def test_check_raises_one_error_listing_all_problems():
    df = pd.DataFrame({"Id": ["c", "a", "a", "q"], "Category": [3, 5, 0, 0]})
    with pytest.raises(IwcError) as e:
        check(df, SAMPLE, CATEGORIES)
    message = str(e.value)
    assert message.startswith("submission is invalid (4 problems):")
    for part in ("appear more than once", "sample Ids are missing", "not in the sample", "unknown ids"):
        assert part in message


def test_read_predictions(tmp_path):
    path = _write(tmp_path / "p.csv", "Id,Category\nb,3\na,372\n")
    assert read_predictions(path).to_dict() == {"b": 3, "a": 372}
    with pytest.raises(IwcError, match=r"2 problems.*\n.*more than once.*\n.*not integers"):
        read_predictions(_write(tmp_path / "q.csv", "Id,Category\nb,x\nb,3\n"))


def test_write_submission_writes_exact_bytes_and_manifest(tmp_path):
    model = _write(tmp_path / "full.npz", "weights")
    out = tmp_path / "run"
    path = write_submission(good(), out, {"full_probs": model}, sample=SAMPLE, category_ids=CATEGORIES,
                            extra={"recipe": "demo"})
    assert path == out / "submission.csv"
    assert path.read_bytes() == b"Id,Category\nc,3\na,0\nd,372\nb,3\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {
        "submission": {"file": "submission.csv", "sha256": sha256_file(path), "rows": 4,
                       "category_histogram": {"0": 1, "3": 2, "372": 1}},
        "inputs": {"full_probs": {"file": "full.npz", "sha256": sha256_file(model)}},
        "code": code_version("iwc.submission"),
        "recipe": "demo",
    }
    first = (path.read_bytes(), (out / "manifest.json").read_bytes())
    # Same frame, read back as strings: same bytes.
    again = pd.read_csv(path, dtype=str)
    write_submission(again, out, {"full_probs": model}, sample=SAMPLE, category_ids=CATEGORIES,
                     extra={"recipe": "demo"})
    assert (path.read_bytes(), (out / "manifest.json").read_bytes()) == first
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "submission.csv"]  # no temp files


@pytest.mark.parametrize("failure", ["invalid", "missing_input", "extra_clash"])
def test_failed_write_leaves_existing_submission_untouched(tmp_path, failure):
    out = tmp_path / "run"
    write_submission(good(), out, {}, sample=SAMPLE, category_ids=CATEGORIES)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    df, inputs, extra = good(), {}, None
    if failure == "invalid":
        df = good().iloc[:3]
    elif failure == "missing_input":
        inputs = {"crop_probs": tmp_path / "absent.npz"}
    else:
        extra = {"code": "mine"}
    df.loc[df.index[0], "Category"] = 0  # a change that would alter the bytes if anything were written
    with pytest.raises(IwcError):
        write_submission(df, out, inputs, sample=SAMPLE, category_ids=CATEGORIES, extra=extra)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("failing", ["write_text", "write_json"])
@pytest.mark.parametrize("existing", [True, False])
def test_a_full_disk_changes_nothing_and_leaves_no_temp_folder(tmp_path, monkeypatch, failing, existing):
    import errno

    from iwc import submission

    out = tmp_path / "run"
    if existing:
        write_submission(good(), out, {}, sample=SAMPLE, category_ids=CATEGORIES)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if existing else None

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(submission, failing, full)
    df = good().assign(Category=0)
    with pytest.raises(IwcError, match=rf"cannot write the submission into {out}: No space left on device"):
        write_submission(df, out, {}, sample=SAMPLE, category_ids=CATEGORIES)
    if existing:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp folder either
    else:
        assert not out.exists()


def test_out_that_is_a_file_is_refused_untouched(tmp_path):
    out = tmp_path / "submission.csv"
    out.write_text("keep me")
    with pytest.raises(IwcError, match="is a file, not a folder"):
        write_submission(good(), out, {}, sample=SAMPLE, category_ids=CATEGORIES)
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("value", ["99999999999999999999999", "18446744073709551615", "-9223372036854775809"])
def test_categories_beyond_int64_are_a_problem_never_wrapped(tmp_path, value):
    path = _write(tmp_path / "p.csv", f"Id,Category\na,{value}\nb,3\n")
    with pytest.raises(IwcError) as e:
        read_predictions(path)
    assert f"1 distinct Category values are outside the 64-bit integer range (e.g. '{value}')" in str(e.value)
    submission = pd.DataFrame({"Id": ["c", "a", "d", "b"], "Category": ["3", value, "0", "3"]})
    assert validate(submission, SAMPLE, CATEGORIES) == [
        f"1 distinct Category values are outside the 64-bit integer range (e.g. '{value}')"]
    edge = "9223372036854775807"  # the largest int64 is a number (an unknown id here), not out of range
    assert read_predictions(_write(tmp_path / "e.csv", f"Id,Category\na,{edge}\n")).to_dict() == {"a": int(edge)}


def test_a_directory_is_named_as_one(tmp_path):
    assert validate_file(tmp_path, _write(tmp_path / "s.csv", "Id,Category\na,0\n"), CATEGORIES) == [
        f"{tmp_path} is a directory, not a CSV file: pass the CSV itself (e.g. {tmp_path / 'submission.csv'})"]


def test_a_temp_folder_left_by_a_killed_writer_is_cleared(tmp_path):
    out = tmp_path / "run"
    (out / ".submission-dead.tmp").mkdir(parents=True)
    (out / ".submission-dead.tmp" / "submission.csv").write_text("half")
    write_submission(good(), out, {}, sample=SAMPLE, category_ids=CATEGORIES)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "submission.csv"]
