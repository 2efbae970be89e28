"""`iwc ...` command line: thin wrappers that parse arguments and call the package.

Every command exits 0 on success; an `IwcError` is printed as one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from iwc.errors import IwcError

DEMO_DATA = Path("data/demo")
CATEGORIES_HELP = "competition folder or JSON with the category list (default: the sample's folder)"


def _demo_data(args: argparse.Namespace) -> None:
    from iwc.host.demo import write_demo

    info = write_demo(Path(args.out), seed=args.seed, scale=args.scale, progress=not args.quiet)
    print(info.summary())


def _validate(args: argparse.Namespace) -> None:
    from iwc.submission import validate_file

    _require_file(args.sample, "--sample")
    problems = validate_file(Path(args.submission), Path(args.sample), _category_ids(args.categories, args.sample))
    if problems:
        raise IwcError(f"{args.submission} is NOT a valid submission:\n  - " + "\n  - ".join(problems))
    print(f"{args.submission}: valid ({_count_rows(Path(args.submission))} rows)")


def _assemble(args: argparse.Namespace) -> None:
    from iwc.data.competition import read_sample_submission
    from iwc.submission import assemble, read_predictions, write_submission

    _require_file(args.sample, "--sample")
    sample = read_sample_submission(Path(args.sample))
    df = assemble(sample, read_predictions(Path(args.predictions)))
    path = write_submission(df, Path(args.out), {"predictions": args.predictions, "sample": args.sample},
                            sample=sample, category_ids=_category_ids(args.categories, args.sample))
    print(f"wrote {path} ({len(df)} rows)")


def _stage(args: argparse.Namespace) -> None:
    import importlib
    import os

    from iwc.layout import INPUT_ENV, WORKING_ENV
    from iwc.recipe import load_recipe

    if args.input_root:
        os.environ[INPUT_ENV] = str(Path(args.input_root).resolve())
    if args.working_dir:
        os.environ[WORKING_ENV] = str(Path(args.working_dir).resolve())
    recipe = load_recipe(args.recipe, args.set)
    importlib.import_module(f"iwc.stages.{args.name}").main(recipe)


def _reproduce(args: argparse.Namespace) -> None:
    from iwc.host.backends import get_backend
    from iwc.host.demo import demo_root, write_demo
    from iwc.host.pipeline import reproduce
    from iwc.recipe import load_recipe

    overrides = [*args.set, *([f"seed={args.seed}"] if args.seed is not None else [])]
    recipe = load_recipe(args.recipe or ("demo" if args.demo else "reference"), overrides)
    backend = get_backend(args.backend)
    if args.demo:
        root = Path(args.data) if args.data else demo_root(DEMO_DATA, args.data_seed, args.scale)
        if not (root / "ground_truth").is_dir():
            print(write_demo(root, seed=args.data_seed, scale=args.scale).summary())
        else:
            print(f"synthetic competition (seed {args.data_seed}, {args.scale}): reusing {root}")
    else:
        root = Path(args.data or "data/kaggle")
    truth = root / "ground_truth" / "test_labels.csv"
    name = args.run or recipe.name
    result = reproduce(root, recipe, Path("runs") / name, Path("submissions") / name,
                       truth=truth if truth.is_file() else None, force=args.force, backend=backend)
    ran, skipped = ", ".join(result.ran) or "none", ", ".join(result.skipped) or "none"
    print(f"\nstages run: {ran}; skipped (unchanged): {skipped}")
    print(result.table)
    print(f"\nsubmission: {result.submission_dir / 'submission.csv'} (validated); report: "
          f"{result.submission_dir / 'report.md'}")


def _recipe(args: argparse.Namespace) -> None:
    from iwc.recipe import load_recipe

    print(json.dumps(load_recipe(args.recipe, args.set).to_dict(), indent=2, sort_keys=True))


def _category_ids(source: str | None, sample: str) -> list[int]:
    """Category ids from a competition folder, a train/test JSON or a categories JSON (default: the
    competition folder the sample submission sits in)."""
    from iwc.data.competition import TRAIN_JSON

    path = Path(source) if source else Path(sample).parent
    if path.is_dir():
        path = path / TRAIN_JSON
    if not path.is_file():
        raise IwcError(f"no category list at {path}: pass --categories with the competition folder or a JSON "
                       "holding 'categories' or 'category_ids'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "category_ids" in data:
            return [int(c) for c in data["category_ids"]]
        return [int(c["id"]) for c in data["categories"]]
    except (ValueError, KeyError, TypeError) as e:
        raise IwcError(f"{path} has no category list ({type(e).__name__}: {e}): expected a JSON with "
                       "'categories' ([{\"id\": ...}]) or 'category_ids'") from e


def _require_file(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise IwcError(f"{what} {path}: no such file")


def _count_rows(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f) - 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iwc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("demo-data", _demo_data, "write the synthetic competition (exact real formats) to OUT")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", choices=["small", "medium"], default="medium")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("validate", _validate, "check a submission.csv against the sample submission; report every problem")
    p.add_argument("submission")
    p.add_argument("--sample", required=True, help="sample_submission.csv")
    p.add_argument("--categories", help=CATEGORIES_HELP)

    p = add("assemble", _assemble, "turn an Id,Category predictions CSV into a validated submission folder")
    p.add_argument("predictions")
    p.add_argument("--sample", required=True, help="sample_submission.csv")
    p.add_argument("--categories", help=CATEGORIES_HELP)
    p.add_argument("--out", required=True, help="folder for submission.csv + manifest.json")

    p = add("stage", _stage, "run one stage (full | crop | aggregate) in this process, without a kernel")
    p.add_argument("name", choices=["full", "crop", "aggregate"])
    p.add_argument("--input-root", help="Kaggle-shaped input folder (default /kaggle/input)")
    p.add_argument("--working-dir", help="output folder (default /kaggle/working)")
    _add_recipe_args(p)

    p = add("reproduce", _reproduce, "generate the kernels, run full + crop, then aggregate; assemble and "
                                     "validate submissions/<run>/")
    p.add_argument("--demo", action="store_true", help="the built-in synthetic competition and the demo recipe")
    p.add_argument("--data", help="folder holding the competition data (default data/kaggle; with --demo "
                                  "data/demo/<scale>-seed<N>)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic competition (with --demo)")
    p.add_argument("--scale", choices=["small", "medium"], default="medium", help="size of the synthetic competition")
    p.add_argument("--seed", type=int, help="the recipe's seed (training, split, TTA)")
    p.add_argument("--run", help="run name: runs/<run>/ and submissions/<run>/ (default: the recipe name)")
    p.add_argument("--force", action="store_true", help="rerun every stage even if its inputs are unchanged")
    p.add_argument("--backend", default="local", help="where the kernels run: local")
    _add_recipe_args(p, default="reference, or demo with --demo")

    _add_recipe_args(add("recipe", _recipe, "print a resolved recipe as JSON"))
    return parser


def _add_recipe_args(p: argparse.ArgumentParser, default: str = "reference") -> None:
    p.add_argument("--recipe", default=None if default != "reference" else default,
                   help=f"recipe name (reference | demo) or TOML file (default: {default})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. full.batch_size=64 (repeatable)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except IwcError as e:
        print(f"iwc: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
