"""The submission: assemble predictions in the sample's order, validate, write CSV + manifest.

A submission has the header `Id,Category`, exactly the Ids of `sample_submission.csv` (once each, any
order), and an integer ORIGINAL category id per row. Validation reports every problem at once; writing
validates first, so a bad submission never replaces a good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iwc.errors import IwcError
from iwc.io import sha256_file, write_json, write_text
from iwc.provenance import code_version

HEADER = ["Id", "Category"]
SUBMISSION_CSV = "submission.csv"
MANIFEST_JSON = "manifest.json"
_EXAMPLES = 5  # examples quoted per problem


def assemble(sample: pd.DataFrame, predictions: pd.Series) -> pd.DataFrame:
    """DataFrame(Id, Category) with one row per sample Id, in the sample's order.

    `predictions` maps image id (index) -> category id; predictions for images the sample lacks are
    ignored. A sample Id without a prediction is an error: rows are never dropped or invented.
    """
    if not predictions.index.is_unique:
        dup = predictions.index[predictions.index.duplicated()].unique()
        raise IwcError(f"predictions: {_count(dup, 'image ids are duplicated')}; keep one prediction per image")
    ids = sample["Id"].astype(str).to_numpy()
    categories = predictions.reindex(ids)
    missing = categories.isna().to_numpy()
    if missing.any():
        raise IwcError(
            f"{_count(ids[missing], f'of {len(ids)} sample Ids have no prediction')}; "
            "the predictions must cover every Id of sample_submission.csv"
        )
    return pd.DataFrame({"Id": ids, "Category": categories.to_numpy().astype(np.int64)})


def validate(submission: pd.DataFrame, sample: pd.DataFrame, category_ids: Iterable[int]) -> list[str]:
    """Every problem of `submission` against the sample's Ids and the known category ids ([] = valid).

    Works on frames read as strings (see `validate_file`) as well as on typed frames.
    """
    return _problems(submission, sample["Id"].astype(str), np.asarray(list(category_ids), dtype=np.int64))


def validate_file(
    submission_csv: str | os.PathLike, sample_csv: str | os.PathLike, category_ids: Iterable[int]
) -> list[str]:
    """`validate` for files: the submission is read as plain strings, so any defect is reported.

    An unreadable submission is one problem; an unreadable sample is an `IwcError`.
    """
    sample = read_csv_strings(sample_csv)
    if "Id" not in sample.columns:
        raise IwcError(f"{sample_csv} has no 'Id' column; is it the competition's sample_submission.csv?")
    try:
        submission = read_csv_strings(submission_csv)
    except IwcError as e:
        return [str(e)]
    return validate(submission, sample, category_ids)


def check(submission: pd.DataFrame, sample: pd.DataFrame, category_ids: Iterable[int]) -> None:
    """Raise one `IwcError` listing every problem of `submission`; return None when it is valid."""
    problems = validate(submission, sample, category_ids)
    if problems:
        raise IwcError(_report("submission is invalid", problems))


def read_predictions(path: str | os.PathLike) -> pd.Series:
    """An `Id,Category` CSV (e.g. the aggregator's output) -> Series image id -> category id (int64)."""
    df = read_csv_strings(path)
    problems = _problems(df, None, None)
    if problems:
        raise IwcError(_report(f"predictions {path} are unusable", problems))
    categories = df["Category"].map(int).to_numpy(dtype=np.int64)  # exact: every value fits int64 here
    return pd.Series(categories, index=pd.Index(df["Id"].astype(str), name="image_id"), name="category_id")


def read_csv_strings(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV with every field as a string (blank = ""), so nothing is coerced before it is checked."""
    path = Path(path)
    if path.is_dir():
        raise IwcError(f"{path} is a directory, not a CSV file: pass the CSV itself (e.g. {path / SUBMISSION_CSV})")
    if not path.is_file():
        raise IwcError(f"{path} does not exist")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise IwcError(f"{path} is not a readable CSV: {_one_line(e)}") from e
    except OSError as e:
        raise IwcError(f"cannot read {path}: {e.strerror or e}") from e


def write_submission(
    df: pd.DataFrame,
    out_dir: str | os.PathLike,
    inputs: Mapping[str, str | os.PathLike],
    *,
    sample: pd.DataFrame,
    category_ids: Iterable[int],
    code: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Validate `df`, then write `out_dir/submission.csv` and `out_dir/manifest.json`; return the CSV path.

    The CSV has the header `Id,Category` and '\\n' line endings (same frame => same bytes). The manifest
    holds the CSV's sha256, row count and category histogram, the sha256 of each named `inputs` file,
    `code` (what wrote it: default `code_version("iwc.submission")`), and the keys of `extra`. Everything
    is checked and hashed before anything is
    written, and the two files are written together (`_write_pair`): a failure (a full disk, a read-only
    folder) is an `IwcError` and leaves an existing submission untouched.
    """
    check(df, sample, category_ids)
    out = pd.DataFrame({"Id": df["Id"].astype(str), "Category": pd.to_numeric(df["Category"]).astype(np.int64)})
    text = out.to_csv(index=False, lineterminator="\n")
    histogram = out["Category"].value_counts().sort_index()
    manifest: dict[str, Any] = {
        "submission": {
            "file": SUBMISSION_CSV,
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "rows": len(out),
            "category_histogram": {str(k): int(v) for k, v in histogram.items()},
        },
        "inputs": {name: _input_entry(name, path) for name, path in sorted(inputs.items())},
        "code": dict(code or code_version(__name__)),
    }
    clash = sorted(set(manifest) & set(extra or {}))
    if clash:
        raise IwcError(f"manifest extra keys {clash} clash with built-in keys; rename them")
    manifest.update(extra or {})
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise IwcError(f"{out_dir} is a file, not a folder: pass a folder for {SUBMISSION_CSV} + {MANIFEST_JSON}")
    try:
        _write_pair(out_dir, text, manifest)
    except OSError as e:
        raise IwcError(f"cannot write the submission into {out_dir}: {e.strerror or e}; nothing was changed there: "
                       "free some space or choose a writable folder") from e
    return out_dir / SUBMISSION_CSV


def _write_pair(out_dir: Path, text: str, manifest: dict[str, Any]) -> None:
    """Write the CSV and its manifest together: both into a temporary folder inside `out_dir` first (a failure
    there changes nothing), then renamed into place back to back with Ctrl-C held until both are in, so an
    interruption never leaves a new CSV beside an old manifest or one file without the other. (Only a hard
    kill between the two renames could; the manifest's sha256 of the CSV then shows the mismatch.)"""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".submission-*.tmp"):  # left by a process killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".submission-", suffix=".tmp"))
    except OSError:
        if created:
            out_dir.rmdir()
        raise
    try:
        write_text(tmp / SUBMISSION_CSV, text)
        write_json(tmp / MANIFEST_JSON, manifest)
        with _interrupts_deferred():
            os.replace(tmp / SUBMISSION_CSV, out_dir / SUBMISSION_CSV)
            os.replace(tmp / MANIFEST_JSON, out_dir / MANIFEST_JSON)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and deliver it right after the block."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets SIGINT
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _problems(df: pd.DataFrame, sample_ids: pd.Series | None, category_ids: np.ndarray | None) -> list[str]:
    """Header, Id and Category problems; the sample and category checks run only when those are given."""
    columns = [str(c) for c in df.columns]
    problems = [] if columns == HEADER else [f"header is {','.join(columns)!r}; it must be exactly 'Id,Category'"]
    if columns.count("Id") == 1:
        problems += _id_problems(df["Id"], sample_ids)
    if columns.count("Category") == 1:
        problems += _category_problems(df["Category"], category_ids)
    return problems


def _id_problems(ids: pd.Series, sample_ids: pd.Series | None) -> list[str]:
    blank = _blank(ids)
    ids = ids[~blank].astype(str)
    problems = [
        _count(np.flatnonzero(blank.to_numpy()) + 1, "rows have a blank Id (1-based row numbers)"),
        _count(ids[ids.duplicated()].unique(), "Ids appear more than once"),
    ]
    if sample_ids is not None:
        problems += [
            _count(sample_ids[~sample_ids.isin(ids)], "sample Ids are missing"),
            _count(ids[~ids.isin(sample_ids)].unique(), "Ids are not in the sample submission"),
        ]
    return [p for p in problems if p]


def _category_problems(categories: pd.Series, category_ids: np.ndarray | None) -> list[str]:
    blank = _blank(categories)
    text = categories[~blank].astype(str)
    integer = text.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)
    values = text[integer].map(int)  # Python ints: exact at any size, never wrapped
    fits = values.between(_INT64_MIN, _INT64_MAX).to_numpy(dtype=bool)
    problems = [
        _count(np.flatnonzero(blank.to_numpy()) + 1, "rows have a blank or NaN Category (1-based row numbers)"),
        _count(text[~integer].unique(), "distinct Category values are not integers"),
        _count(text[integer][~fits].unique(), "distinct Category values are outside the 64-bit integer range"),
    ]
    if category_ids is not None:
        values = values[fits]
        problems.append(_count(values[~values.isin(category_ids)].unique(), "distinct Category values are unknown ids"))
    return [p for p in problems if p]


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str).str.strip() == "")


def _count(values: Iterable[Any], what: str) -> str:
    """'N <what> (e.g. a, b, ...)', or '' when there are none."""
    values = list(values)
    if not values:
        return ""
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:_EXAMPLES])
    return f"{len(values)} {what} (e.g. {shown}{', ...' if len(values) > _EXAMPLES else ''})"


def _report(title: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return (
        f"{title} ({len(problems)} problems):\n{lines}\n"
        "A submission needs the header Id,Category, every sample_submission.csv Id exactly once and an "
        "integer competition category id per row: fix the predictions and assemble again."
    )


def _input_entry(name: str, path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise IwcError(f"manifest input {name!r}: {path} does not exist; pass the files the submission came from")
    return {"file": path.name, "sha256": sha256_file(path)}
