"""`iwc ...` command line: thin wrappers that parse arguments and call the package.

Exit codes (the same for `invoke` tasks and the kernels): 0 success; 2 a failure the user can fix (an
`IwcError` or a usage error: one `iwc: error:` line, no traceback); 130 interrupted (Ctrl-C); 1 an
unexpected bug (a traceback: please report it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from iwc.errors import IwcError, disk_error
from iwc.train.session import KAGGLE_LIMIT_S

DEMO_DATA = Path("data/demo")
QUIRKS_HELP = ("plant the real files' quirks (boxes past the frame, missing detector entries, sample Ids without "
               "an image, grayscale, truncated / zero-byte / missing JPEGs), listed in ground_truth/data_issues.json")
SESSION_LIMIT_HELP = ("seconds a session may last ({default}): a model stage logs its ETA after its first minutes "
                      "of training, and stops at the last epoch that ends 30 min before the limit (a tenth of it when "
                      "shorter), leaving its checkpoint and a resumable marker")
STAGE_HELP = "a model of the recipe (reference and demo: full, crop) or aggregate"
CATEGORIES_HELP = "competition folder or JSON with the category list (default: the sample's folder)"
WEIGHTS_SAVE_HELP = ("save timm's pretrained weights for --arch to a local .safetensors file (needs a reachable "
                     "model hub), for recipes run offline: set full.weights_file / crop.weights_file to it")


def _demo_data(args: argparse.Namespace) -> None:
    from iwc.host.synth import write_demo

    info = write_demo(Path(args.out), seed=args.seed, scale=args.scale, progress=not args.quiet, quirks=args.quirks)
    print(info.summary())


def _validate(args: argparse.Namespace) -> None:
    from iwc.submission import validate_file

    _require_file(args.submission, "submission")
    _require_file(args.sample, "--sample")
    problems = validate_file(Path(args.submission), Path(args.sample), _category_ids(args.categories, args.sample))
    if problems:
        raise IwcError(f"{args.submission} is NOT a valid submission:\n  - " + "\n  - ".join(problems))
    print(f"{args.submission}: valid ({_row_count(Path(args.submission))})")


def _score(args: argparse.Namespace) -> None:
    from iwc import layout
    from iwc.data.competition import Competition
    from iwc.host.score import per_location, report, scored

    _require_file(args.submission, "submission")
    _require_file(args.answers, "--answers")
    table = scored(Path(args.submission), Path(args.answers))
    test = Competition.load(layout.find_competition(Path(args.data))).test if args.data else None
    print(report(table, None if test is None else per_location(table, test)))


def _assemble(args: argparse.Namespace) -> None:
    from iwc.data.competition import read_sample_submission
    from iwc.submission import assemble, read_predictions, write_submission

    _require_file(args.predictions, "predictions")
    _require_file(args.sample, "--sample")
    sample = read_sample_submission(Path(args.sample))
    df = assemble(sample, read_predictions(Path(args.predictions)))
    path = write_submission(df, Path(args.out), {"predictions": args.predictions, "sample": args.sample},
                            sample=sample, category_ids=_category_ids(args.categories, args.sample))
    print(f"wrote {path} ({len(df)} rows)")


def _stage(args: argparse.Namespace) -> None:
    import importlib
    import os
    import time

    from iwc.layout import INPUT_ENV, WORKING_ENV, working_dir
    from iwc.recipe import load_recipe
    from iwc.train.session import LIMIT_ENV, START_ENV, marker_name

    if args.input_root:
        os.environ[INPUT_ENV] = str(Path(args.input_root).resolve())
    if args.working_dir:
        os.environ[WORKING_ENV] = str(Path(args.working_dir).resolve())
    os.environ[LIMIT_ENV] = repr(args.session_limit)  # this process is the session: see iwc.train.session
    os.environ.setdefault(START_ENV, repr(time.time()))
    recipe = load_recipe(args.recipe, args.set)
    spec = _stage_spec(recipe, args.name)
    importlib.import_module(spec.module).main(recipe, spec.name)
    if (working_dir() / marker_name(spec.name)).is_file():
        print(f"iwc stage: {spec.name} stopped before its session limit of {args.session_limit:g} s (see "
              f"{working_dir() / marker_name(spec.name)}): run the same command again to continue from its checkpoint")


def _reproduce(args: argparse.Namespace) -> None:
    from iwc.host.backends import RunOptions, get_backend
    from iwc.host.kaggle_cli import DATA, check_submit, submit_result
    from iwc.host.pipeline import reproduce
    from iwc.host.synth import demo_root, write_demo
    from iwc.host.userpaths import resolve_weights
    from iwc.recipe import load_recipe

    if args.data and Path(args.data).exists() and not Path(args.data).is_dir():
        raise IwcError(f"--data {args.data} is a file, not a data folder: give the folder that holds the competition "
                       "files and the 256 px dataset as Kaggle's downloads lay them out (or use --demo)")
    overrides = [*args.set, *([f"seed={args.seed}"] if args.seed is not None else [])]
    recipe = load_recipe(args.recipe or ("demo" if args.demo else "reference"), overrides)
    backend = get_backend(args.backend)
    options = RunOptions(Path(args.data or DATA), demo=args.demo, dry_run=args.dry_run, timeout=args.timeout,
                         gpus=args.gpus, session_limit=args.session_limit)
    backend.check(options)
    recipe = resolve_weights(recipe, backend.attaches_inputs)  # before any Kaggle step (a dry run shows it)
    if args.quirks and not args.demo:
        raise IwcError("--quirks plants defects in the synthetic competition: use it with --demo")
    check_submit(args, backend)  # with --submit: the credential can submit, before hours of training
    name = args.run or recipe.name
    if not backend.before_run(recipe, Path("runs") / name, options):  # False after a dry run
        return
    if args.demo:
        root = Path(args.data) if args.data else demo_root(DEMO_DATA, args.data_seed, args.scale, args.quirks)
        if not (root / "ground_truth").is_dir():
            print(write_demo(root, seed=args.data_seed, scale=args.scale, quirks=args.quirks).summary())
        else:
            print(f"synthetic competition (seed {args.data_seed}, {args.scale}"
                  f"{', quirks' if args.quirks else ''}): reusing {root}")
    else:
        root = options.data_root
    truth = root / "ground_truth" / "test_labels.csv"
    result = reproduce(root, recipe, Path("runs") / name, Path("submissions") / name,
                       truth=truth if truth.is_file() else None, force=args.force, backend=backend,
                       gpus=args.gpus, owner=backend.owner)
    ran, skipped = ", ".join(result.ran) or "none", ", ".join(result.skipped) or "none"
    print(f"\nstages run: {ran}; skipped (unchanged): {skipped}")
    print(result.table)
    print(f"\nsubmission: {result.submission_dir / 'submission.csv'} (validated); report: "
          f"{result.submission_dir / 'report.md'}")
    backend.after_run(Path("runs") / name, result.submission_dir)
    submit_result(args, backend, result.submission_dir, root)


def _tune(args: argparse.Namespace) -> None:
    from iwc.host.tune_cli import tune

    tune(args)


def _lr_find(args: argparse.Namespace) -> None:
    from iwc.host.lr_find_cli import lr_find

    lr_find(args)


def _doctor(args: argparse.Namespace) -> None:
    from iwc.host.doctor import doctor_lines

    print("\n".join(doctor_lines()))


def _docker_run(args: argparse.Namespace) -> None:
    from iwc.host.backends.docker import DockerBackend, run_stage
    from iwc.recipe import load_recipe

    out = Path(args.out or f"runs/docker-{args.name}")
    working = run_stage(args.name, Path(args.input_root), out, load_recipe(args.recipe, args.set),
                        DockerBackend(image=args.image or ""))
    print(f"outputs: {working}; log: {out / 'log.txt'}")


def _docker_base(args: argparse.Namespace) -> None:
    from iwc.host.docker_base import build_base

    print(build_base(args.mirror or ""))


def _docker_build(args: argparse.Namespace) -> None:
    from iwc.host.backends.docker import PROJECT_DIR, build_argv
    from iwc.host.docker_base import docker_build

    argv = build_argv(base=args.base)
    docker_build(argv[:-1], PROJECT_DIR)
    print(argv[argv.index("--tag") + 1])


def _weights_save(args: argparse.Namespace) -> None:
    from iwc.host.weights import save_pretrained

    out = Path(args.out)
    size = save_pretrained(args.arch, out)
    print(f"wrote {out} ({size / 2**20:.1f} MiB): use it offline with "  # absolute: kernels run in their own folders
          f"--set full.weights_file={out.resolve()} --set crop.weights_file={out.resolve()}")


def _recipe(args: argparse.Namespace) -> None:
    from iwc.recipe import load_recipe

    print(json.dumps(load_recipe(args.recipe, args.set).to_dict(), indent=2))  # in run order


def _stage_spec(recipe: Any, name: str) -> Any:
    """The stage `name` of `recipe` (one per model, then the aggregator); `IwcError` naming the choices."""
    from iwc.stages import stage_specs

    specs = stage_specs(recipe)
    if name not in specs:
        raise IwcError(f"stage {name!r} is not a stage of recipe {recipe.name!r}: choose one of {', '.join(specs)}")
    return specs[name]


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
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IwcError(f"{path} has no category list ({type(e).__name__}: {e}): expected a JSON with "
                       "'categories' ([{\"id\": ...}]) or 'category_ids'") from e


def _require_file(path: str, what: str) -> None:
    if Path(path).is_dir():
        raise IwcError(f"{what} {path} is a directory; expected a CSV file")
    if not Path(path).is_file():
        raise IwcError(f"{what} {path}: no such file")


def _row_count(path: Path) -> str:
    """"N rows" as the validator read them; blank lines are no rows (pandas and Kaggle's reader skip them, so
    they do not make a submission invalid), and are counted apart so that the line count still adds up."""
    from iwc.submission import read_csv_strings

    rows = len(read_csv_strings(path))
    with open(path, encoding="utf-8", errors="replace") as f:
        blank = sum(1 for line in f if not line.strip())
    return f"{rows} rows" + (f"; {blank} blank line{'s' * (blank != 1)} skipped" if blank else "")


def _data_seed(text: str) -> int:
    """A synthetic competition's seed: an integer >= 0 (numpy's generators take no negative seed)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"{seed} is negative: give a seed >= 0")
    return seed


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds, e.g. 43200 for 12 h")
    return value


