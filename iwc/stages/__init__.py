"""The stages of a run, derived from its recipe: `stage_specs(recipe)` -> `{name: StageSpec}`.

Each model of `recipe.models` is one stage (its kernel trains it), in the recipe's order; the aggregator is
the last stage and reads every model's outputs. The pipeline (cache keys, run order, inputs), the kernel
generator (script entry, metadata) and the CLI all read these specs; nothing else lists stages.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from iwc.errors import IwcError
from iwc.layout import RESIZED_DATASET
from iwc.recipe import Recipe

AGGREGATE = "aggregate"
# What a model stage reads, by its model's input: besides the train/test JSONs and the sample submission. A run
# without the resized dataset reads the originals instead (`reading_originals`).
INPUT_READS = {"full": ("resized",), "crop": ("originals", "detections")}
INPUT_DATASETS = {"full": (RESIZED_DATASET,), "crop": ()}


@dataclass(frozen=True)
class StageSpec:
    """One stage: the kernel that runs it, what it reads, and what it needs from upstream."""

    name: str
    title: str  # Kaggle kernel title; Kaggle derives the slug from it, so they stay in step
    module: str  # the kernel's entry point: `main(recipe, name)` of this module
    sections: tuple[str, ...]  # recipe sections it reads (dotted paths): the only ones in its cache key
    upstream: tuple[str, ...] = ()  # stages whose outputs it reads (kernel_sources)
    datasets: tuple[str, ...] = ()  # dataset_sources (`owner/slug`) besides the competition
    reads: tuple[str, ...] = ()  # besides the train/test JSONs and the sample: "resized", "originals", "detections"
    gpu: bool = True
    model: str | None = None  # the name of the model it trains (`recipe.models`), if any

    @property
    def slug(self) -> str:
        return slugify(self.title)

    @property
    def code_file(self) -> str:
        return f"iwc_{self.name}.py"

    @property
    def entry(self) -> str:
        return f"{self.module}:main"


def reading_originals(specs: Mapping[str, StageSpec]) -> dict[str, StageSpec]:
    """`specs` for a run without the resized dataset: a stage that would read it reads the originals."""
    return {name: dataclasses.replace(spec, reads=tuple(dict.fromkeys(
        "originals" if kind == "resized" else kind for kind in spec.reads))) for name, spec in specs.items()}


def slugify(title: str) -> str:
    """Kaggle's slug for an ASCII title: lower case, each run of other characters becomes one `-`."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def stage_specs(recipe: Recipe) -> dict[str, StageSpec]:
    """The run's stages in run order: one per model (`iwc.stages.<input>` trains it), then the aggregator.

    `IwcError` when two stages would get the same Kaggle kernel slug."""
    specs = {}
    for name, model in recipe.models.items():
        kind = "image " if model.input == "full" else ""
        specs[name] = StageSpec(name, f"iwc {name.replace('_', ' ')} {kind}model", f"iwc.stages.{model.input}",
                                sections=(f"models.{name}", "split"), datasets=INPUT_DATASETS[model.input],
                                reads=INPUT_READS[model.input], model=name)
    specs[AGGREGATE] = StageSpec(AGGREGATE, "iwc aggregate", "iwc.stages.aggregate", sections=("blend", "sequences"),
                                 upstream=tuple(recipe.models), gpu=False)
    slugs: dict[str, str] = {}
    for spec in specs.values():
        if spec.slug in slugs:
            raise IwcError(f"recipe: models {slugs[spec.slug]!r} and {spec.name!r} would both be Kaggle kernel "
                           f"{spec.slug!r}: rename one")
        slugs[spec.slug] = spec.name
    return specs


def manifest_name(stage: str) -> str:
    """The marker file a finished stage leaves in its working dir; downstream discovery looks for it."""
    return f"{stage}.manifest.json"


SHEETS = ("show_batch", "top_losses")  # the image sheets every model stage leaves beside its manifest


def sheet_file(model: str, sheet: str) -> str:
    """The file name of one of a model stage's image sheets (`SHEETS`) in its working dir (named like every
    per-model file, `<kind>_<model>`: the aggregator's copies go into its `extras.zip`)."""
    return f"{sheet}_{model}.png"


def setup_logging(quiet: bool = False) -> None:
    """Timestamped INFO logs; `quiet` (a torchrun process other than rank 0, which would repeat rank 0's
    warnings): ERROR only. How progress bars behave in a log is set by the kernel's bootstrap (iwc.host.bundle)."""
    logging.basicConfig(level=logging.ERROR if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
