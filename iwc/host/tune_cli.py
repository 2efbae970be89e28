"""`iwc tune RUN [--data DIR] [--write FILE.toml] [--step S]`: the command around `iwc.host.tune`.

Reads `runs/<run>/`, writes `tune.md` and the plots into `submissions/<run>/` (and a "Tuning" section into its
`report.md`), prints the table; `--write` saves the best settings as a recipe overlay that
`iwc reproduce --recipe FILE.toml` runs (only the aggregator reruns).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from iwc.errors import IwcError
from iwc.host import tune as t
from iwc.host.overlay import write_overlay
from iwc.io import is_plain_name
from iwc.recipe import Recipe

STEPS = ("0.05", "0.1", "0.2", "0.25", "0.5")  # grid steps that divide 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments (also what `invoke tune` forwards)."""
    p.add_argument("run", help="a finished run: runs/<run>/ (its report: submissions/<run>/)")
    p.add_argument("--data", help="the folder holding the run's competition data (default: the one the run's "
                                  "aggregator was given, for local runs)")
    p.add_argument("--write", help="save the best settings as a recipe overlay FILE.toml (base = the run's recipe)")
    p.add_argument("--step", default="0.1", choices=STEPS, help="grid step of the blend weights")


def tune(args: argparse.Namespace) -> None:
    """Search, print, write the report section and plots, and (with --write) the overlay."""
    if not is_plain_name(args.run):
        raise IwcError(f"run {args.run!r} must be a run name (a folder of runs/), not a path")
    run_dir, out = Path("runs") / args.run, Path("submissions") / args.run
    if not run_dir.is_dir():
        raise IwcError(f"{run_dir}: no such run; run iwc reproduce first (tune reads a finished run)")
    if args.write and not args.write.endswith(".toml"):
        raise IwcError(f"--write {args.write}: an overlay is a .toml file (e.g. best.toml)")
    if args.data and not Path(args.data).is_dir():
        raise IwcError(f"--data {args.data}: no such folder; give the folder that holds the run's competition data")
    started = time.perf_counter()
    recipe, val = t.load_run(run_dir, Path(args.data) if args.data else None)
    if not out.is_dir():
        raise IwcError(f"{out}: the run has no submission folder; rerun iwc reproduce to finish it")
    frame = t.search(recipe, val, float(args.step))
    best, own = frame.iloc[0], frame[frame["is_current"]].iloc[0]
    keys = t.sequence_keys(val, {best.gap_s, own.gap_s})
    interval = t.location_interval(val, t.correct(val, best.obj, keys), t.correct(val, own.obj, keys),
                                   seed=recipe.seed)
    section = t.markdown(frame, interval)
    t.plot(frame, out)
    t.write_report(out, section)
    print(section.replace("\n\n![", "\n![").split("\n![")[0])
    print(f"\n{len(frame)} settings in {time.perf_counter() - started:.1f} s; plots and tune.md in {out}")
    if args.write:
        try:
            base = write_overlay(Path(args.write), best_recipe(recipe, best.obj))
        except OSError as e:
            raise IwcError(f"--write {args.write}: cannot write it ({e.strerror}); choose another file") from e
        run = "" if args.run == recipe.name else f" --run {args.run}"
        print(f"overlay: {args.write} (base {base!r}); `iwc reproduce --recipe {args.write}{run}` with the run's "
              "data options reruns only the aggregator")


def best_recipe(recipe: Recipe, s: t.Setting) -> Recipe:
    """`recipe` with setting `s`: blend weights and no_crop, the vote and gap_s (time sequences: what tune
    measured)."""
    return replace(recipe, blend=replace(recipe.blend, weights=dict(s.weights), no_crop=s.no_crop),
                   sequences=replace(recipe.sequences, method="time", vote=s.vote, gap_s=s.gap_s))
