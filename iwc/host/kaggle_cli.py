"""`iwc kaggle download|push|status|pull|submit`, and the Kaggle steps of `iwc reproduce --backend kaggle`.

Each command is a thin wrapper over `iwc.host.kaggle_client`; every failure is one `IwcError` line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from iwc.errors import IwcError
from iwc.io import read_json_object, sha256_file, write_json
from iwc.layout import COMPETITION_SLUG, RESIZED_DATASET

DATA = "data/kaggle"
SUBMIT_NEEDS = ("iwildcam2020_train_annotations.json", "sample_submission.csv")  # categories + sample
RESUBMIT_HELP = ("submit even when these exact bytes were already submitted from this folder (recorded in "
                 "submitted.json)")
KERNEL_SOURCES_NOTE = ("the aggregator's kernel_sources attach the latest version of each training kernel: the "
                       "versions listed here, run just before it")


def add_commands(sub: Any) -> None:
    """Add `kaggle` and its subcommands to `iwc`'s subparsers `sub`."""
    kaggle = sub.add_parser("kaggle", help="talk to Kaggle: download, push, status, pull, submit",
                            description="talk to Kaggle with your credential (see the README: Run on Kaggle)")
    actions = kaggle.add_subparsers(dest="action", required=True)

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("download", _download, "download the competition's metadata files and the 256 px dataset "
                                   "(kept when already present and complete)")
    p.add_argument("--data", default=DATA, help=f"data folder (default {DATA})")
    p.add_argument("--images", action="store_true", help="also the competition's original images (~100 GB)")
    p.add_argument("--no-resized", action="store_true", help=f"skip the 256 px dataset {RESIZED_DATASET}")

    p = add("push", _push, "push kernel folders (script + kernel-metadata.json), each as a new version")
    p.add_argument("folders", nargs="+", help="kernel folders, e.g. runs/<run>/kernels/full")

    p = add("status", _status, "print a kernel version's status; with --wait, wait until it ends")
    p.add_argument("kernel", help="owner/slug")
    p.add_argument("--version", type=int, help="version number (default: the latest)")
    p.add_argument("--wait", action="store_true", help="poll until it completes; exit non-zero if it fails")
    p.add_argument("--timeout", type=float, default=13 * 3600, help="seconds to wait at most (default 13 h)")

    p = add("pull", _pull, "download a kernel version's output files into a folder")
    p.add_argument("kernel", help="owner/slug")
    p.add_argument("--version", type=int, help="version number (default: the latest)")
    p.add_argument("--out", required=True, help="folder to fill (replaced when the pull completes)")

    p = add("submit", _submit, "validate SUBMISSION_DIR/submission.csv, submit it and print the public score")
    p.add_argument("submission_dir", help="a folder holding submission.csv and manifest.json")
    p.add_argument("--message", required=True, help="submission description (the manifest hash and git commit "
                                                    "are appended)")
    p.add_argument("--data", default=DATA, help=f"data folder holding (or to receive) the sample submission "
                                                f"(default {DATA})")
    p.add_argument("--resubmit", action="store_true", help=RESUBMIT_HELP)


def _client() -> Any:
    from iwc.host.kaggle_client import KaggleClient

    return KaggleClient()


def _download(args: argparse.Namespace) -> None:
    client = _client()
    folder = client.download_competition(Path(args.data), images=args.images)
    print(f"competition files: {folder}")
    if not args.no_resized:
        print(f"256 px dataset: {client.download_dataset(Path(args.data))}")


def _push(args: argparse.Namespace) -> None:
    from iwc.host.kaggle_client import read_kernel_metadata

    client = _client()
    for folder in args.folders:
        kernel = read_kernel_metadata(Path(folder))["id"]
        version = client.push(Path(folder))
        print(f"pushed {kernel} version {version}: wait with `iwc kaggle status {kernel} --version {version} --wait`")


def _status(args: argparse.Namespace) -> None:
    if args.wait and not args.version:
        raise IwcError(f"--wait needs --version: the version number `iwc kaggle push` printed for {args.kernel}")
    client = _client()
    if args.wait:
        client.wait(args.kernel, args.version, args.timeout)
        return
    status, failure = client.status(args.kernel, args.version)
    print(f"{args.kernel}{f' version {args.version}' if args.version else ''}: {status}"
          + (f" ({failure})" if failure else ""))
    if status in ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED"):
        raise IwcError(f"{args.kernel} ended {status}" + (f": {failure}" if failure else ""))


def _pull(args: argparse.Namespace) -> None:
    names, _ = _client().pull(args.kernel, args.version, Path(args.out))
    print(f"pulled {len(names)} files into {args.out}")


def _submit(args: argparse.Namespace) -> None:
    folder = Path(args.submission_dir)
    submission_files(folder, args.resubmit)  # before any call to Kaggle
    client = _client()
    competition = client.download_competition(Path(args.data), names=SUBMIT_NEEDS)
    score = submit_folder(client, folder, competition, args.message, args.resubmit)
    print(f"public score: {score}")


