"""The one registry of what a stage is: `SPECS[name]` -> `StageSpec`.

The pipeline (cache keys, run order, inputs), the kernel generator (script entry, metadata) and the CLI
all read these specs; nothing else lists stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iwc.layout import RESIZED_DATASET


@dataclass(frozen=True)
class StageSpec:
    """One stage: the kernel that runs it, what it reads, and what it needs from upstream."""

    name: str
    title: str  # Kaggle kernel title; Kaggle derives the slug from it, so they stay in step
    sections: tuple[str, ...]  # recipe sections it reads: the only ones in its cache key
    upstream: tuple[str, ...] = ()  # stages whose outputs it reads (kernel_sources)
    datasets: tuple[str, ...] = ()  # dataset_sources (`owner/slug`) besides the competition
    reads: tuple[str, ...] = ()  # besides the train/test JSONs and the sample: "resized", "originals", "detections"
    gpu: bool = True

    @property
    def slug(self) -> str:
        return slugify(self.title)

    @property
    def code_file(self) -> str:
        return f"iwc_{self.name}.py"

    @property
    def entry(self) -> str:
        return f"iwc.stages.{self.name}:main"

    @property
    def model(self) -> str | None:
        """The recipe section of the model this stage trains, if any."""
        return self.name if self.name in ("full", "crop") else None


def slugify(title: str) -> str:
    """Kaggle's slug for an ASCII title: lower case, each run of other characters becomes one `-`."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


SPECS: dict[str, StageSpec] = {
    "full": StageSpec("full", "iwc full image model", sections=("full", "split"), datasets=(RESIZED_DATASET,),
                      reads=("resized",)),
    "crop": StageSpec("crop", "iwc crop model", sections=("crop", "crops", "split"),
                      reads=("originals", "detections")),
    "aggregate": StageSpec("aggregate", "iwc aggregate", sections=("blend", "sequences"),
                           upstream=("full", "crop"), gpu=False),
}
STAGES = tuple(SPECS)
