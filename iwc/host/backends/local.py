"""Run a generated kernel file somewhere other than Kaggle, in a Kaggle-shaped folder layout.

`run_local` runs the exact kernel file that would be pushed, with this Python, in a subprocess. Its
inputs are symlinks under `<work_dir>/input` (the kernel's `/kaggle/input`), its outputs go to
`<work_dir>/working` (its `/kaggle/working`); `iwc.layout` finds both through `IWC_INPUT_ROOT` and
`IWC_WORKING_DIR`.

A failed kernel's error is shown once, quoting the user's folders rather than the mounts: see `run_streamed`.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from iwc.errors import IwcError
from iwc.host.backends.base import Backend, KernelRun
from iwc.host.logtext import meaningful
from iwc.layout import INPUT_ENV, WORKING_ENV
from iwc.train.launch import kernel_command

ERROR_PREFIX = "error: "  # how a kernel prints an IwcError before it exits 2 (the bootstrap in iwc.host.bundle)
ERROR_EXIT = 2
STOP_GRACE_S = 5.0  # a kernel stopped by an interrupt gets this long to clean up before it is killed


class LocalBackend(Backend):
    """Runs each kernel here, in a subprocess of this Python, in a Kaggle-shaped folder layout."""

    name = "local"

    def run(self, job: KernelRun) -> Path:
        cpu = {} if job.gpu or not job.spec.gpu else {"CUDA_VISIBLE_DEVICES": ""}  # --gpus 0: no GPU visible
        return run_local(job.kernel_file, job.inputs, job.stage_dir, log_path=job.log_path, env={**job.env, **cpu},
                         processes=job.processes)


def run_local(
    kernel_file: Path,
    inputs: dict[str, Path],
    work_dir: Path,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    processes: int = 1,
) -> Path:
    """Run `kernel_file` with `inputs` mounted; returns its working dir (`<work_dir>/working`).

    `inputs` maps a mount name under the input root (e.g. `competitions/iwildcam-2020-fgvc7`,
    `iwildcam2020-256`, `notebooks/<owner>/<slug>`) to a real folder. The kernel's output (stdout and
    stderr together) streams to the console and is appended to `log_path`. `env` adds environment
    variables. `processes` > 1 runs it under torchrun (`kernel_command`). Raises `IwcError` when the
    kernel fails (see `run_streamed`).
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
    paths = {str(input_dir.joinpath(*PurePosixPath(name).parts)): Path(folder) for name, folder in inputs.items()}
    run_streamed(kernel_command(kernel_file, processes), child_env, working, log_path, kernel_file.name, paths)
    return working


def mount_inputs(inputs: dict[str, Path], input_dir: Path) -> Path:
    """Recreate `input_dir` holding one symlink per mount name, pointing at the real folder."""
    names = check_mounts(inputs)
    _unmount(input_dir)
    input_dir.mkdir(parents=True)
    for parts, folder in sorted(names.items()):
        link = input_dir.joinpath(*parts)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder, target_is_directory=True)
    return input_dir


def check_mounts(inputs: dict[str, Path]) -> dict[tuple[str, ...], Path]:
    """`{mount name's path parts: resolved folder}`; raises `IwcError` for a name that is not a relative
    path, a folder that does not exist, or two mounts of which one lies inside the other."""
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
    return names


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


def run_streamed(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path | None, kernel: str,
                 paths: Mapping[str, Path] | None = None) -> None:
    """Run the command that runs `kernel` (its file name), streaming its output to the console and the log.

    The log is appended to, so a resumed stage keeps its earlier attempts. When the kernel stops on an
    `IwcError` (its `error: ...` lines, then exit code 2), those lines are kept off the console and raised
    as this `IwcError`, so the message shows once; `paths` maps folders as the kernel sees them (its input
    mounts) to the user's own folders, which the message quotes instead. Any other failure raises an
    `IwcError` with the exit code and the kernel's last line (the output above it shows the rest).
    """
    returncode, last, error = _stream(cmd, env, cwd, log_path)
    if not returncode:
        return
    log = f" (kernel log: {log_path})" if log_path else ""
    if error:
        raise IwcError(user_paths("\n".join(error).removeprefix(ERROR_PREFIX), paths or {}) + log)
    raise IwcError(f"kernel {kernel} failed with exit code {returncode}: {user_paths(last, paths or {})}{log}; "
                   "the lines above it show the rest")


def user_paths(text: str, paths: Mapping[str, Path]) -> str:
    """`text` with each folder as a kernel sees it (a key of `paths`) replaced by the user's folder."""
    for seen in sorted(paths, key=len, reverse=True):  # longest first: a mount inside another stays exact
        text = text.replace(seen, str(paths[seen]))
    return text


