"""Run a generated kernel file somewhere other than Kaggle, in a Kaggle-shaped folder layout.

`run_local` runs the exact kernel file that would be pushed, with this Python, in a subprocess. Its
inputs are symlinks under `<work_dir>/input` (the kernel's `/kaggle/input`), its outputs go to
`<work_dir>/working` (its `/kaggle/working`); `iwc.layout` finds both through `IWC_INPUT_ROOT` and
`IWC_WORKING_DIR`.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

from iwc.errors import IwcError
from iwc.host.backends.base import KernelRun
from iwc.layout import INPUT_ENV, WORKING_ENV

TAIL_LINES = 30  # log lines quoted when a kernel fails


class LocalBackend:
    """Runs each kernel here, in a subprocess of this Python, in a Kaggle-shaped folder layout."""

    name = "local"

    def run(self, job: KernelRun) -> Path:
        return run_local(job.kernel_file, job.inputs, job.stage_dir, log_path=job.log_path, env=job.env)


def run_local(
    kernel_file: Path,
    inputs: dict[str, Path],
    work_dir: Path,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Run `kernel_file` with `inputs` mounted; returns its working dir (`<work_dir>/working`).

    `inputs` maps a mount name under the input root (e.g. `competitions/iwildcam-2020-fgvc7`,
    `iwildcam2020-256`, `notebooks/<owner>/<slug>`) to a real folder. The kernel's output (stdout and
    stderr together) streams to the console and to `log_path`. `env` adds environment variables.
    Raises `IwcError` with the exit code and the last lines of the log when the kernel fails.
    """
    kernel_file = Path(kernel_file).resolve()
    if not kernel_file.is_file():
        raise IwcError(f"kernel file {kernel_file} does not exist: build the kernels first")
    work_dir = Path(work_dir).resolve()
    input_dir = mount_inputs(inputs, work_dir / "input")
    working = work_dir / "working"
    working.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {}), INPUT_ENV: str(input_dir), WORKING_ENV: str(working),
                 "PYTHONUNBUFFERED": "1"}
    returncode, tail = _stream([sys.executable, str(kernel_file)], child_env, working, log_path)
    if returncode:
        where = f"; full log: {log_path}" if log_path else ""
        raise IwcError(f"kernel {kernel_file.name} failed with exit code {returncode}{where}. Last lines:\n"
                       + "\n".join(tail))
    return working


def mount_inputs(inputs: dict[str, Path], input_dir: Path) -> Path:
    """Recreate `input_dir` holding one symlink per mount name, pointing at the real folder."""
    names = {}
    for name, folder in inputs.items():
        parts = PurePosixPath(name).parts
        if not parts or parts[0] == "/" or ".." in parts:
            raise IwcError(f"input mount {name!r} must be a relative path such as "
                           "'competitions/iwildcam-2020-fgvc7'")
        if not Path(folder).is_dir():
            raise IwcError(f"input {name!r}: {folder} is not a folder: download or build it first")
        names[parts] = Path(folder).resolve()
    for a in names:
        for b in names:
            if a != b and b[: len(a)] == a:
                raise IwcError(f"input mounts {'/'.join(a)!r} and {'/'.join(b)!r} overlap: mount one or the other")
    _unmount(input_dir)
    input_dir.mkdir(parents=True)
    for parts, folder in sorted(names.items()):
        link = input_dir.joinpath(*parts)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder, target_is_directory=True)
    return input_dir


def _unmount(input_dir: Path) -> None:
    """Remove an input dir left by an earlier run: only symlinks and folders, never real files."""
    if not input_dir.exists():
        return
    for top, dirs, files in os.walk(input_dir, topdown=False):  # does not descend into symlinks
        for name in dirs + files:
            path = Path(top, name)
            if path.is_symlink():
                path.unlink()
            elif path.is_dir():
                path.rmdir()
            else:
                raise IwcError(f"{input_dir} holds a real file ({path}), not only input mounts: "
                               "choose another work dir or move the file")
    input_dir.rmdir()


def _stream(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path | None) -> tuple[int, list[str]]:
    """Run `cmd`, copying its output line by line to the console and the log; never leaves it running.

    Returns the exit code and the last `TAIL_LINES` lines.
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # The log is written as it comes (not atomically): a running kernel's log should be readable.
    with open(log_path or os.devnull, "w", encoding="utf-8") as log, subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        try:
            for raw in proc.stdout:
                text = raw.decode("utf-8", errors="replace")
                sys.stdout.write(text)  # keeps "\r": progress bars redraw in place
                sys.stdout.flush()
                log.write(text)
                log.flush()
                tail.append(text.rstrip("\r\n").rsplit("\r", 1)[-1])
        finally:
            if proc.poll() is None:  # interrupted while the kernel still runs
                proc.kill()
            returncode = proc.wait()
    return returncode, list(tail)
