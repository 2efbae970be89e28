"""The data-issues record: what a stage skipped or repaired, image by image, so nothing vanishes unsaid.

In: `add(reason, image_id, detail)` calls as a stage meets bad data. Out: `data_issues.json` beside the
stage's outputs (every record, sorted), a count per reason for its log and its manifest, and a Markdown
section for a report. The aggregator merges the model stages' records (`<stage>.data_issues.json`) with
its own; the run's `data_issues.json` therefore lists every image some stage skipped or repaired.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from iwc.data import decode
from iwc.errors import IwcError
from iwc.io import read_json_object, write_json

ISSUES_JSON = "data_issues.json"
SHOWN_IDS = 3  # ids quoted per reason in a log line or a report

# reason -> what it means and what was done about it
REASONS = {
    "missing": "image file not found: left out of training, or (test) predicted from a blank image / without "
               "a crop",
    "unreadable": "image file does not decode (corrupt or truncated): handled as a missing one",
    "zero_byte": "image file is empty (0 bytes): handled as a missing one",
    "no_detector_entry": "image in the train/test JSON but not in the MegaDetector file (or MegaDetector failed "
                         "on it): no crop; the crop model does not see it",
    "box_clamped": "MegaDetector box a little outside the frame: clamped into it and kept",
    "box_dropped": "MegaDetector detection that cannot be a box (bad numbers, empty or far outside the frame): "
                   "dropped",
    "not_in_sample": "test image absent from sample_submission.csv: predicted, but not submitted",
    "sample_without_image": "sample_submission.csv Id with no test image: submitted as category 0 (empty)",
}


@dataclass(frozen=True, order=True)
class DataIssue:
    """One image skipped or repaired by one stage."""

    reason: str
    image_id: str
    stage: str
    detail: str


class DataIssues:
    """The records of one stage (or, merged, of a run). `stage` labels the records `add` makes."""

    def __init__(self, stage: str = "", records: Iterable[DataIssue] = ()) -> None:
        self.stage = stage
        self.records: list[DataIssue] = list(records)

    def add(self, reason: str, image_id: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown data-issue reason {reason!r}")
        self.records.append(DataIssue(reason, str(image_id), self.stage, detail))

    def extend(self, other: DataIssues) -> None:
        self.records.extend(other.records)

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, int]:
        """Reason -> number of records, for the reasons that occur, in `REASONS` order."""
        found = {r: 0 for r in REASONS}
        for rec in self.records:
            found[rec.reason] += 1
        return {r: n for r, n in found.items() if n}

    def ids(self) -> dict[str, list[str]]:
        """Reason -> the distinct image ids recorded with it, sorted."""
        out: dict[str, set[str]] = {}
        for rec in self.records:
            out.setdefault(rec.reason, set()).add(rec.image_id)
        return {r: sorted(out[r]) for r in REASONS if r in out}

    def summary(self, file: str = ISSUES_JSON) -> dict:
        """What a manifest holds: the count per reason and the name of the file with every record."""
        return {"counts": self.counts(), "file": file}

    def lines(self) -> list[str]:
        """One line per reason: count, description, the first few ids."""
        ids = self.ids()
        return [f"{reason}: {n} ({_first(ids[reason])}) - {REASONS[reason]}" for reason, n in self.counts().items()]

    def log(self, logger: logging.Logger, what: str) -> None:
        """Counts per reason as warnings (one line each), or one info line when there is nothing."""
        if not self.records:
            logger.info("%s: no data issues", what)
        for line in self.lines():
            logger.warning("%s: data issue %s", what, line)

    def markdown(self, file: str = ISSUES_JSON) -> str:
        """A report section: a table of counts per reason with example ids, pointing at `file`."""
        if not self.records:
            return f"No image was skipped or repaired (`{file}` is empty)."
        ids = self.ids()
        rows = [f"| {reason} | {n} | {_first(ids[reason])} | {REASONS[reason]} |"
                for reason, n in self.counts().items()]
        return ("| reason | records | images (first few) | meaning |\n|---|---:|---|---|\n" + "\n".join(rows)
                + f"\n\nEvery record (image id, reason, stage, detail) is in `{file}`.")

    def save(self, path: str | os.PathLike) -> None:
        """`path` as JSON: counts per reason, the reasons' meanings, and every record sorted."""
        write_json(path, {"counts": self.counts(), "reasons": {r: REASONS[r] for r in self.counts()},
                          "issues": [asdict(r) for r in sorted(self.records)]})

    @classmethod
    def load(cls, path: str | os.PathLike) -> DataIssues:
        """Records written by `save`; an absent or damaged file is an IwcError (a stage always writes one)."""
        data = read_json_object(path)
        try:
            records = [DataIssue(**{k: str(r[k]) for k in ("reason", "image_id", "stage", "detail")})
                       for r in data["issues"]]
        except (KeyError, TypeError) as e:
            raise IwcError(f"{path}: missing or damaged data-issues record ({type(e).__name__}: {e}); rerun the "
                           "stage that writes it") from e
        return cls("", records)


def issues_name(stage: str) -> str:
    """A model stage's record file, named so the aggregator finds it among its inputs."""
    return f"{stage}.{ISSUES_JSON}"


def file_problem(path: str | os.PathLike) -> str:
    """Why an image file that failed to decode failed: 'missing', 'zero_byte' or 'unreadable'."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return "missing"
    return "zero_byte" if size == 0 else "unreadable"


def record_unreadable(issues: DataIssues, image_ids: Iterable[str], paths: Iterable[str | os.PathLike],
                      consequence: str, base: str | os.PathLike | None = None) -> None:
    """Record each image whose file failed to decode under its `file_problem` reason.

    The detail names the file (relative to `base` when it lies below it), why an unreadable one does not
    decode (`decode.problem`, e.g. a truncated file or a decompression bomb) and `consequence`.
    """
    for image_id, path in zip(image_ids, paths, strict=True):
        shown = Path(path)
        if base is not None and shown.is_relative_to(base):
            shown = shown.relative_to(base)
        reason = file_problem(path)
        why = decode.problem(path) if reason == "unreadable" else None
        issues.add(reason, image_id, f"{shown.as_posix()}{f' ({why})' if why else ''}: {consequence}")


def _first(ids: list[str]) -> str:
    return ", ".join(ids[:SHOWN_IDS]) + (", ..." if len(ids) > SHOWN_IDS else "")
