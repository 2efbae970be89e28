"""Paths the user names, checked and resolved on the host before a run starts (nothing is written here).

`check_apart(run_dir, submission_dir)`: the run folder and the submission folder never overlap (assembly
replaces the submission folder whole, so one inside the other would delete trained stages or other runs).
`resolve_weights(recipe, remote)`: each model's `weights_file` made absolute against the user's working folder
and checked to exist (kernels run in folders of their own, where a relative path means something else).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from iwc.errors import IwcError
from iwc.recipe import Recipe


def check_apart(run_dir: Path, submission_dir: Path) -> None:
    """`IwcError` when `run_dir` and `submission_dir` are the same folder or one lies inside the other, after
    resolving symlinks; in: the two folders as given (relative to the working folder, or absolute)."""
    run, out = Path(run_dir).resolve(), Path(submission_dir).resolve()
    if run == out or run in out.parents or out in run.parents:
        raise IwcError(f"the run folder {run_dir} and the submission folder {submission_dir} overlap ({run} and "
                       f"{out}): assembling the submission replaces its folder whole, which would delete the run's "
                       "stages or other runs; give folders apart (with `iwc reproduce`, a plain --run name)")


def resolve_weights(recipe: Recipe, remote: bool) -> Recipe:
    """`recipe` with every model's `weights_file` absolute. In: the recipe as loaded; `remote` True when the
    kernels run on Kaggle, where the file is a Kaggle path (`/kaggle/input/...`): not checked here, but a
    relative one is an error. Otherwise a relative path is taken from the current folder and the file must
    exist. A path that was already absolute keeps its text, so its model's stage key does not change."""
    models = {}
    for name, model in recipe.models.items():
        given = model.weights_file
        if not given or os.path.isabs(given):
            path = given
        elif remote:
            raise IwcError(f"models.{name}.weights_file = {given!r} is relative: on Kaggle give the file's absolute "
                           "path in the kernel (upload it as a dataset: /kaggle/input/<dataset>/...)")
        else:
            path = os.path.abspath(os.path.expanduser(given))
        if path and not remote and not os.path.isfile(path):
            shown = given if path == given else f"{given} ({path})"
            raise IwcError(f"models.{name}.weights_file = {shown}: no such file; give the path of a weights file "
                           "(`iwc weights save --out FILE` writes one)")
        models[name] = dataclasses.replace(model, weights_file=path)
    return dataclasses.replace(recipe, models=models)
