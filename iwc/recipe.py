"""The recipe: every knob of the method in one frozen object.

`REFERENCE` holds the exact numbers of the 10th-place write-up (SPEC.md section 2); `DEMO` runs the same
code paths sized for 2 CPU cores in minutes. `load_recipe` picks one by name or reads a TOML file, then
applies `section.key=value` overrides; `Recipe.to_dict` is what gets saved beside every output.

Every recipe is checked when it is built (`Recipe.from_dict`, which `load_recipe` and the kernels use):
types, enumerations (`Literal`), number ranges (`Annotated[..., Range(...)]`), cross-field rules and the
timm architecture names, so a bad value fails in one line before any stage starts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from iwc.errors import IwcError
from iwc.io import folder_name_problem, sha256_json


@dataclass(frozen=True)
class Range:
    """The allowed interval of a recipe number: `lo`/`hi` bounds (None = unbounded), each closed unless
    `lo_open`/`hi_open`. NaN and infinities are never inside."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        return (math.isfinite(value)
                and (self.lo is None or (value > self.lo if self.lo_open else value >= self.lo))
                and (self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)))

    def __str__(self) -> str:
        lo, hi = (f"{b:g}" if isinstance(b, float) else str(b) for b in (self.lo, self.hi))
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
UNIT = Range(0, 1, hi_open=True)  # [0, 1)
OPEN_UNIT = Range(0, 1, lo_open=True, hi_open=True)  # (0, 1)
MAX_GAP_S = 365 * 86400.0  # a year: pandas' nanosecond timedeltas overflow near 292 years


@dataclass(frozen=True)
class Augment:
    """Batch augmentation applied to every training image (p=1), fastai-v1 style magnitudes."""

    rotate_deg: Annotated[float, Range(0, 180)] = 20.0  # uniform in [-rotate_deg, rotate_deg]
    zoom_max: Annotated[float, Range(1, 4)] = 1.3  # uniform zoom in [1, zoom_max]
    warp: Annotated[float, UNIT] = 0.4  # perspective warp magnitude (fastai `max_warp`)
    brightness: Annotated[float, UNIT] = 0.4  # fastai `max_lighting`: brightness and contrast change
    contrast: Annotated[float, UNIT] = 0.4
    flip: bool = True  # random horizontal flip
    padding: Literal["reflection", "zeros", "border"] = "reflection"


