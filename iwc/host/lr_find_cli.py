"""`iwc lr-find --model NAME [--data DIR] [--batches N]`: an lr range test of one model of a recipe, here.

Reads the competition under `--data` as the model's stage would (its rows, `iwc.stages.<input>.rows`, its cache
and crops in `--out`/scratch), builds the model as its stage does, and runs `iwc.train.lr_find.lr_range_test` on
its training rows. Writes `lr_find_<model>.png` and `lr_find_<model>.json` to `--out` (default
`lr_find/<recipe>/`) and prints the suggestion with the `--set` that applies it.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import numpy as np

from iwc.errors import IwcError

DATA = "data/kaggle"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments, besides the recipe's (also what `invoke lr-find` forwards)."""
    p.add_argument("--model", required=True, help="the recipe's model to test (e.g. full, crop)")
    p.add_argument("--data", default=DATA, help=f"folder holding the competition data (default {DATA}), e.g. "
                                                 "data/demo/medium-seed0 after `iwc reproduce --demo`")
    p.add_argument("--batches", type=int, default=200, help="batches to train, the rate growing each (default 200)")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--out", help="output folder (default lr_find/<recipe>/)")


def lr_find(args: argparse.Namespace) -> None:
    """Run the range test; write the plot and the figures; print the suggestion."""
    import torch

    from iwc import layout
    from iwc.data.cache import build_cache
    from iwc.data.categories import CategoryMap
    from iwc.data.issues import DataIssues
    from iwc.host.userpaths import resolve_weights
    from iwc.io import write_json
    from iwc.recipe import load_recipe
    from iwc.stages import stage_specs
    from iwc.stages.common import Rows
    from iwc.train.device import check_device
    from iwc.train.lr_find import lr_range_test, plot_lr_find
    from iwc.train.model import check_weights_source, create_model

    recipe = resolve_weights(load_recipe(args.recipe or "demo", args.set), remote=False)
    if args.model not in recipe.models:
        raise IwcError(f"--model {args.model!r} is not a model of recipe {recipe.name!r}: choose one of "
                       f"{', '.join(recipe.models)}")
    if not Path(args.data).is_dir():
        raise IwcError(f"--data {args.data}: no such folder; give the folder that holds the competition data "
                       "(or run `iwc reproduce --demo` first and pass data/demo/medium-seed0)")
    m = recipe.models[args.model]
    out = Path(args.out or Path("lr_find") / recipe.name)
    os.environ[layout.INPUT_ENV] = str(Path(args.data).resolve())
    os.environ.setdefault(layout.SCRATCH_ENV, str((out / "scratch").resolve()))
    device = check_device(m, args.model)
    check_weights_source(m)
    spec = stage_specs(recipe)[args.model]
    _, train, _ = importlib.import_module(spec.module).rows(recipe, args.model, DataIssues(args.model))
    cache = build_cache(train["path"].tolist(), train["row_id"].tolist(), m.cache_size,
                        layout.scratch_dir() / args.model / "train")
    fit_rows = np.flatnonzero(~train["is_val"].to_numpy(bool) & ~train["row_id"].isin(cache.failed).to_numpy())
    if not len(fit_rows):
        raise IwcError(f"lr-find: model {args.model} has no readable training rows in {args.data}")
    labels = train["category_id"].to_numpy()[fit_rows]
    categories = CategoryMap.from_labels(labels)
    torch.manual_seed(recipe.seed)
    model = create_model(m, len(categories))
    result = lr_range_test(model, Rows(cache.images, fit_rows), categories.to_index(labels), m, recipe.seed,
                           device, args.batches, args.start, args.end)
    plot = out / f"lr_find_{args.model}.png"
    plot_lr_find(result, plot, f"lr range test: {recipe.name} / {args.model} ({m.arch}, {len(result.lrs)} batches "
                               f"of {m.batch_size}, stage 1 {'frozen' if m.stages[0].frozen else 'unfrozen'})")
    write_json(out / f"lr_find_{args.model}.json", {"model": args.model, "recipe": recipe.name, **result.to_dict()})
    print(f"{len(result.lrs)} batches; lowest smoothed loss {min(result.smoothed):.4f} at lr {result.min_loss_lr:.2e}")
    print(f"suggested lr (steepest descent): {result.suggestion:.2e}; try it: "
          f"--set {args.model}.stages.0.lr_hi={result.suggestion:.2g}")
    print(f"plot: {plot}")
