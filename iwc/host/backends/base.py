"""What every backend does: run one generated kernel with its inputs and hand back its outputs folder.

The pipeline only talks to this protocol; `local`, `kaggle` and `docker` implement it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from iwc.errors import IwcError
from iwc.host.bundle import DEFAULT_OWNER
from iwc.recipe import Recipe
from iwc.stages import StageSpec

BACKEND_STATE = "backend.json"  # see KernelRun.state_path


@dataclass(frozen=True)
class KernelRun:
    """One kernel to run.

    `kernel_dir` holds the generated script and its `kernel-metadata.json`. `inputs` maps a mount name
    under the kernel's input root (`competitions/<slug>`, `datasets/<owner>/<slug>`,
    `notebooks/<owner>/<slug>`) to a local folder: the backends that run here mount them; Kaggle attaches
    the sources named in the metadata instead. `stage_dir` is this stage's folder in the run (log,
    outputs, backend state); `env` adds environment variables where the backend runs the kernel here.
    `processes` > 1 runs the kernel under torchrun, one process per GPU (see `kernel_command`); Kaggle
    runs one. `processes` 0 (`--gpus 0`) runs one process on the CPU: no GPU is attached or visible.
    """

    spec: StageSpec
    kernel_dir: Path
    inputs: dict[str, Path]
    stage_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: int = 1

    @property
    def gpu(self) -> bool:
        """Whether this run gets GPUs: its stage needs one and it was not asked to run on the CPU."""
        return self.spec.gpu and self.processes > 0

    @property
    def kernel_file(self) -> Path:
        return self.kernel_dir / self.spec.code_file

    @property
    def log_path(self) -> Path:
        return self.stage_dir / "log.txt"

    @property
    def state_path(self) -> Path:
        """Where a backend records a run in progress (e.g. the Kaggle version it pushed) so a rerun can resume it;
        the pipeline deletes it with the outputs when the stage starts afresh."""
        return self.stage_dir / BACKEND_STATE


@dataclass(frozen=True)
class RunOptions:
    """What the user asked of `iwc reproduce` that a backend may act on."""

    data_root: Path
    demo: bool = False
    dry_run: bool = False  # print what would run; run nothing
    timeout: float | None = None  # seconds to wait for each kernel
    gpus: int = 1
    session_limit: float | None = None  # seconds a kernel's session may last (Kaggle: 12 h unless given)


class Backend:
    """Runs kernels somewhere: this machine, a Docker container, Kaggle. Each backend subclasses this and
    declares what it does:

    - `parallel`: kernels that do not depend on each other may run at the same time (they run elsewhere);
    - `attaches_inputs`: it attaches the competition and datasets itself (Kaggle), so only the competition's
      metadata files are needed here;
    - `accepts`: the options of `RunOptions` beyond the data, `--demo` and `--gpus` that it acts on
      (`dry_run`, `timeout`, `session_limit`); `max_gpus`: the most processes a kernel may train in (None: the
      machine's GPUs); `session_limit`: the seconds baked into its kernels (None: no limit; see
      `iwc.train.session`);
    - the hooks around a run: `check` (before any work), `before_run`, `after_run`.
    """

    name: str = ""
    parallel: bool = False
    attaches_inputs: bool = False
    accepts: frozenset[str] = frozenset()
    max_gpus: int | None = None
    session_limit: float | None = None
    owner: str = DEFAULT_OWNER  # the Kaggle user the generated kernels name

    def check(self, options: RunOptions) -> None:
        """Refuse, in one `IwcError` line, what this backend cannot do with `options`: before any work."""
        for option in ("dry_run", "timeout", "session_limit"):
            if getattr(options, option) and option not in self.accepts:
                raise IwcError(f"--{option.replace('_', '-')} does not apply to --backend {self.name}")
        if options.gpus < 0 or (self.max_gpus is not None and options.gpus > self.max_gpus):
            most = f"at most {self.max_gpus}" if self.max_gpus is not None else "as many as the machine has"
            raise IwcError(f"--gpus {options.gpus}: give 0 (every stage on the CPU) or more; with --backend "
                           f"{self.name}, {most}")

    def before_run(self, recipe: Recipe, run_dir: Path, options: RunOptions) -> bool:
        """Work before the first stage (e.g. fetch the competition's metadata); False: stop here (a dry run)."""
        return True

    def after_run(self, run_dir: Path, submission_dir: Path) -> None:
        """Work after `submission_dir` is assembled (e.g. record where the kernels ran in its manifest)."""

    def submission_client(self) -> Any:
        """The Kaggle client that submits this run's result (`--submit`)."""
        from iwc.host.kaggle_client import KaggleClient

        return KaggleClient()

    def run(self, job: KernelRun) -> Path:
        """Run `job` to completion; returns the folder holding its outputs (its `/kaggle/working`).

        Raises `IwcError` with what went wrong (and the log's tail) when the kernel fails.
        """
        raise NotImplementedError


# torchrun, exiting as its processes do: a process's exit code (2 after its `error:` line) is torchrun's own, where
# plain torchrun turns any failure into 1 and prints a ChildFailedError traceback and log lines after the error
# (its logs are silenced; the processes print their own output and tracebacks). Python code, not a module of
# iwc: the Docker image runs it with no iwc installed.
TORCHRUN = """\
import logging, sys
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run
logging.getLogger("torch.distributed").handlers = [logging.NullHandler()]
try:
    run(parse_args(sys.argv[1:]))
except ChildFailedError as e:
    rank, failure = e.get_first_failure()
    code = failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode
    if code != 2:
        print(f"torchrun: the process of rank {rank} ended with exit code {failure.exitcode}", file=sys.stderr)
    sys.exit(code)
"""


def kernel_command(kernel_file: str | PurePath, processes: int = 1, python: str = sys.executable) -> list[str]:
    """The command that runs a kernel file: `python FILE` (`processes` 1, or 0 for a CPU run), or with
    `processes` > 1 torchrun starting that many copies of it on this machine (DDP training, one GPU each;
    see `TORCHRUN`)."""
    if processes < 0:
        raise IwcError(f"--gpus {processes}: give 0 (CPU) or more")
    if processes <= 1:
        return [python, str(kernel_file)]
    return [python, "-c", TORCHRUN, "--standalone", "--nproc-per-node", str(processes), str(kernel_file)]
