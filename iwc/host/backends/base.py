"""What every backend does: run one generated kernel with its inputs and hand back its outputs folder.

The pipeline only talks to this protocol; `local`, `kaggle` and `docker` implement it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Protocol

from iwc.errors import IwcError
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


class Backend(Protocol):
    """Runs kernels somewhere: this machine, a Docker container, Kaggle.

    Optional attributes the pipeline reads (absent means False): `parallel`, kernels that do not depend on
    each other may run at the same time (they run elsewhere); `attaches_inputs`, the backend attaches the
    competition and datasets itself (Kaggle), so only the competition's metadata files are needed here.
    """

    name: str

    def run(self, job: KernelRun) -> Path:
        """Run `job` to completion; returns the folder holding its outputs (its `/kaggle/working`).

        Raises `IwcError` with what went wrong (and the log's tail) when the kernel fails.
        """
        ...


def kernel_command(kernel_file: str | PurePath, processes: int = 1, python: str = sys.executable) -> list[str]:
    """The command that runs a kernel file: `python FILE` (`processes` 1, or 0 for a CPU run), or with
    `processes` > 1 torchrun starting that many copies of it on this machine (DDP training, one GPU each)."""
    if processes < 0:
        raise IwcError(f"--gpus {processes}: give 0 (CPU) or more")
    if processes <= 1:
        return [python, str(kernel_file)]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            str(kernel_file)]
