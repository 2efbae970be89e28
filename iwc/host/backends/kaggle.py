"""Run a generated kernel on Kaggle: push it, wait for that version, pull its outputs.

Kaggle attaches the competition, the datasets and the upstream kernels named in `kernel-metadata.json`
itself, so `KernelRun.inputs` is not used; an upstream kernel is attached at its latest version, which
is the one the pipeline has just run. Each stage records its push in `KernelRun.state_path` (kernel id,
version, hash of the pushed files, status): a rerun waits for / pulls that version again instead of
pushing anew, unless it failed or the kernel's files changed.

The session limit (`--session-limit`, default Kaggle's 12 h) is baked into each pushed script. A model kernel
that would pass it stops at an epoch boundary and leaves `<stage>.resume.json` beside its checkpoint
(`iwc.train.session`); seeing that marker in the pulled outputs, `run` pushes the next version with the
kernel's own output attached (`kernel_sources` naming itself), from which it resumes, and so on until the
stage completes, at most `MAX_CONTINUATIONS` times.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from iwc.errors import IwcError
from iwc.host.backends.base import BACKEND_STATE, Backend, KernelRun, RunOptions
from iwc.host.bundle import METADATA_FILE
from iwc.host.kaggle_client import FAILED, KaggleClient, log_lines, read_kernel_metadata
from iwc.io import read_json_object, write_json, write_text
from iwc.recipe import Recipe
from iwc.train.session import KAGGLE_LIMIT_S, marker_name

DEADLINE_S = 13 * 3600.0  # Kaggle stops a session after 12 h; an hour more for the queue
MAX_CONTINUATIONS = 5  # next versions pushed for one stage after planned stops before the backend gives up
CONTINUED = "continue"  # the stage folder's copy of the kernel that names its own output as an input
KILLED = re.compile(r"session limit|time ?limit|timed? ?out|exceeded|maximum run ?time", re.IGNORECASE)
RESUME = "run the same `iwc reproduce --backend kaggle ...` command again (it pushes again only a kernel that failed)"


class KaggleBackend(Backend):
    """Runs each kernel on Kaggle as the credential's user; full and crop may run at the same time."""

    name = "kaggle"
    parallel = True  # kernels wait on Kaggle, not here: independent stages can run together
    attaches_inputs = True  # Kaggle mounts the sources named in the metadata; nothing local is mounted
    accepts = frozenset({"dry_run", "timeout", "session_limit"})
    max_gpus = 1  # a Kaggle session runs one process
    session_limit = KAGGLE_LIMIT_S

    def __init__(self, client: KaggleClient | None = None, deadline_s: float = DEADLINE_S,
                 max_continuations: int = MAX_CONTINUATIONS) -> None:
        self._client, self.deadline_s, self.max_continuations = client, deadline_s, max_continuations

    @property
    def client(self) -> KaggleClient:
        if self._client is None:
            self._client = KaggleClient()
        return self._client

    @property
    def owner(self) -> str:
        """The Kaggle user the credential belongs to: the owner of every kernel id."""
        return self.client.owner

    def check(self, options: RunOptions) -> None:
        super().check(options)
        if options.gpus != 1:
            raise IwcError(f"--gpus {options.gpus}: a Kaggle session runs one process on the GPU its kernel "
                           "metadata asks for: drop --gpus")
        if options.demo:
            raise IwcError("--demo runs the synthetic competition on this machine; with --backend kaggle the "
                           "kernels read Kaggle's data: drop --demo (--recipe demo keeps the small recipe)")
        if options.timeout:
            self.deadline_s = options.timeout
        if options.session_limit:
            self.session_limit = options.session_limit

    def before_run(self, recipe: Recipe, run_dir: Path, options: RunOptions) -> bool:
        """A dry run prints what would be pushed (returns False); otherwise the competition's metadata files are
        fetched into the data root: the pipeline keys and assembles from them."""
        from iwc.host.kaggle_cli import dry_run

        if options.dry_run:
            dry_run(self, recipe, run_dir)
            return False
        self.client.download_competition(options.data_root)
        return True

    def after_run(self, run_dir: Path, submission_dir: Path) -> None:
        from iwc.host.kaggle_cli import record_run

        print("kernels run on Kaggle:")
        record_run(self, run_dir, submission_dir)

    def submission_client(self) -> KaggleClient:
        return self.client

    def run(self, job: KernelRun) -> Path:
        meta = read_kernel_metadata(job.kernel_dir)
        kernel, stage = meta["id"], job.spec.name
        if kernel.split("/")[0] != self.owner:
            raise IwcError(f"{job.kernel_dir}: kernel id {kernel!r} is not owned by {self.owner!r}, the Kaggle "
                           "credential's user: generate the kernels for that owner")
        digest = kernel_digest(job.kernel_dir, meta)
        state_path = job.state_path
        state = read_json_object(state_path)
        version = self._resumable_version(state, kernel, digest, stage)
        if version is None:
            version = self._push(job.kernel_dir, state_path, kernel, digest, stage)
        while True:
            working = self._finish(job, kernel, version)
            marker = read_json_object(working / marker_name(stage))
            if not marker:
                return working
            version = self._continue(job, kernel, digest, version, marker)

    def _push(self, folder: Path, state_path: Path, kernel: str, digest: str, stage: str, **fields: Any) -> int:
        """Push the kernel in `folder` and record the version (with `fields`) in `state_path`."""
        version = self.client.push(folder)
        write_json(state_path, {"kernel": kernel, "version": version, "files_sha256": digest, "status": "PUSHED",
                                "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields})
        print(f"[{stage}] pushed {kernel} version {version}: https://www.kaggle.com/code/{kernel}", flush=True)
        return version

    def _finish(self, job: KernelRun, kernel: str, version: int) -> Path:
        """Wait for `version` to complete and pull its outputs into the stage's working folder (returned)."""
        stage = job.spec.name
        try:
            self.client.wait(kernel, version, self.deadline_s, RESUME)
        except IwcError as e:
            _, failure = self.client.status(kernel, version)
            if not KILLED.search(failure or ""):
                raise
            raise IwcError(f"{e}\nKaggle killed the session at its time limit, and a killed session keeps no output "
                           f"(no checkpoint to resume from). The kernel stops itself before its session limit of "
                           f"{self.session_limit:g} s (minus a margin): pass a lower --session-limit (32400 for a "
                           "9 h machine shape) and run the same command again") from None
        self._record(job.state_path, status="COMPLETE")
        working = job.stage_dir / "working"
        names, log = self.client.pull(kernel, version, working)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_path, "a", encoding="utf-8") as f:  # the pipeline opens each attempt's part of the log
            f.write("".join(f"{line}\n" for line in log_lines(log)))
        self._record(job.state_path, pulled=len(names))
        print(f"[{stage}] pulled {len(names)} output files of {kernel} version {version}", flush=True)
        return working

    def _continue(self, job: KernelRun, kernel: str, digest: str, version: int, marker: dict[str, Any]) -> int:
        """`version` stopped before the session limit: push the next one with its output attached."""
        stage, state = job.spec.name, read_json_object(job.state_path)
        done = int(state.get("continuations", 0))
        where = f"after {marker.get('epochs_done')} of {marker.get('epochs')} epochs"
        if done >= self.max_continuations:
            raise IwcError(f"{kernel} version {version} stopped before its session limit {where} "
                           f"({marker.get('why')}), and {done} versions have already continued it "
                           f"(at most {self.max_continuations}): "
                           "each session trains too little; check the ETA lines in the stage's log, then shrink the "
                           "recipe (epochs, images) or raise --session-limit")
        print(f"[{stage}] {kernel} version {version} stopped before the session limit {where}: pushing the next "
              "version with its output attached", flush=True)
        folder = continued_kernel(job.kernel_dir, job.stage_dir / CONTINUED)
        return self._push(folder, job.state_path, kernel, digest, stage, continuations=done + 1,
                          continues=version)

    def _resumable_version(self, state: dict[str, Any], kernel: str, digest: str, stage: str) -> int | None:
        """The version recorded for these exact kernel files, unless it failed (then None: push again)."""
        version = state.get("version")
        if state.get("kernel") != kernel or state.get("files_sha256") != digest or not isinstance(version, int):
            return None
        status, _ = self.client.status(kernel, version)
        if status in FAILED:
            print(f"[{stage}] {kernel} version {version} ended {status}: pushing a new version", flush=True)
            return None
        print(f"[{stage}] {kernel} version {version} was pushed before and is {status}: not pushed again", flush=True)
        return version

    @staticmethod
    def _record(state_path: Path, **fields: Any) -> None:
        write_json(state_path, {**read_json_object(state_path), **fields})


def continued_kernel(kernel_dir: Path, out: Path) -> Path:
    """A copy of the kernel in `out` whose `kernel_sources` also name the kernel itself: its next version
    mounts the previous version's output (checkpoint and marker) as an input."""
    meta = read_kernel_metadata(kernel_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(kernel_dir) / meta["code_file"], out / meta["code_file"])
    sources = meta.get("kernel_sources") or []
    meta["kernel_sources"] = [*sources, *([meta["id"]] if meta["id"] not in sources else [])]
    write_text(out / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def kernel_digest(kernel_dir: Path, meta: dict[str, Any]) -> str:
    """sha256 over the files a push sends: the metadata and the code file."""
    h = hashlib.sha256()
    for name in ("kernel-metadata.json", meta["code_file"]):
        h.update(name.encode() + b"\0" + (Path(kernel_dir) / name).read_bytes() + b"\0")
    return h.hexdigest()


def kernel_records(stages_dir: Path) -> dict[str, dict[str, Any]]:
    """`{stage: what its Kaggle run recorded}` for each stage folder under `stages_dir` that ran on Kaggle."""
    records = {p.parent.name: read_json_object(p) for p in sorted(Path(stages_dir).glob(f"*/{BACKEND_STATE}"))}
    return {stage: r for stage, r in records.items() if r.get("kernel")}
