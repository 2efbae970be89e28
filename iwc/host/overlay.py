"""Recipe overlays: a TOML file `base = "<named recipe>"` plus the values where a recipe differs from it.

`write_overlay(path, recipe)` writes the smallest such file that `iwc.recipe.load_recipe` reads back as
exactly `recipe` (checked before the file is put in place); `iwc tune --write` saves its best settings so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iwc.errors import IwcError
from iwc.io import write_text
from iwc.recipe import RECIPES, Recipe, _model_dict, load_recipe


def write_overlay(path: Path, recipe: Recipe) -> str:
    """Write `recipe` as an overlay of the named recipe closest to it (its own name when built in); returns
    the base's name. `IwcError` when no named recipe has a subset of its models, or the file would not load
    back as `recipe`."""
    path = Path(path)
    if path.suffix != ".toml":
        raise IwcError(f"--write {path}: an overlay is a .toml file (e.g. best.toml)")
    want = recipe.to_dict()
    bases = [n for n in (recipe.name, *RECIPES) if n in RECIPES and set(RECIPES[n].models) <= set(recipe.models)]
    if not bases:
        raise IwcError(f"recipe {recipe.name!r}: no named recipe {sorted(RECIPES)} has a subset of its models "
                       f"{sorted(recipe.models)}: an overlay cannot be written")
    base = RECIPES[bases[0]].to_dict()
    lines = [f"base = {_value(bases[0])}", f"name = {_value(recipe.name)}"]
    for key in ("seed", "blend", "sequences", "split"):
        lines += _diff([key], base[key], want[key])
    for name, model in want["models"].items():
        lines += _diff(["models", name], base["models"].get(name, _model_dict()), model)
    text = "\n".join(lines) + "\n"
    tmp = path.with_name(f".{path.name}.check.toml")
    try:
        write_text(tmp, text)
        if load_recipe(tmp).to_dict() != want:
            raise IwcError(f"--write {path}: the overlay does not read back as the recipe (a bug: please report it)")
    finally:
        tmp.unlink(missing_ok=True)
    write_text(path, text)
    return bases[0]


def _diff(keys: list[str], old: Any, new: Any) -> list[str]:
    """Dotted `key = value` lines for every leaf of `new` that `old` lacks or holds differently."""
    if isinstance(new, dict) and isinstance(old, dict):
        return [line for k, v in new.items() for line in _diff([*keys, k], old.get(k), v)]
    if old == new and type(old) is type(new):
        return []
    return [f"{'.'.join(_value(k) if not k.replace('_', '').isalnum() else k for k in keys)} = {_value(new)}"]


def _value(v: Any) -> str:
    """A TOML value: strings (JSON escapes are TOML's), booleans, numbers, arrays and inline tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(map(_value, v)) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_value(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise IwcError(f"overlay: cannot write {v!r} as TOML")
