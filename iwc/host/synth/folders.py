"""Where the synthetic competition's files go under its root: the folders as Kaggle's downloads name them."""

from __future__ import annotations

from iwc.layout import COMPETITION_SLUG, RESIZED_DATASET

COMPETITION = COMPETITION_SLUG  # folder names as the Kaggle downloads name them
RESIZED = RESIZED_DATASET.split("/")[1]
GROUND_TRUTH = "ground_truth"
PLANTED_JSON = "data_issues.json"  # in GROUND_TRUTH
