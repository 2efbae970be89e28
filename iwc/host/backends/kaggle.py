"""Run a generated kernel on Kaggle: push it, wait for that version, pull its outputs.

Kaggle attaches the competition, the datasets and the upstream kernels named in `kernel-metadata.json`
itself, so `KernelRun.inputs` is not used; an upstream kernel is attached at its latest version, which
is the one the pipeline has just run. Each stage records its push in `KernelRun.state_path` (kernel id,
version, hash of the pushed files, status): a rerun waits for / pulls that version again instead of
pushing anew, unless it failed or the kernel's files changed.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from iwc.errors import IwcError
from iwc.host.backends.base import BACKEND_STATE, Backend, KernelRun, RunOptions
from iwc.host.bundle import MACHINE_SHAPE, SHAPE_GPUS
from iwc.host.kaggle_client import FAILED, KaggleClient, log_lines, read_kernel_metadata
from iwc.io import read_json_object, write_json
from iwc.recipe import Recipe

DEADLINE_S = 13 * 3600.0  # Kaggle stops a session after 12 h; an hour more for the queue
RESUME = "run the same `iwc reproduce --backend kaggle ...` command again (it pushes again only a kernel that failed)"


class KaggleBackend(Backend):
    """Runs each kernel on Kaggle as the credential's user; full and crop may run at the same time."""

    name = "kaggle"
    parallel = True  # kernels wait on Kaggle, not here: independent stages can run together
    attaches_inputs = True  # Kaggle mounts the sources named in the metadata; nothing local is mounted
    accepts = frozenset({"dry_run", "timeout"})
    max_gpus = SHAPE_GPUS  # the T4s of MACHINE_SHAPE; its kernel counts them and trains on each (or --gpus 1)

    def __init__(self, client: KaggleClient | None = None, deadline_s: float = DEADLINE_S) -> None:
        self._client, self.deadline_s = client, deadline_s

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
        if options.gpus is not None and not 1 <= options.gpus <= SHAPE_GPUS:
            raise IwcError(f"--gpus {options.gpus}: a Kaggle model kernel runs on machine shape {MACHINE_SHAPE}, "
                           f"{SHAPE_GPUS} x T4 (16 GB each), and trains on both; Kaggle's other shapes are "
                           "NvidiaTeslaP100 (1 x P100, which current torch builds cannot run) and TpuV5E8 (a TPU): "
                           f"give --gpus 1 or {SHAPE_GPUS}, or drop it for both")
        super().check(options)
        if options.demo:
            raise IwcError("--demo runs the synthetic competition on this machine; with --backend kaggle the "
                           "kernels read Kaggle's data: drop --demo (--recipe demo keeps the small recipe)")
        if options.timeout:
            self.deadline_s = options.timeout

    def before_run(self, recipe: Recipe, run_dir: Path, options: RunOptions) -> bool:
        """A dry run prints what would be pushed (returns False); otherwise the competition's metadata files are
        fetched into the data root: the pipeline keys and assembles from them."""
        from iwc.host.kaggle_cli import dry_run

        if options.dry_run:
            dry_run(self, recipe, run_dir, options.gpus)
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
        version = self._resumable_version(read_json_object(state_path), kernel, digest, stage)
        if version is None:
            version = self.client.push(job.kernel_dir)
            write_json(state_path, {"kernel": kernel, "version": version, "files_sha256": digest,
                                    "status": "PUSHED", "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                 time.gmtime())})
            print(f"[{stage}] pushed {kernel} version {version}: https://www.kaggle.com/code/{kernel}", flush=True)
        self.client.wait(kernel, version, self.deadline_s, RESUME)
        self._record(state_path, status="COMPLETE")
        working = job.stage_dir / "working"
        names, log = self.client.pull(kernel, version, working)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_path, "a", encoding="utf-8") as f:  # the pipeline opens each attempt's part of the log
            f.write("".join(f"{line}\n" for line in log_lines(log)))
        self._record(state_path, pulled=len(names))
        print(f"[{stage}] pulled {len(names)} output files of {kernel} version {version}", flush=True)
        return working

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
