"""The submission: assemble predictions in the sample's order, validate, write CSV + manifest.

A submission has the header `Id,Category`, exactly the Ids of `sample_submission.csv` (once each, any
order), and an integer ORIGINAL category id per row. Validation reports every problem at once; writing
validates first, so a bad submission never replaces a good one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
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
    categories = pd.to_numeric(df["Category"]).astype(np.int64).to_numpy()
    return pd.Series(categories, index=pd.Index(df["Id"].astype(str), name="image_id"), name="category_id")


def read_csv_strings(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV with every field as a string (blank = ""), so nothing is coerced before it is checked."""
    path = Path(path)
    if not path.is_file():
        raise IwcError(f"{path} does not exist")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise IwcError(f"{path} is not a readable CSV: {e}") from e


def write_submission(
    df: pd.DataFrame,
    out_dir: str | os.PathLike,
    inputs: Mapping[str, str | os.PathLike],
    *,
    sample: pd.DataFrame,
    category_ids: Iterable[int],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Validate `df`, then write `out_dir/submission.csv` and `out_dir/manifest.json`; return the CSV path.

    The CSV has the header `Id,Category` and '\\n' line endings (same frame => same bytes). The manifest
    holds the CSV's sha256, row count and category histogram, the sha256 of each named `inputs` file,
    `code_version()`, and the keys of `extra`. Everything is checked and hashed before anything is
    written, and each file is written atomically: a failure leaves an existing submission untouched.
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
        "code": code_version(),
    }
    clash = sorted(set(manifest) & set(extra or {}))
    if clash:
        raise IwcError(f"manifest extra keys {clash} clash with built-in keys; rename them")
    manifest.update(extra or {})
    out_dir = Path(out_dir)
    write_text(out_dir / SUBMISSION_CSV, text)
    write_json(out_dir / MANIFEST_JSON, manifest)
    return out_dir / SUBMISSION_CSV


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
    problems = [
        _count(np.flatnonzero(blank.to_numpy()) + 1, "rows have a blank or NaN Category (1-based row numbers)"),
        _count(text[~integer].unique(), "distinct Category values are not integers"),
    ]
    if category_ids is not None:
        values = pd.to_numeric(text[integer])
        problems.append(_count(values[~values.isin(category_ids)].unique(), "distinct Category values are unknown ids"))
    return [p for p in problems if p]


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