@dataclass(frozen=True)
class Stage:
    """One one-cycle training stage."""

    epochs: Annotated[int, Range(1)]
    lr_lo: Annotated[float, POSITIVE]  # learning rate of the first layer group (fastai slice(lo, hi))
    lr_hi: Annotated[float, POSITIVE]  # learning rate of the head
    frozen: bool  # True: body frozen, only the head trains
    mixup: Annotated[float, NON_NEGATIVE] = 0.0  # mixup Beta(alpha, alpha); 0 = off
    pct_start: Annotated[float, OPEN_UNIT] = 0.3  # share of the cycle spent warming up
    weight_decay: Annotated[float, NON_NEGATIVE] = 1e-2


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: final = beta * plain + (1 - beta) * mean(augmented views)."""

    views: Annotated[int, NON_NEGATIVE] = 8  # augmented views per image; 0 = plain prediction only
    beta: Annotated[float, Range(0, 1)] = 0.4  # weight of the plain (un-augmented) prediction
    scale: Annotated[float, Range(1, 4)] = 1.35  # zoom of the augmented views


@dataclass(frozen=True)
class Crops:
    """Which MegaDetector boxes become crops, and how they are cut."""

    rule: Literal["best", "all"] = "best"  # "best": most confident animal box per image; "all": every one
    threshold: Annotated[float, UNIT] = 0.3  # keep boxes with conf > threshold
    margin: Annotated[float, NON_NEGATIVE] = 0.0  # grow each box by this fraction of its size on every side
    size: Annotated[int, POSITIVE] = 128  # crops are written size x size
    # True: crops of training frames labelled empty (category 0: false-positive boxes) train as the empty
    # "background" class, so the model learns to say "nothing here"; False: they are left out of training
    background: bool = True


@dataclass(frozen=True)
class Model:
    """One model of the ensemble: what it sees, its network, sizes and schedule. Each is one stage (kernel)."""

    input: Literal["full", "crop"] = "full"  # "full": the whole (resized) image; "crop": MegaDetector crops
    arch: str = "resnet50"
    pretrained: bool = True  # timm hub weights, or `weights_file` when set
    weights_file: str = ""  # local weights (e.g. an attached Kaggle dataset); "" = none
    image_size: Annotated[int, POSITIVE] = 128  # network input, pixels
    cache_size: Annotated[int, POSITIVE] = 144  # decoded uint8 cache (>= image_size); augmentation samples from it
    batch_size: Annotated[int, POSITIVE] = 256
    stages: tuple[Stage, ...] = ()
    augment: Augment = field(default_factory=Augment)
    tta: TTA = field(default_factory=TTA)
    label_smoothing: Annotated[float, UNIT] = 0.0
    crops: Crops = field(default_factory=Crops)  # which boxes become its crops, and how (input = "crop" only)
    device: Literal["cuda", "cpu", "auto"] = "auto"  # cuda: stop at once without a working GPU; auto: GPU if any


@dataclass(frozen=True)
class Blend:
    """Per image, p = sum(w_m * p_m) / sum(w_m) over the models with a row for it (a crop model has none for
    an image without a crop), aligned by category id. `weights`: model name -> weight, one for every model."""

    weights: dict[str, float] = field(default_factory=dict)
    # An image no crop model has a row for: "full" = the other (full-image) models alone, renormalized (the
    # reference); "empty" = predicted empty (3rd place: no confident box, nothing there)
    no_crop: Literal["full", "empty"] = "full"


@dataclass(frozen=True)
class Sequences:
    """How test images are grouped and voted."""

    method: Literal["time", "seq_id"] = "time"  # "time": location + datetime gap rule; "seq_id": the field
    gap_s: Annotated[float, Range(0, MAX_GAP_S, lo_open=True)] = 20.0  # a new sequence starts after a longer gap
    vote: Literal["majority", "mean_prob", "none"] = "majority"  # majority: reference, non-empty preferred


@dataclass(frozen=True)
class Split:
    """Validation split."""

    method: Literal["location", "category"] = "location"  # held-out locations | random share per category
    val_fraction: Annotated[float, OPEN_UNIT] = 0.3


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: Annotated[int, Range(0, 2**32 - 1)] = 42
    models: dict[str, Model] = field(default_factory=dict)  # name -> model, in run order; each is one stage
    blend: Blend = field(default_factory=Blend)
    sequences: Sequences = field(default_factory=Sequences)
    split: Split = field(default_factory=Split)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists): JSON-serializable, round-trips via `from_dict`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Build and check a recipe from `to_dict`'s form; `IwcError` (one line) on any bad value."""
        recipe = _build(cls, data, "")
        check_recipe(recipe)
        return recipe

    def section_hash(self, *paths: str) -> str:
        """Content hash of some sections, each a dotted path (`split`, `models.crop`), plus the seed: what a
        stage's cache key uses."""
        d = self.to_dict()
        return sha256_json({"seed": self.seed, **{p: functools.reduce(dict.__getitem__, p.split("."), d)
                                                  for p in paths}})


REFERENCE = Recipe(
    name="reference",
    models={
        "full": Model(
            device="cuda",
            batch_size=256,
            stages=(
                Stage(epochs=10, lr_lo=1e-2, lr_hi=1e-2, frozen=True, mixup=0.4),
                Stage(epochs=10, lr_lo=1e-5, lr_hi=1e-4, frozen=False, mixup=0.4),
            ),
        ),
        "crop": Model(
            input="crop",
            device="cuda",
            cache_size=128,  # the crops are cut at 128 px (crops.size): caching them larger adds nothing
            batch_size=128,
            stages=(
                Stage(epochs=12, lr_lo=3e-3, lr_hi=3e-3, frozen=True),
                Stage(epochs=12, lr_lo=5e-6, lr_hi=5e-4, frozen=False),
            ),
        ),
    },
    blend=Blend({"full": 0.3, "crop": 0.7}),
)