def _run_name(text: str) -> str:
    """A run's name: one plain folder name (it names runs/<run>/ and submissions/<run>/), never a path."""
    from iwc.io import folder_name_problem

    problem = folder_name_problem(text, "--run")
    if problem:
        raise argparse.ArgumentTypeError(problem.removeprefix("--run = "))
    return text


def _printable_streams() -> None:
    """Let stdout and stderr print any path: a file name holding bytes the console's encoding cannot show
    comes out backslash-escaped instead of raising `UnicodeEncodeError` after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # absent on replaced streams (tests, pipes of tools)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


class Parser(argparse.ArgumentParser):
    """argparse with iwc's error format: a usage error is one `iwc: error:` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"iwc: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from iwc.host.backends import BACKENDS
    from iwc.host.kaggle_cli import RESUBMIT_HELP
    from iwc.host.kaggle_cli import add_commands as add_kaggle_commands

    parser = Parser(prog="iwc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("demo-data", _demo_data, "write the synthetic competition (exact real formats) to OUT")
    p.add_argument("out", help="folder to write")
    p.add_argument("--seed", type=_data_seed, default=0,
                   help="seed of the synthetic competition (>= 0; same seed, byte-identical files)")
    p.add_argument("--scale", choices=["small", "medium", "full"], default="medium",
                   help="small (tests), medium (the demo) or full (the real counts, images a few dozen px wide)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--quirks", action="store_true", help=QUIRKS_HELP)

    p = add("validate", _validate, "check a submission.csv against the sample submission; report every problem")
    p.add_argument("submission")
    p.add_argument("--sample", required=True, help="sample_submission.csv")
    p.add_argument("--categories", help=CATEGORIES_HELP)

    p = add("score", _score, "a submission's accuracy as MLE-bench grades it (and per location with --data)")
    p.add_argument("submission")
    p.add_argument("--answers", required=True, help="Id,Category CSV of the true labels (MLE-bench's "
                                                    "private/answers.csv)")
    p.add_argument("--data", help="competition folder (or a folder above it): adds the accuracy per test location")

    p = add("assemble", _assemble, "turn an Id,Category predictions CSV into a validated submission folder")
    p.add_argument("predictions")
    p.add_argument("--sample", required=True, help="sample_submission.csv")
    p.add_argument("--categories", help=CATEGORIES_HELP)
    p.add_argument("--out", required=True, help="folder for submission.csv + manifest.json")

    p = add("stage", _stage, "run one stage (a model of the recipe, or aggregate) in this process, without a kernel")
    p.add_argument("name", help=STAGE_HELP)
    p.add_argument("--input-root", help="Kaggle-shaped input folder (default /kaggle/input)")
    p.add_argument("--working-dir", help="output folder (default /kaggle/working)")
    p.add_argument("--session-limit", type=_seconds, default=KAGGLE_LIMIT_S, help=SESSION_LIMIT_HELP.format(
        default=f"default {KAGGLE_LIMIT_S:g} s, Kaggle's 12 h"))
    _add_recipe_args(p)

    p = add("reproduce", _reproduce, "generate the kernels, train every model of the recipe, then aggregate; "
                                     "assemble and validate submissions/<run>/")
    p.add_argument("--demo", action="store_true", help="the built-in synthetic competition and the demo recipe")
    p.add_argument("--data", help="folder holding the competition data (default data/kaggle; with --demo "
                                  "data/demo/<scale>-seed<N>)")
    p.add_argument("--data-seed", type=_data_seed, default=0, help="seed of the synthetic competition (with --demo)")
    p.add_argument("--quirks", action="store_true",
                   help=f"with --demo: {QUIRKS_HELP} (data in data/demo/<scale>-seed<N>-quirks)")
    p.add_argument("--scale", choices=["small", "medium", "full"], default="medium",
                   help="size of the synthetic competition (full: the real counts, tiny images)")
    p.add_argument("--seed", type=int, help="the recipe's seed (training, split, TTA)")
    p.add_argument("--run", type=_run_name,
                   help="run name: runs/<run>/ and submissions/<run>/ (default: the recipe name)")
    p.add_argument("--force", action="store_true", help="rerun every stage even if its inputs are unchanged")
    p.add_argument("--backend", default="local", choices=list(BACKENDS),
                   help="where the kernels run: local (here) | docker (the CUDA image) | kaggle (Kaggle's GPUs)")
    p.add_argument("--dry-run", action="store_true", help="with --backend kaggle: print the kernels that would be "
                                                          "pushed (ids, sources, machine, internet, GPU); push nothing")
    p.add_argument("--submit", action="store_true", help="submit the validated result to Kaggle and print its score")
    p.add_argument("--resubmit", action="store_true", help=f"with --submit: {RESUBMIT_HELP}")
    p.add_argument("--timeout", type=float, help="with --backend kaggle: seconds to wait for each kernel "
                                                 "(default 13 h)")
    p.add_argument("--session-limit", type=_seconds, help="with --backend kaggle: " + SESSION_LIMIT_HELP.format(
        default=f"default {KAGGLE_LIMIT_S:g} s, 12 h; 32400 for a 9 h machine shape"))
    p.add_argument("--gpus", type=int, help="train each model on this many GPUs (torchrun, DistributedDataParallel; "
                                            "default: every GPU a model kernel sees; kaggle: 1 or 2, the two T4s of "
                                            "its machine shape); 0: every stage on the CPU, no GPU attached")
    _add_recipe_args(p, default="reference, or demo with --demo")
    p.epilog = ("Offline (no model hub, e.g. a Kaggle kernel without internet): the reference recipe starts from "
                "pretrained weights; save them once where a hub is reachable (`iwc weights save --arch resnet50 "
                "--out resnet50.safetensors`) and pass --set full.weights_file=FILE --set crop.weights_file=FILE, "
                "or train from random init with --set full.pretrained=false --set crop.pretrained=false.")

    _add_recipe_args(add("recipe", _recipe, "print a resolved recipe as JSON"))

    from iwc.host.tune_cli import add_arguments as add_tune_arguments

    add_tune_arguments(add("tune", _tune, "search blend weights, blend.no_crop, the vote and gap_s on a finished "
                                          "run's validation predictions, in seconds, without retraining"))

    from iwc.host.lr_find_cli import add_arguments as add_lr_find_arguments

    p = add("lr-find", _lr_find, "an lr range test of one model of the recipe (fastai's lr_find): a few hundred "
                                 "batches, the loss against the learning rate, a suggested rate")
    add_lr_find_arguments(p)
    _add_recipe_args(p, default="demo")

    weights = sub.add_parser("weights", help="pretrained weights for offline runs").add_subparsers(
        dest="action", required=True)
    p = weights.add_parser("save", help=WEIGHTS_SAVE_HELP, description=WEIGHTS_SAVE_HELP)
    p.set_defaults(func=_weights_save)
    p.add_argument("--arch", default="resnet50", help="timm architecture (default resnet50, the reference's)")
    p.add_argument("--out", required=True, help="file to write, ending in .safetensors")

    add_kaggle_commands(sub)

    add("doctor", _doctor, "print the versions of iwc, torch, timm and numpy, the CUDA devices and free disk")

    p = add("docker-run", _docker_run, "run one stage's generated kernel in the project's Docker image")
    p.add_argument("name", help=STAGE_HELP)
    p.add_argument("--input-root", required=True, help="Kaggle-shaped input folder, mounted read-only at "
                                                       "/kaggle/input")
    p.add_argument("--out", help="folder for the kernel, log.txt and working/ (default runs/docker-<stage>)")
    p.add_argument("--image", help="image to run (default: $IWC_DOCKER_IMAGE, else the one `invoke docker.build` "
                                   "tags for this code)")
    _add_recipe_args(p)

    p = add("docker-base", _docker_base, "make a base image here from Debian packages (debootstrap, as root) and "
            "torch, cached by a tag of its inputs; prints the tag")
    p.add_argument("--mirror", help="Debian mirror (default: the one this machine's apt uses)")
    p = add("docker-build", _docker_build, "build the project's image on BASE with --network host and this "
            "machine's pip settings; prints its tag")
    p.add_argument("--base", required=True, help="base image, e.g. the one `iwc docker-base` prints")
    return parser


def _add_recipe_args(p: argparse.ArgumentParser, default: str = "reference") -> None:
    p.add_argument("--recipe", default=None if default != "reference" else default,
                   help=f"recipe name (reference | demo) or TOML file (default: {default})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. full.batch_size=64 (repeatable)")


def main(argv: list[str] | None = None) -> int:
    _printable_streams()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except IwcError as e:
        print(f"iwc: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output left early (`iwc recipe | head`): nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except OSError as e:  # a full, over-quota or read-only disk is the user's to fix; anything else is a bug
        error = disk_error(e)
        if error is None:
            raise
        print(f"iwc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # `reproduce` says how to resume
        print(f"iwc: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
