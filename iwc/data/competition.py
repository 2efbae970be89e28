"""Competition files -> typed pandas frames, checked field by field.

In: the competition folder (train annotations JSON, test information JSON, MegaDetector results JSON,
sample_submission.csv). Out: one row per image (or per detection, or per submission row) with fixed
columns and dtypes; category ids stay the ORIGINAL sparse ints. A file that breaks the schema raises one
`IwcError` naming the file, the record and the field of the first few problems; the MegaDetector file is
read tolerantly instead (boxes clamped or dropped row by row, each recorded in a `DataIssues`), as real
detector output needs.
`check_images` finds listed images that are missing on disk or fail to decode.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from iwc.data.decode import problem as decode_problem
from iwc.data.issues import DataIssues
from iwc.errors import IwcError
from iwc.io import NOT_A_NAME, NOT_IN_NAME, child_path

TRAIN_JSON = "iwildcam2020_train_annotations.json"
TEST_JSON = "iwildcam2020_test_information.json"
MD_JSON = "iwildcam2020_megadetector_results.json"
SAMPLE_CSV = "sample_submission.csv"

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
MAX_SHOWN = 5  # schema problems spelled out in one error; the rest are counted
# MegaDetector boxes (normalized): an edge up to CLAMP_TOLERANCE outside [0, 1] is clamped into the frame and
# recorded (real output holds boxes touching the edge, e.g. x + w = 1.004); further out it is no box. An edge
# less than ROUNDING outside is the 4-decimal rounding of x and w (each off by up to 5e-5): clipped unrecorded.
CLAMP_TOLERANCE = 0.05
ROUNDING = 2e-4
INT64 = np.iinfo(np.int64)
INT64_DIGITS = len(str(INT64.max))

GET_DATA = (
    "download the competition data (kaggle competitions download -c iwildcam-2020-fgvc7) "
    "or make a synthetic competition with `iwc demo-data`"
)

log = logging.getLogger(__name__)


# --- schema checking -------------------------------------------------------------------------------


class _Report:
    """Schema problems found in one file; `raise_if_any` raises them as one IwcError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shown: list[str] = []
        self.total = 0

    def add(self, where: str, text: str) -> None:
        self.total += 1
        if len(self.shown) < MAX_SHOWN:
            self.shown.append(f"{self.path}: {where}: {text}")

    def count(self, n: int) -> None:
        """Count `n` more problems without spelling them out."""
        self.total += n

    def raise_if_any(self) -> None:
        if not self.total:
            return
        lines = list(self.shown)
        if self.total > len(lines):
            lines.append(f"... and {self.total - len(lines):,} more problem(s)")
        lines.append(f"Fix or replace {self.path.name}: {GET_DATA}.")
        raise IwcError("\n".join(lines))


@dataclass(frozen=True)
class _Kind:
    """What a field must hold: its description, a vectorized validity test, and the conversion."""

    text: str
    valid: Callable[[pd.Series], np.ndarray]  # called on present (non-null) values only
    convert: Callable[[pd.Series], pd.Series]


def _per_value(test: Callable[[Any], bool], fast: Sequence[str] = (),
               fits: type | None = None) -> Callable[[pd.Series], np.ndarray]:
    """A validity test that first asks pandas for the whole column's type (C speed), then each value.

    `fits`: a dtype the whole column must also convert to for that fast answer (a JSON integer has no size
    limit: 2**70 is of pandas' type "integer" but no int64).
    """

    def valid(values: pd.Series) -> np.ndarray:
        if pd.api.types.infer_dtype(values, skipna=False) in fast and _converts(values, fits):
            return np.ones(len(values), dtype=bool)
        return np.fromiter((test(v) for v in values), dtype=bool, count=len(values))

    return valid


def _converts(values: pd.Series, dtype: type | None) -> bool:
    if dtype is None:
        return True
    try:
        values.astype(dtype)
    except OverflowError:
        return False
    return True