# Same code paths, sized for 2 CPU cores: a small random-init network, 64 px inputs, a short schedule.
# Random init means stage 1 (frozen body) teaches little; it is kept short so the path still runs.
_DEMO_MODEL = Model(
    arch="resnet18",
    pretrained=False,
    image_size=64,
    cache_size=72,
    batch_size=32,
    stages=(
        Stage(epochs=1, lr_lo=3e-3, lr_hi=3e-3, frozen=True),
        Stage(epochs=8, lr_lo=1e-3, lr_hi=3e-3, frozen=False),
    ),
    tta=TTA(views=2, beta=0.4, scale=1.2),
)
DEMO = Recipe(
    name="demo",
    models={
        # The full-image task is the harder one from random init (small animals, new backgrounds): more
        # epochs, and lighter mixup than the reference's 0.4 (which kept it near the empty rate here).
        "full": replace(_DEMO_MODEL, stages=(replace(_DEMO_MODEL.stages[0], mixup=0.2),
                                             replace(_DEMO_MODEL.stages[1], epochs=10, mixup=0.2))),
        "crop": replace(_DEMO_MODEL, input="crop", crops=Crops(size=72)),
    },
    blend=Blend({"full": 0.3, "crop": 0.7}),
    split=Split(method="location", val_fraction=0.25),
)

# 3rd place's ideas on this kit (README "The strong recipe"): crop networks on crops at conf > 0.6, cut at
# 224 px, crops of empty frames as the empty (background) class, two crop networks (EfficientNet-B0 and
# ResNet50, ImageNet weights) beside the reference full-image model; blend 0.3 / 0.35 / 0.35.
_STRONG_CROP = replace(REFERENCE.models["crop"], image_size=224, cache_size=224,
                       crops=Crops(threshold=0.6, size=224, background=True))
STRONG = Recipe(
    name="strong",
    models={"full": REFERENCE.models["full"],
            "crop": replace(_STRONG_CROP, arch="efficientnet_b0"),
            "crop2": replace(_STRONG_CROP, arch="resnet50")},
    blend=Blend({"full": 0.3, "crop": 0.35, "crop2": 0.35}),
)
# The same structure at the demo's sizes (random init, 64 px, CPU minutes).
_STRONG_DEMO_CROP = replace(DEMO.models["crop"], crops=Crops(threshold=0.6, size=72, background=True))
STRONG_DEMO = Recipe(
    name="strong-demo",
    models={"full": DEMO.models["full"],
            "crop": _STRONG_DEMO_CROP,
            "crop2": replace(_STRONG_DEMO_CROP, arch="resnet10t")},
    blend=Blend({"full": 0.3, "crop": 0.35, "crop2": 0.35}),
    split=DEMO.split,
)

RECIPES = {r.name: r for r in (REFERENCE, DEMO, STRONG, STRONG_DEMO)}
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
RESERVED_NAMES = frozenset({"aggregate", "baseline", "blend", "final", "truth", "location", "id"})  # stage, columns
SECTIONS = frozenset(f.name for f in fields(Recipe))


