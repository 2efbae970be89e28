"""`iwc score`: a submission's accuracy as MLE-bench grades it, and per location when the test images are known.

MLE-bench (openai/mle-bench, `iwildcam-2020-fgvc7`) reads `Id,Category` from both files, requires the same Id
sets, and scores the fraction of Ids whose Category equals the answer's. `score(submission, answers)` returns
that accuracy; `per_location(scored, test_images)` the accuracy of each test location, worst first.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iwc.data.competition import read_sample_submission
from iwc.errors import IwcError


def scored(submission: Path, answers: Path) -> pd.DataFrame:
    """One row per Id (sorted): `Id`, `Category` (submitted), `answer`, `correct`; `IwcError` (one line naming
    the difference) unless both files hold `Id,Category` rows with exactly the same Ids."""
    sub, ans = read_sample_submission(submission), read_sample_submission(answers)
    missing = sorted(set(ans["Id"]) - set(sub["Id"]))
    extra = sorted(set(sub["Id"]) - set(ans["Id"]))
    if missing or extra:
        parts = ([f"lacks {len(missing)} Ids of the answers (e.g. {missing[0]!r})"] if missing else []) + (
            [f"has {len(extra)} Ids the answers do not (e.g. {extra[0]!r})"] if extra else [])
        raise IwcError(f"{submission} {' and '.join(parts)}: MLE-bench grades only a submission with exactly the "
                       f"Ids of {answers}")
    table = sub.merge(ans.rename(columns={"Category": "answer"}), on="Id", validate="one_to_one").sort_values("Id")
    return table.assign(correct=table["Category"] == table["answer"]).reset_index(drop=True)


def per_location(table: pd.DataFrame, test_images: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per location of scored rows (`scored`), from the test images' `id` and `location`: columns
    `location`, `images`, `accuracy`, worst first (ties by location). Ids without a test image are left out."""
    located = table.merge(test_images[["id", "location"]], left_on="Id", right_on="id", how="inner")
    groups = located.groupby("location")["correct"]
    out = pd.DataFrame({"images": groups.size(), "accuracy": groups.mean()}).reset_index()
    return out.sort_values(["accuracy", "location"], kind="stable").reset_index(drop=True)


def report(table: pd.DataFrame, locations: pd.DataFrame | None) -> str:
    """The lines `iwc score` prints: the accuracy, then (when known) one line per location, worst first."""
    lines = [f"accuracy {table['correct'].mean():.5f} ({int(table['correct'].sum())} of {len(table)} Ids correct; "
             "graded as MLE-bench does)"]
    if locations is not None:
        lines.append(f"per location ({len(locations)}, worst first): location, images, accuracy")
        lines += [f"  {int(r.location)}  {int(r.images)}  {r.accuracy:.4f}" for r in locations.itertuples()]
    return "\n".join(lines)