def _int_value(v: Any) -> bool:
    """An int64 (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool) and INT64.min <= v <= INT64.max


def _floats(values: Iterable[Any]) -> np.ndarray:
    """Numbers -> float64; an integer too large for a float64 (JSON allows 401 digits) becomes +-inf, as a
    JSON 1e400 does."""
    values = list(values)
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:
        return np.array([_float(v) for v in values], dtype=np.float64)


def _float(v: Any) -> Any:
    """`v` as a float (lists elementwise), +-inf where it overflows one."""
    if isinstance(v, list):
        return [_float(x) for x in v]
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _digits_value(v: Any) -> bool:
    return isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= INT64_DIGITS and int(v) <= INT64.max


_is_str = _per_value(lambda v: isinstance(v, str), fast=("string",))
_is_int = _per_value(_int_value, fast=("integer",), fits=np.int64)
_is_number = _per_value(lambda v: isinstance(v, int | float) and not isinstance(v, bool),
                        fast=("integer", "floating", "mixed-integer-float"))


def _is_unit(values: pd.Series) -> np.ndarray:
    number = _is_number(values)
    unit = np.zeros(len(values), dtype=bool)
    numbers = _floats(values[number])
    unit[number] = (numbers >= 0.0) & (numbers <= 1.0)
    return unit


def _is_box(values: pd.Series) -> np.ndarray:
    """Lists of 4 numbers (whether they make a box in the frame is `_check_boxes`' question)."""
    four = np.fromiter((isinstance(b, list) and len(b) == 4 for b in values), dtype=bool, count=len(values))
    coords = pd.Series(list(itertools.chain.from_iterable(values[four])), dtype=object)
    four[four] = _is_number(coords).reshape(-1, 4).all(axis=1)
    return four


def _is_category_number(values: pd.Series) -> np.ndarray:
    """1 or '1' (the competition file writes detection categories as strings), within int64."""
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        digits = values.str.fullmatch("[0-9]+").to_numpy(dtype=bool)
        width = values.str.len().to_numpy()
        at_most_max = (values <= str(INT64.max)).to_numpy(dtype=bool)  # same number of digits: text order
        return digits & ((width < INT64_DIGITS) | ((width == INT64_DIGITS) & at_most_max))
    return _per_value(lambda v: _int_value(v) or _digits_value(v), fast=("integer",), fits=np.int64)(values)


def _is_plain_name(values: pd.Series) -> np.ndarray:
    """Strings usable as a file name in a folder (`iwc.io.is_plain_name`), tested column-wide: one scan of all
    the text finds whether any value holds a separator; only then is each value asked."""
    text = _is_str(values)
    strings = values[text]
    plain = ~strings.isin(NOT_A_NAME).to_numpy()
    joined = "".join(strings)
    for char in NOT_IN_NAME:
        if char in joined:
            plain &= ~strings.str.contains(char, regex=False).to_numpy(dtype=bool)
    text[text] = plain
    return text


def _parse_datetime(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, format=DATETIME_FORMAT, errors="coerce")


def _is_datetime(values: pd.Series) -> np.ndarray:
    """Strings in DATETIME_FORMAT within the datetime64[ns] range."""
    text = _is_str(values)
    parsed = _parse_datetime(values.where(text))
    return text & parsed.between(pd.Timestamp.min, pd.Timestamp.max).to_numpy()


STR = _Kind("a string", _is_str, lambda s: s.astype(str))
ID = _Kind("a non-empty string", lambda s: _is_str(s) & (s != "").to_numpy(), lambda s: s.astype(str))
# Image ids and file names become file names (`<folder>/<id>.jpg`): data must never reach another folder.
NAME = _Kind("a plain file name (a string without '/', '\\' or NUL, not '', '.' or '..')", _is_plain_name,
             lambda s: s.astype(str))
INT = _Kind("an integer (64-bit)", _is_int, lambda s: s.astype(np.int64))
UNIT = _Kind("a number in [0, 1]", _is_unit, lambda s: s.astype(np.float64))
LIST = _Kind("a list", _per_value(lambda v: isinstance(v, list)), lambda s: s)
BOX = _Kind("[x, y, w, h] (4 numbers)", _is_box, lambda s: s)
CATEGORY_NUMBER = _Kind("an integer like 1 or '1' (64-bit)", _is_category_number,
                        lambda s: pd.to_numeric(s.astype(str)).astype(np.int64))
DATETIME = _Kind(repr(DATETIME_FORMAT), _is_datetime, lambda s: _parse_datetime(s).astype("datetime64[ns]"))

_REQUIRED = object()


class _Records:
    """Rows of one JSON list (or CSV) as an all-object frame; reports bad fields against their record.

    The frame's index labels are the rows' positions in the file; `where(label)` names a record in
    messages, e.g. "images[17] (id '8a3c')".
    """

    def __init__(self, report: _Report, frame: pd.DataFrame, where: Callable[[Hashable], str]) -> None:
        self.report, self.frame, self.where = report, frame, where

    def subset(self, mask: np.ndarray) -> _Records:
        return _Records(self.report, self.frame[mask], self.where)

    def flag(self, mask: pd.Series | np.ndarray, text: Callable[[Hashable], str]) -> None:
        """Report every row where `mask` holds (the first few spelled out) with `text(label)`."""
        labels = self.frame.index[np.asarray(mask, dtype=bool)]
        for label in labels[:MAX_SHOWN]:
            self.report.add(self.where(label), text(label))
        self.report.count(max(0, len(labels) - MAX_SHOWN))

    def field(self, name: str, kind: _Kind, default: Any = _REQUIRED) -> pd.Series:
        """Column `name` converted to `kind`; missing, null (JSON `null`: None, where an absent key is NaN) or
        wrong values are reported instead.

        After a reported problem the column comes back unconverted: raise before using it.
        """
        if name in self.frame.columns:
            values = self.frame[name]
        else:
            values = pd.Series(None, index=self.frame.index, dtype=object)
        missing = values.isna()
        if default is not _REQUIRED:
            values = values.where(~missing, default)
            missing = pd.Series(False, index=values.index)
        self.flag(missing, lambda r: f"field {name!r} is {'null' if values.at[r] is None else 'missing'}")
        bad = np.zeros(len(values), dtype=bool)
        bad[~missing.to_numpy()] = ~kind.valid(values[~missing])
        self.flag(bad, lambda r: f"field {name!r} = {_show(values.at[r])} is not {kind.text}")
        return values if missing.any() or bad.any() else kind.convert(values)

    def typed(self, kinds: dict[str, _Kind]) -> pd.DataFrame:
        return pd.DataFrame({name: self.field(name, kind) for name, kind in kinds.items()})

    def unique(self, values: pd.Series, name: str) -> None:
        """Report rows whose value of field `name` repeats an earlier row's."""
        dup = values.duplicated().to_numpy()
        if dup.any():
            first = pd.Series(values.index[~dup], index=values.to_numpy()[~dup])
            self.flag(dup, lambda r: f"field {name!r} repeats {self.where(first[values.at[r]])}")


def _show(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _load_json(path: Path) -> Any:
    _require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, RecursionError) as e:  # also a number of over 4,300 digits, or nesting too deep
        raise IwcError(f"{path}: not valid JSON ({e}). Replace the file: {GET_DATA}.") from e


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise IwcError(f"{path} does not exist: {GET_DATA}, and point iwc at that folder.")


def _json_records(report: _Report, data: Any, key: str, idents: Sequence[str] = ("id",)) -> _Records:
    """Top-level list `key` of a JSON file as `_Records`; a record is named by its first `idents` field."""
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        report.add("top level", f"field {key!r} {'is not a list' if items is not None else 'is missing'}")
        items = []

    def where(label: Hashable) -> str:
        item = items[label]
        for ident in idents:
            name = item.get(ident) if isinstance(item, dict) else None
            if isinstance(name, str | int):
                return f"{key}[{label}] ({ident} {name!r})"
        return f"{key}[{label}]"

    return _object_records(report, items, where)


def _object_records(report: _Report, items: list, where: Callable[[Hashable], str]) -> _Records:
    """`items` (JSON objects) as `_Records`; raises at once if any item is not an object."""
    objects = np.fromiter((isinstance(d, dict) for d in items), dtype=bool, count=len(items))
    rows = [d if ok else {} for d, ok in zip(items, objects, strict=True)]
    records = _Records(report, pd.DataFrame(rows, index=pd.RangeIndex(len(rows)), dtype=object), where)
    records.flag(~objects, lambda r: f"is {_show(items[r])}, not an object")
    report.raise_if_any()
    return records


# --- the four files --------------------------------------------------------------------------------

IMAGE_FIELDS = {"id": NAME, "file_name": NAME, "location": INT, "seq_id": STR, "seq_num_frames": INT,
                "frame_num": INT, "datetime": DATETIME, "width": INT, "height": INT}
ANNOTATION_FIELDS = {"image_id": NAME, "category_id": INT}  # annotation `count` is unreliable: ignored
DETECTION_FIELDS = {"category": CATEGORY_NUMBER, "conf": UNIT, "bbox": BOX}


def read_train(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train annotations JSON -> (images + `category_id`, categories), one row per image, file order.

    Each image needs exactly one category: annotations repeating the same category are merged, an image
    with none or with conflicting ones is a schema error.
    """
    path = Path(path)
    report = _Report(path)
    data = _load_json(path)
    image_records = _json_records(report, data, "images")
    ann_records = _json_records(report, data, "annotations")
    category_records = _json_records(report, data, "categories")
    annotations = ann_records.typed(ANNOTATION_FIELDS)
    images, categories = _images_and_categories(report, image_records, category_records)
    _require_rows(path, "images", images, "a model needs at least one training image")
    _require_rows(path, "annotations", annotations, "each training image needs one, giving its category_id")

    ann_records.flag(~annotations["image_id"].isin(images["id"]),
                     lambda r: f"field 'image_id' = {annotations.at[r, 'image_id']!r} names no image")
    ann_records.flag(~annotations["category_id"].isin(categories["id"]),
                     lambda r: f"field 'category_id' = {annotations.at[r, 'category_id']} is not a category id")
    labels = annotations.drop_duplicates(["image_id", "category_id"])
    conflicting = labels.loc[labels["image_id"].duplicated(), "image_id"]

    def conflict(r: Hashable) -> str:
        rows = annotations[annotations["image_id"] == images.at[r, "id"]]
        named = ", ".join(f"annotations[{a}]" for a in rows.index[:4])
        return f"{named} give conflicting 'category_id' values {sorted(set(rows['category_id'].tolist()))}"

    image_records.flag(images["id"].isin(conflicting), conflict)
    image_records.flag(~images["id"].isin(labels["image_id"]),
                       lambda r: f"field 'id' = {images.at[r, 'id']!r}: no annotation has this image_id")
    report.raise_if_any()
    images["category_id"] = images["id"].map(labels.set_index("image_id")["category_id"]).astype(np.int64)
    return images, categories


def read_test(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test information JSON -> (images, categories), one row per image, file order."""
    path = Path(path)
    report = _Report(path)
    data = _load_json(path)
    image_records = _json_records(report, data, "images")
    category_records = _json_records(report, data, "categories")
    images, categories = _images_and_categories(report, image_records, category_records)
    _require_rows(path, "images", images, "there is no test image to predict")
    return images, categories


def _require_rows(path: Path, key: str, rows: pd.DataFrame, why: str) -> None:
    """`IwcError` naming `path` and its list `key` when `rows` (what was read from that list) is empty."""
    if rows.empty:
        raise IwcError(f"{path}: '{key}' is an empty list, but {why}. Fix or replace {path.name}: {GET_DATA}.")


def _images_and_categories(report: _Report, image_records: _Records,
                           category_records: _Records) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed images and categories (id int64, name str, count int64, 0 where absent).

    Raises every problem reported so far, then any repeated image or category id.
    """
    images = image_records.typed(IMAGE_FIELDS)
    categories = pd.DataFrame({"id": category_records.field("id", INT),
                               "name": category_records.field("name", STR),
                               "count": category_records.field("count", INT, default=0)})
    report.raise_if_any()
    image_records.unique(images["id"], "id")
    category_records.unique(categories["id"], "id")
    report.raise_if_any()
    return images, categories


def read_megadetector(path: str | os.PathLike, issues: DataIssues | None = None,
                      expected: Iterable[str] | None = None) -> pd.DataFrame:
    """MegaDetector results JSON -> one row per usable detection.

    Columns: image_id (str), category (int64: 1 animal, 2 person, 3 vehicle), conf (float64), x, y, w, h
    (float64, normalized to [0, 1], top-left origin). Images are keyed by `id` (competition file) or `file`
    (MegaDetector batch format; image id = the file's stem). Images carrying a `failure` are skipped;
    their count is logged and kept in `frame.attrs["failures"]`.

    Tolerant of what real detector output holds (see `_check_boxes`): a box a little outside the frame is
    clamped into it (`box_clamped`), a detection that cannot be a box is dropped (`box_dropped`), each
    recorded in `issues` by image id; only those rows go, never the file. With `expected` (image ids), each
    one the file does not cover is recorded as `no_detector_entry`. The file is rejected (IwcError) only
    when its structure is broken: not JSON, `images` not a list of objects, an image without its id or
    `detections` list, an id (or file stem) that is not a plain file name, a repeated image id.
    """
    path = Path(path)
    issues = DataIssues() if issues is None else issues
    frame, failed, all_names, lists = _megadetector_images(path)
    names = all_names[~failed]
    counts = lists.map(len).to_numpy()
    owner = np.repeat(names.to_numpy(), counts)
    nth = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    items = list(itertools.chain.from_iterable(lists))
    problem = _detection_problems(items)
    usable = problem == ""
    rows = pd.DataFrame([items[j] for j in np.flatnonzero(usable)], columns=list(DETECTION_FIELDS), dtype=object)
    box = _floats(rows["bbox"]).reshape(-1, 4)
    box, box_problem, clamped = _check_boxes(box)
    problem[usable] = box_problem
    usable_rows = np.flatnonzero(usable)
    for j in np.flatnonzero(problem != ""):
        shown = f" bbox {_show(items[j]['bbox'])} " if usable[j] else ": "
        issues.add("box_dropped", owner[j], f"detections[{nth[j]}]{shown}{problem[j]}")
    for i in np.flatnonzero(clamped):
        j = usable_rows[i]
        issues.add("box_clamped", owner[j], f"detections[{nth[j]}] bbox {_show(items[j]['bbox'])} clamped to "
                                            f"{_show([round(float(v), 6) for v in box[i]])}")
    keep = box_problem == ""
    out = pd.DataFrame({"image_id": owner[usable][keep],
                        "category": CATEGORY_NUMBER.convert(rows["category"][keep]).to_numpy(np.int64),
                        "conf": _floats(rows["conf"][keep]),
                        "x": box[keep, 0], "y": box[keep, 1], "w": box[keep, 2], "h": box[keep, 3]})
    out["image_id"] = out["image_id"].astype(str)
    out.attrs["failures"] = int(failed.sum())
    if failed.any():
        log.warning("%s: skipped %d image(s) that MegaDetector failed on", path, failed.sum())
    if clamped.any() or (problem != "").any():
        log.warning("%s: clamped %d box(es) a little outside the frame, dropped %d detection(s) that are no box",
                    path, clamped.sum(), (problem != "").sum())
    if expected is not None:
        failures = dict(zip(all_names[failed], frame.loc[failed, "failure"], strict=True)) if failed.any() else {}
        _record_uncovered(issues, expected, set(names), failures)
    return out


def check_megadetector(path: str | os.PathLike) -> None:
    """What makes `read_megadetector` reject the file (IwcError), without reading its boxes: the host's check
    before any stage runs. The boxes' row-by-row repairs (data issues, never an error) are the crop stage's."""
    _megadetector_images(Path(path))


def _megadetector_images(path: Path) -> tuple[pd.DataFrame, np.ndarray, pd.Series, pd.Series]:
    """The MegaDetector file's images, checked as a structure: (one row per image, which carry a `failure`,
    each image's id, the `detections` lists of those without one); IwcError when the structure is broken."""
    report = _Report(path)
    data = _load_json(path)
    all_images = _json_records(report, data, "images", idents=("id", "file"))
    frame = all_images.frame
    key = "id" if "id" in frame.columns or "file" not in frame.columns else "file"
    failed = frame["failure"].notna().to_numpy() if "failure" in frame.columns else np.zeros(len(frame), bool)
    all_names = all_images.field(key, NAME if key == "id" else ID)
    images = all_images.subset(~failed)
    lists = images.field("detections", LIST)
    report.raise_if_any()
    if key == "file":  # a path such as 'train/<id>.jpg': the id is the stem
        stems = all_names.str.extract(r"([^/\\]+?)(?:\.[^./\\]*)?$")[0].fillna("")
        all_images.flag(~_is_plain_name(stems), lambda r: f"field 'file' = {_show(frame.at[r, 'file'])}: its stem "
                                                          f"{_show(stems.at[r])} (the image id) is not {NAME.text}")
        report.raise_if_any()
        all_names = stems.astype(str)
    images.unique(all_names[~failed], "id" if key == "id" else "file stem")
    report.raise_if_any()
    return frame, failed, all_names, lists


def _detection_problems(items: list) -> np.ndarray:
    """Why each detection cannot be used ('' = it can): not an object, or a field missing or of the wrong kind."""
    problem = np.full(len(items), "", dtype=object)
    objects = np.fromiter((isinstance(d, dict) for d in items), dtype=bool, count=len(items))
    for j in np.flatnonzero(~objects):
        problem[j] = f"is {_show(items[j])}, not an object"
    for name, kind in DETECTION_FIELDS.items():
        present = objects & np.fromiter((isinstance(d, dict) and name in d for d in items), bool, len(items))
        for j in np.flatnonzero(objects & ~present & (problem == "")):
            problem[j] = f"field {name!r} is missing"
        values = pd.Series([items[j][name] for j in np.flatnonzero(present)], dtype=object)
        bad = np.flatnonzero(present)[~kind.valid(values)] if len(values) else np.zeros(0, np.int64)
        for j in bad[problem[bad] == ""]:
            problem[j] = f"field {name!r} = {_show(items[j][name])} is not {kind.text}"
    return problem


def _check_boxes(box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 4) [x, y, w, h] -> (boxes clamped into the frame, why each cannot be a box ('' = it can), clamped?).

    An edge less than `ROUNDING` outside [0, 1] is the file's rounding: clipped, not counted as a repair.
    An edge at most `CLAMP_TOLERANCE` outside is clamped (recorded); further out, or a box not finite, or
    with no width or height left after clamping, cannot be a box.
    """
    x0, y0 = box[:, 0], box[:, 1]
    edges = np.stack([x0, y0, x0 + box[:, 2], y0 + box[:, 3]], axis=1)
    finite = np.isfinite(edges).all(axis=1)
    edges = np.where(finite[:, None], edges, 0.5)
    outside = np.maximum(-edges, edges - 1).max(axis=1)
    inside = np.clip(edges, 0.0, 1.0)
    size = inside[:, 2:] - inside[:, :2]
    problem = np.full(len(box), "", dtype=object)
    problem[(size <= 0).any(axis=1)] = "has no width or height inside the frame"
    problem[outside > CLAMP_TOLERANCE] = f"lies more than {CLAMP_TOLERANCE} outside the frame"
    problem[~finite] = "has a coordinate that is not a finite number"
    clamped = (outside > ROUNDING) & (problem == "")
    repaired = np.concatenate([inside[:, :2], size], axis=1)
    return np.where((outside > 0)[:, None], repaired, box), problem, clamped  # boxes in the frame stay exact


def _record_uncovered(issues: DataIssues, expected: Iterable[str], covered: set[str],
                      failures: dict[str, Any]) -> None:
    """Record each `expected` image id the MegaDetector file does not cover (or MegaDetector failed on)."""
    for image_id in expected:
        if image_id in covered:
            continue
        failure = failures.get(image_id)
        issues.add("no_detector_entry", image_id, f"MegaDetector failed on it: {_show(failure)}" if failure is not None
                   else f"not in {MD_JSON}")


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame:
    """sample_submission.csv -> DataFrame(Id: str, Category: int64), file order."""
    path = Path(path)
    _require_file(path)
    report = _Report(path)
    try:
        raw = pd.read_csv(path, dtype=object, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise IwcError(f"{path}: not a readable CSV ({e}). Replace the file: {GET_DATA}.") from e
    if list(raw.columns) != ["Id", "Category"]:
        report.add("header", f"is {','.join(map(str, raw.columns))!r}, expected 'Id,Category'")
        report.raise_if_any()
    records = _Records(report, raw, lambda r: f"line {int(r) + 2} (Id {raw.at[r, 'Id']!r})")
    sample = records.typed({"Id": ID, "Category": CATEGORY_NUMBER})
    records.unique(sample["Id"], "Id")
    report.raise_if_any()
    return sample


# --- images on disk --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageCheck:
    """Result of `check_images`: the usable rows, and the ids of images missing or undecodable."""

    ok: pd.DataFrame
    missing: list[str]
    corrupt: list[str]

    def summary(self) -> str:
        total = len(self.ok) + len(self.missing) + len(self.corrupt)
        line = (f"{total:,} images checked: {len(self.ok):,} ok, {len(self.missing):,} missing, "
                f"{len(self.corrupt):,} corrupt")
        bad = self.missing + self.corrupt
        if bad:
            line += f" (excluded: {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
        return line


def check_images(images: pd.DataFrame, image_dir: str | os.PathLike, decode: bool = True,
                 progress: bool = True, workers: int | None = None) -> ImageCheck:
    """Find images of `images` (id, file_name) that are missing under `image_dir` or fail to decode.

    Decoding is `decode.problem` (a reduced JPEG decode that still reads every byte, so truncated files
    are caught). A `file_name` that is not a plain file name is an IwcError. Files are checked on `workers`
    threads (PIL decodes without the GIL).
    """
    named = zip(images["id"], images["file_name"], strict=True)
    paths = [child_path(image_dir, f, f"file_name of image {i!r}") for i, f in named]
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = [paths[i:i + 256] for i in range(0, len(paths), 256)]
    status: list[str] = []
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(paths), desc="checking images", unit="img", disable=not progress) as bar:
        for done in pool.map(lambda chunk: [_image_status(p, decode) for p in chunk], chunks):
            status.extend(done)
            bar.update(len(done))
    status_arr = np.array(status, dtype=object)
    ids = images["id"].to_numpy()
    result = ImageCheck(ok=images[status_arr == "ok"], missing=ids[status_arr == "missing"].tolist(),
                        corrupt=ids[status_arr == "corrupt"].tolist())
    if result.missing or result.corrupt:
        log.warning("%s: %s", image_dir, result.summary())
    return result


def _image_status(path: Path, decode: bool) -> str:
    if not path.is_file():
        return "missing"
    return "corrupt" if decode and decode_problem(path) is not None else "ok"


# --- the whole folder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Competition:
    """The competition files of one folder, as typed frames (see the readers above).

    `detections` is read only when asked for (`load(..., detections=True)`): a stage that does not use the
    boxes neither reads nor depends on the MegaDetector file. `issues` holds what reading repaired or skipped.
    """

    root: Path
    train: pd.DataFrame  # images + category_id
    test: pd.DataFrame  # images
    categories: pd.DataFrame  # from the train file
    sample: pd.DataFrame
    detections: pd.DataFrame | None = None  # None unless loaded with detections=True
    issues: DataIssues = field(default_factory=DataIssues)

    @property
    def category_names(self) -> dict[int, str]:
        """Category id -> name, as the train file lists them."""
        return dict(zip(self.categories["id"].tolist(), self.categories["name"].tolist(), strict=True))

    @classmethod
    def load(cls, root: str | os.PathLike, detections: bool = False, issues: DataIssues | None = None) -> Competition:
        """Read `root`/{TRAIN_JSON, TEST_JSON, SAMPLE_CSV} and, with `detections`, MD_JSON; IwcError if one is
        absent. Box repairs and train/test images the MegaDetector file lacks are recorded in `issues`."""
        root = Path(root)
        names = (TRAIN_JSON, TEST_JSON, SAMPLE_CSV, *((MD_JSON,) if detections else ()))
        missing = [name for name in names if not (root / name).is_file()]
        if missing:
            raise IwcError(f"competition folder {root} lacks {', '.join(missing)}: {GET_DATA}, "
                           "and pass the folder that holds these files.")
        issues = DataIssues() if issues is None else issues
        train, categories = read_train(root / TRAIN_JSON)
        test, _ = read_test(root / TEST_JSON)
        boxes = read_megadetector(root / MD_JSON, issues, expected=[*train["id"], *test["id"]]) if detections else None
        return cls(root=root, train=train, test=test, categories=categories,
                   sample=read_sample_submission(root / SAMPLE_CSV), detections=boxes, issues=issues)
