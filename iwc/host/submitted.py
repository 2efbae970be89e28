"""What a submission folder already sent to Kaggle: `<folder>/submitted.json`, so that an identical file is not
submitted twice (each one spends the competition's daily limit).

The record lives in the submission folder it describes (it travels with the folder; the pipeline carries it
over when it assembles the folder anew) and lists every submission made from it, oldest first:
`{"sha256", "ref", "status": accepted | scored | rejected, "public_score", "submitted_at", "message"}`.
A rejected submission does not count: the same file may be sent again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from iwc.errors import IwcError
from iwc.io import read_json_object, write_json

RECORD = "submitted.json"
COUNTED = ("accepted", "scored")  # Kaggle took these: sending the same bytes again is a duplicate


def read_record(folder: Path) -> list[dict[str, Any]]:
    """The submissions recorded in `folder` ([] when there is no record); a damaged record is an `IwcError`."""
    path = Path(folder) / RECORD
    if not path.exists():
        return []
    entries = read_json_object(path).get("submissions")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise IwcError(f"{path} is damaged (expected {{\"submissions\": [...]}}): fix it, or delete it to forget "
                       "what was submitted from this folder (an identical file may then be submitted again)")
    return entries


def refuse_duplicate(folder: Path, sha256: str) -> None:
    """Raise one `IwcError` line when a file with `sha256` was already submitted (and not rejected) from `folder`."""
    for entry in read_record(folder):
        if entry.get("sha256") == sha256 and entry.get("status") in COUNTED:
            score = f", public score {entry['public_score']}" if entry.get("public_score") else ""
            raise IwcError(f"{Path(folder) / 'submission.csv'} is identical (sha256 {sha256[:16]}) to submission "
                           f"{entry.get('ref')} made {entry.get('submitted_at')}{score} (see {Path(folder) / RECORD}): "
                           "not submitted again; pass --resubmit to send it anyway")


def record(folder: Path, sha256: str, ref: int, status: str, message: str = "", public_score: str = "") -> None:
    """Add submission `ref` to `folder`'s record, or update its status and score when it is there already."""
    entries = read_record(folder)
    found = next((e for e in entries if e.get("ref") == ref), None)
    if found is None:
        found = {"sha256": sha256, "ref": ref, "message": message,
                 "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        entries.append(found)
    found.update(status=status, public_score=public_score)
    write_json(Path(folder) / RECORD, {"submissions": entries})