def submission_files(folder: Path, resubmit: bool) -> tuple[Path, Path, str]:
    """(submission.csv, manifest.json, the CSV's sha256) of `folder`; an `IwcError` when one is missing or, unless
    `resubmit`, when these exact bytes were already submitted from `folder` (`iwc.host.submitted`)."""
    from iwc.host.submitted import refuse_duplicate

    csv, manifest = folder / "submission.csv", folder / "manifest.json"
    for path in (csv, manifest):
        if not path.is_file():
            raise IwcError(f"{path} is missing: submit a folder written by `iwc reproduce` or `iwc assemble`")
    digest = sha256_file(csv)
    if not resubmit:
        refuse_duplicate(folder, digest)
    return csv, manifest, digest


def submit_folder(client: Any, folder: Path, competition: Path, message: str, resubmit: bool = False) -> str:
    """Validate `folder/submission.csv` against the competition's sample, submit it with `message` plus the
    manifest hash and git commit, and record it in `folder/submitted.json`; returns the public score.
    Refuses bytes already submitted from `folder` unless `resubmit`."""
    from iwc.data.competition import TRAIN_JSON, read_train
    from iwc.host.kaggle_client import SubmissionRejected
    from iwc.host.submitted import record
    from iwc.submission import validate_file

    csv, manifest, digest = submission_files(folder, resubmit)
    sample = competition / "sample_submission.csv"
    problems = validate_file(csv, sample, read_train(competition / TRAIN_JSON)[1]["id"].tolist())
    if problems:
        raise IwcError(f"{csv} is NOT a valid submission, not submitted: " + "; ".join(problems))
    full_message = f"{message} | manifest sha256 {sha256_file(manifest)[:16]} | commit {git_commit()}"
    ref = client.create_submission(csv, full_message)
    record(folder, digest, ref, "accepted", full_message)
    try:
        score = client.wait_score(ref, csv)
    except SubmissionRejected:
        record(folder, digest, ref, "rejected")
        raise
    record(folder, digest, ref, "scored", public_score=score)
    return score


def git_commit() -> str:
    """The checkout's commit (12 hex digits, `+dirty` when files differ), or `unknown` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


# ------------------------------------------------------------------------------- iwc reproduce --backend kaggle

def dry_run(backend: Any, recipe: Any, run_dir: Path) -> None:
    """Print what `iwc reproduce --backend kaggle` would push, for the credential's user; push nothing."""
    from iwc.host.bundle import build_kernels

    folders = build_kernels(run_dir / "kernels", recipe, backend.owner, session_limit=backend.session_limit)
    print(f"would push {len(folders)} kernels as {backend.owner!r} (--dry-run: nothing is pushed):")
    for folder in folders:
        meta = json.loads((folder / "kernel-metadata.json").read_text(encoding="utf-8"))
        size = (folder / meta["code_file"]).stat().st_size
        gpu = f"GPU {meta.get('machine_shape', 'yes')}" if meta["enable_gpu"] else "no GPU"
        print(f"  {meta['id']}: {folder / meta['code_file']} ({size / 1024:.0f} KiB); {gpu}; internet "
              f"{'on' if meta['enable_internet'] else 'off'}; private {meta['is_private']}\n"
              f"    competition {', '.join(meta['competition_sources']) or '-'}; datasets "
              f"{', '.join(meta['dataset_sources']) or '-'}; kernels {', '.join(meta['kernel_sources']) or '-'}")


def record_run(backend: Any, run_dir: Path, submission_dir: Path) -> dict[str, Any]:
    """Add the Kaggle kernels (ids, versions) and data sources to `submission_dir/manifest.json`; returns them."""
    from iwc.host.backends.kaggle import kernel_records

    kernels = {stage: {"id": r["kernel"], "version": r["version"], "pushed_at": r.get("pushed_at"),
                       "sessions": 1 + int(r.get("continuations", 0)),  # versions that trained it (session limit)
                       "url": f"https://www.kaggle.com/code/{r['kernel']}"}
               for stage, r in kernel_records(run_dir / "stages").items()}
    kaggle = {"owner": backend.owner, "kernels": kernels, "kernel_sources": KERNEL_SOURCES_NOTE,
              "competition": COMPETITION_SLUG, "datasets": [RESIZED_DATASET]}
    manifest_path = submission_dir / "manifest.json"
    manifest = read_json_object(manifest_path)
    if not manifest:
        raise IwcError(f"{manifest_path} is missing or unreadable: rerun `iwc reproduce --backend kaggle`")
    write_json(manifest_path, {**manifest, "kaggle": kaggle})
    for stage, k in kernels.items():
        print(f"  {stage}: {k['id']} version {k['version']}")
    return kaggle


def check_submit(args: argparse.Namespace, backend: Any) -> None:
    """With `--submit`: that the backend's Kaggle credential can submit (and the rules were accepted), before
    hours of training. `--resubmit` alone is refused."""
    if args.resubmit and not args.submit:
        raise IwcError("--resubmit goes with --submit")
    if args.submit:
        backend.submission_client().check_submission_access()


def submit_result(args: argparse.Namespace, backend: Any, submission_dir: Path, data_root: Path) -> None:
    """With `--submit`: submit the run's result (not again when identical, unless `--resubmit`) and print its
    public score."""
    if args.submit:
        from iwc.layout import find_competition

        score = submit_folder(backend.submission_client(), submission_dir, find_competition(data_root),
                              f"iwc reproduce {submission_dir.name}", args.resubmit)
        print(f"public score: {score}")