def _stream(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path | None) -> tuple[int, str, list[str]]:
    """Run `cmd`, copying its output to the console and the log as it comes; never leaves it running.

    Output is read in chunks and cut into lines at "\n" and at "\r" (a progress bar's redraw): the console
    gets each redraw in place, the log one line per redraw (a kernel's bars redraw every TQDM_MININTERVAL
    seconds), a redraw still waiting for its line end included. Returns what `_Relay.result` does.
    """
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # The log is written as it comes (not atomically): a running kernel's log should be readable.
    with open(log_path or os.devnull, "a", encoding="utf-8") as log, subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        relay, lines = _Relay(log), _Lines()
        try:
            while True:
                data = os.read(proc.stdout.fileno(), _CHUNK)
                for line, end in lines.feed(data):
                    relay.line(line, end)
                if not data:
                    break
                if lines.redraw:  # a bar drawn after "\r" that the next redraw will end: show it now
                    relay.redraw(lines.rest)
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C, or an error here) while the kernel still runs
                _stop(proc)
            returncode = proc.wait()
    return relay.result(returncode)


_CHUNK = 65536
_LINE_END = re.compile(r"\r\n?|\n")


class _Lines:
    """Cuts a byte stream into (line, end) pairs, end "\n" or "\r" ("\r\n" is one "\n"); UTF-8, bad bytes
    replaced. `rest` is the text after the last line end; `redraw` says it follows a "\r"."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.rest, self.after_cr, self.redraw = "", False, False

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """The lines that `data` completes; empty `data` is the end of the stream (the rest is a last line)."""
        text = self.decoder.decode(data, final=not data)
        if self.after_cr and text.startswith("\n"):  # a "\r\n" cut between two chunks
            text = text[1:]
        if text:
            self.after_cr = False
        text, pos, out = self.rest + text, 0, []
        for m in _LINE_END.finditer(text):
            out.append((text[pos:m.start()], "\r" if m.group() == "\r" else "\n"))
            pos = m.end()
        if out and text:
            self.after_cr = text.endswith("\r")
            self.redraw = out[-1][1] == "\r"
        self.rest = text[pos:]
        if not data and self.rest:
            out.append((self.rest, "\n"))
            self.rest = ""
        return out


class _Relay:
    """Where a kernel's lines go: the log and the console, its error held back (see `result`)."""

    def __init__(self, log: IO[str]) -> None:
        self.log, self.last, self.held, self.repeat, self.shown = log, "", [], [], ""

    def redraw(self, text: str) -> None:
        """A redraw not yet ended (`text` grows until it ends): to the console and the log now, once."""
        if self.held or text == self.shown or text.startswith(ERROR_PREFIX) or ERROR_PREFIX.startswith(text):
            return
        _echo(text[len(self.shown):])
        self._log(text[len(self.shown):])
        self.shown = text

    def line(self, line: str, end: str) -> None:
        """One whole line, ended by "\n" or "\r"; what `redraw` showed of it already is not shown again."""
        shown, self.shown = self.shown, ""
        line = line[len(shown):]
        if shown and not line:
            _echo(end)
            return
        if line or end == "\n":
            self._log(line)
        self.last = line if meaningful([line]) else self.last
        if self.repeat and line == self.repeat[0]:  # the rest of a repeated error
            self.repeat.pop(0)
            return
        self.repeat = []
        if self.held and line == self.held[0]:  # under torchrun each process prints the error it stopped on: once
            self.repeat = self.held[1:]
            return
        if line.startswith(ERROR_PREFIX):  # an earlier error line was not the end: show it after all
            _echo("".join(f"{h}\n" for h in self.held))
            self.held = []
        if self.held or line.startswith(ERROR_PREFIX):
            self.held.append(line)
        else:
            _echo(line + end)  # keeps "\r": progress bars redraw in place

    def _log(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()

    def result(self, returncode: int) -> tuple[int, str, list[str]]:
        """The exit code, the last meaningful line (no progress bar), and the kernel's error lines when it
        stopped on an `IwcError` (else []). Lines from the last one starting with `ERROR_PREFIX` on are held
        back from the console: they are that error when the kernel then exits with `ERROR_EXIT`, and are shown
        otherwise. The same error printed again (by another process of a torchrun job) is that error once:
        logged, not repeated."""
        if returncode != ERROR_EXIT:
            _echo("".join(f"{h}\n" for h in self.held))
            self.held = []
        return returncode, self.last, self.held


def _echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _stop(proc: subprocess.Popen) -> None:
    """End a running kernel: an interrupt first, so that its exit handlers remove its temporary files, then,
    if it is still running after `STOP_GRACE_S` (or a second Ctrl-C comes), a kill."""
    try:
        if os.name == "posix":
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