def load_recipe(source: str | Path = "reference", overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A named recipe, a TOML file, or a saved recipe JSON (complete); then `a.b=value` overrides (TOML values).

    A TOML file may set `base = "demo"` and override any subset of sections, e.g. `[models.full]` /
    `batch_size = 64`; a new model's table may start from another model with `like = "crop"`. Shorthands,
    in files and overrides: a model's name for `models.<name>` (`full.batch_size=64`), and
    `blend.<name>_weight` for `blend.weights.<name>`.
    """
    source = str(source)
    data = RECIPES[source].to_dict() if source in RECIPES else _read_file(Path(source))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise IwcError(f"override {item!r} must look like section.key=value, e.g. full.batch_size=64")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare word: treat it as a string
        _set_path(data, _expand(key.split("."), data), parsed, item)
    return Recipe.from_dict(data)


def _read_file(path: Path) -> dict[str, Any]:
    """A recipe file as `to_dict` gives a recipe, before checking: a saved recipe (`.json`, as every output
    holds it) as it is; a TOML file merged onto its `base`."""
    if not path.is_file():
        raise IwcError(f"recipe {str(path)!r} is neither a named recipe {sorted(RECIPES)} nor a file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (as some editors save) is not content
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:  # ValueError covers bad UTF-8 and bad JSON
        raise IwcError(f"recipe file {path}: cannot parse: {e}") from e
    if not isinstance(raw, dict):
        raise IwcError(f"recipe file {path}: must hold a table of recipe sections, not {type(raw).__name__}")
    if path.suffix == ".json":  # complete: merging it onto a base could only add models it does not name
        return {**raw, "name": path.stem}
    base = raw.pop("base", "reference")
    if not isinstance(base, str) or base not in RECIPES:
        raise IwcError(f"recipe file {path}: base = {base!r} must be the name of a recipe: one of {sorted(RECIPES)}")
    data = RECIPES[base].to_dict()
    models = raw.pop("models", {})
    if not isinstance(models, dict):
        raise IwcError(f"recipe file {path}: models must be a table of model tables, not {type(models).__name__}")
    for key in [k for k in raw if k not in SECTIONS and k in data["models"]]:  # [full] for [models.full]
        models = _merge({key: raw.pop(key)}, models)
    blend = raw.get("blend")
    if isinstance(blend, dict):
        for key in [k for k in blend if k.endswith("_weight")]:  # full_weight for weights.full
            blend.setdefault("weights", {})[key.removesuffix("_weight")] = blend.pop(key)
    data = _merge(data, {"name": path.stem, **raw})
    for name, table in models.items():
        if not isinstance(table, dict):
            raise IwcError(f"recipe file {path}: models.{name} must be a table, not {type(table).__name__}")
        like = table.pop("like", None)
        if like is not None and like not in data["models"]:
            raise IwcError(f"recipe file {path}: models.{name}.like = {like!r} must name a model of the recipe: "
                           f"one of {sorted(data['models'])}")
        start = data["models"][like] if like else data["models"].get(name) or _model_dict()
        data["models"][name] = _merge(copy.deepcopy(start), table)
    return data


def _model_dict() -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(Model())))


def _expand(keys: list[str], data: dict) -> list[str]:
    """An override's key path with the shorthands spelled out (`full.x` -> `models.full.x`,
    `blend.full_weight` -> `blend.weights.full`)."""
    if keys[0] not in SECTIONS and keys[0] in data.get("models", {}):
        return ["models", *keys]
    if keys[0] == "blend" and len(keys) == 2 and keys[1].endswith("_weight"):
        return ["blend", "weights", keys[1].removesuffix("_weight")]
    return keys


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_path(data: dict, keys: list[str], value: Any, item: str) -> None:
    node = data
    for k in keys[:-1]:
        if k.isdigit() and isinstance(node, list) and int(k) < len(node):
            node = node[int(k)]
        elif isinstance(node, dict) and k in node:
            node = node[k]
        else:
            raise IwcError(f"override {item!r}: no recipe section {k!r}")
    last = keys[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict) and (last in node or keys[:-1] == ["blend", "weights"]):
        node[last] = value
    else:
        raise IwcError(f"override {item!r}: unknown recipe key {last!r}")


def check_recipe(recipe: Recipe) -> None:
    """Raise one single-line `IwcError` listing every value of `recipe` outside its allowed range
    (field ranges, cross-field rules, model names, blend weights, timm architecture names); return None when
    the recipe is sound."""
    problems = _range_problems(recipe, "")
    if name_problem := folder_name_problem(recipe.name, "name"):
        problems.append(f"{name_problem} (it names runs/<name>/)")
    if not recipe.models:
        problems.append("models = {} must name at least one model")
    elif all(m.input != "full" for m in recipe.models.values()):
        problems.append("models: at least one model must have input = 'full' (it predicts images without a crop)")
    for name, model in recipe.models.items():
        if not MODEL_NAME.fullmatch(name) or name in RESERVED_NAMES:
            problems.append(f"models.{name} : a model name must be 1-32 lower-case letters, digits or _, starting "
                            f"with a letter, and none of {sorted(RESERVED_NAMES)} (it names a stage and a kernel)")
        problems += _model_problems(model, f"models.{name}")
    if recipe.blend.no_crop == "empty" and all(m.input != "crop" for m in recipe.models.values()):
        problems.append("blend.no_crop = 'empty' needs a model with input = 'crop' (else every image is empty)")
    weights = recipe.blend.weights
    if set(weights) != set(recipe.models):
        problems.append(f"blend.weights names {sorted(weights)} must name each model once: {sorted(recipe.models)}")
    bad = {k: w for k, w in weights.items() if not (isinstance(w, float) and math.isfinite(w) and w >= 0)}
    if bad:
        problems.append(f"blend.weights {bad} must be numbers >= 0")
    elif not sum(weights.values()) > 0:
        problems.append("blend.weights sum to 0: at least one weight must be > 0")
    if not problems:
        from iwc.stages import stage_specs  # the stages the models become: their kernel slugs must differ

        stage_specs(recipe)
    if problems:
        raise IwcError("recipe: " + "; ".join(problems))


def _model_problems(m: Model, where: str) -> list[str]:
    problems = []
    if m.cache_size < m.image_size:
        problems.append(f"{where}.cache_size = {m.cache_size} must be >= {where}.image_size ({m.image_size})")
    if not m.stages:
        problems.append(f"{where}.stages = [] must hold at least one stage")
    for i, s in enumerate(m.stages):
        if s.lr_lo > s.lr_hi:
            problems.append(f"{where}.stages[{i}].lr_lo = {s.lr_lo:g} must be <= lr_hi ({s.lr_hi:g})")
    if not _is_timm_model(m.arch):
        problems.append(f"{where}.arch = {m.arch!r} is not a timm architecture (see timm.list_models())")
    return problems


# The built-in recipes' networks (in the locked timm and every later release): no timm import to check them
_BUILT_IN_ARCHS = frozenset({"resnet18", "resnet50", "resnet10t", "efficientnet_b0"})


def _is_timm_model(arch: str) -> bool:
    if arch in _BUILT_IN_ARCHS:  # no need to import timm (and torch): seconds for every `iwc recipe`
        return True
    import timm

    return timm.is_model(arch)


def _range_problems(obj: Any, where: str) -> list[str]:
    """'path = value must be <range>' for every number of a (nested) recipe section outside its `Range`."""
    problems = []
    for f in fields(obj):
        value, path = getattr(obj, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += _range_problems(value, f"{path}.")
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                problems += _range_problems(item, f"{path}[{i}].")
        elif isinstance(value, dict):
            for key, item in value.items():
                problems += _range_problems(item, f"{path}.{key}.") if dataclasses.is_dataclass(item) else []
        for allowed in _metadata(type(obj), f.name):
            if isinstance(allowed, Range) and value not in allowed:
                problems.append(f"{path} = {value!r} must be {allowed}")
    return problems


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _metadata(cls: type, name: str) -> tuple[Any, ...]:
    hint = _hints(cls)[name]
    return get_args(hint)[1:] if get_origin(hint) is Annotated else ()


def _build(cls: type, data: Any, where: str) -> Any:
    """A `cls` from a plain table; `IwcError` naming the path of an unknown, missing or mistyped key."""
    if not isinstance(data, dict):
        raise IwcError(f"recipe: {where or 'the recipe'} must be a table, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = set(data) - set(known)
    if unknown:
        raise IwcError(f"recipe: unknown key(s) {sorted(unknown)} in {where or 'the recipe'}; known: {sorted(known)}")
    required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise IwcError(f"recipe: {where or 'the recipe'} is missing {', '.join(missing)} "
                       f"(required: {', '.join(required)})")
    hints = _hints(cls)
    return cls(**{name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()})


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """`value` checked against the type `hint` (a section, a tuple of sections, a Literal or a scalar)."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise IwcError(f"recipe: {where} = {value!r} must be a table")
        return {str(k): _coerce(get_args(hint)[1], v, f"{where}.{k}") for k, v in value.items()}
    if get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise IwcError(f"recipe: {where} = {value!r} must be a list of tables")
        return tuple(_build(get_args(hint)[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        if value not in choices or not isinstance(value, str):
            raise IwcError(f"recipe: {where} = {value!r} must be one of {', '.join(map(repr, choices))}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise IwcError(f"recipe: {where} = {value!r} must be {hint.__name__}")
    return value
