"""What every backend does: run one generated kernel with its inputs and hand back its outputs folder.

The pipeline only talks to this protocol; `local`, `kaggle` and `docker` implement it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from iwc.stages import StageSpec


@dataclass(frozen=True)
class KernelRun:
    """One kernel to run.

    `kernel_dir` holds the generated script and its `kernel-metadata.json`. `inputs` maps a mount name
    under the kernel's input root (`competitions/<slug>`, `datasets/<owner>/<slug>`,
    `notebooks/<owner>/<slug>`) to a local folder: the backends that run here mount them; Kaggle attaches
    the sources named in the metadata instead. `stage_dir` is this stage's folder in the run (log,
    outputs, backend state); `env` adds environment variables where the backend runs the kernel here.
    """

    spec: StageSpec
    kernel_dir: Path
    inputs: dict[str, Path]
    stage_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kernel_file(self) -> Path:
        return self.kernel_dir / self.spec.code_file

    @property
    def log_path(self) -> Path:
        return self.stage_dir / "log.txt"


class Backend(Protocol):
    """Runs kernels somewhere: this machine, a Docker container, Kaggle."""

    name: str

    def run(self, job: KernelRun) -> Path:
        """Run `job` to completion; returns the folder holding its outputs (its `/kaggle/working`).

        Raises `IwcError` with what went wrong (and the log's tail) when the kernel fails.
        """
        ...
