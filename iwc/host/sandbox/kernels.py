"""The sandbox's kernels: pushed versions, run for real in a Kaggle-shaped folder layout.

Each push (`KernelStore.save`) makes version N of `owner/slug` under `<root>/<owner>/<slug>/v<N>/`: the
pushed source, `input/` (the attached sources mounted as symlinks, as `iwc.host.backends.local` does),
`working/` (its `/kaggle/working`, served as its outputs), `scratch/`, `tmp/` and `log.txt`. A thread runs
it with this Python: QUEUED -> RUNNING -> COMPLETE, or ERROR when it exits non-zero (or a fault says so).
A session that runs past its limit (12 h, the push's `sessionTimeoutSeconds`, or the `session_limit` fault's
seconds) is killed, ends in ERROR and, as on Kaggle, keeps no output: its working folder is emptied.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from iwc.host.backends.local import mount_inputs
from iwc.host.sandbox.faults import Faults
from iwc.io import write_text
from iwc.layout import INPUT_ENV, SCRATCH_ENV, WORKING_ENV

FINISHED = ("COMPLETE", "ERROR")
SESSION_LIMIT_S = 12 * 3600  # Kaggle's session limit, unless the push asks for less (`kernels push --timeout`)


@dataclass
class Version:
    """One pushed version of a kernel and its run."""

    owner: str
    slug: str
    number: int
    request: dict[str, Any]  # the SaveKernel body, as sent
    folder: Path
    status: str = "QUEUED"
    failure: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)  # Kaggle log entries: stream_name, time, data

    @property
    def working(self) -> Path:
        return self.folder / "working"

    def log_text(self) -> str:
        """The log as Kaggle serves it: a JSON array, one entry per line, continuation lines start with ','."""
        return "[" + "\n,".join(json.dumps(entry) for entry in self.log) + "]" if self.log else ""


class KernelStore:
    """Every kernel pushed to one sandbox. `mounts(request)` says which input folders a version gets."""

    def __init__(self, root: Path, faults: Faults) -> None:
        self.root = root
        self.faults = faults
        self._versions: dict[tuple[str, str], list[Version]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._procs: set[subprocess.Popen] = set()
        self._stopping = threading.Event()

    def exists(self, owner: str, slug: str) -> bool:
        with self._lock:
            return (owner, slug) in self._versions

    def push(self, owner: str, slug: str, request: dict[str, Any], mounts: dict[str, Path]) -> Version:
        """Store a new version of `owner/slug` and start running it with `mounts` attached."""
        with self._lock:
            versions = self._versions.setdefault((owner, slug), [])
            number = len(versions) + 1
            version = Version(owner, slug, number, request, self.root / owner / slug / f"v{number}")
            versions.append(version)
        version.folder.mkdir(parents=True, exist_ok=True)
        write_text(version.folder / "script.py", request.get("text", ""))
        thread = threading.Thread(target=self._run, args=(version, mounts), daemon=True,
                                  name=f"kernel {owner}/{slug} v{number}")
        self._threads.append(thread)
        thread.start()
        return version

    def find(self, owner: str, slug: str, label: str = "") -> Version | None:
        """Version `label` (`v<N>`; "" = the latest) of `owner/slug`, or None."""
        with self._lock:
            versions = list(self._versions.get((owner, slug), []))
        if not label:
            return versions[-1] if versions else None
        if label.startswith("v") and label[1:].isdigit() and 0 < int(label[1:]) <= len(versions):
            return versions[int(label[1:]) - 1]
        return None

    def latest_complete(self, owner: str, slug: str) -> Version | None:
        with self._lock:
            done = [v for v in self._versions.get((owner, slug), []) if v.status == "COMPLETE"]
        return done[-1] if done else None

    def stop(self) -> None:
        """Kill the kernels still running and wait for their threads."""
        self._stopping.set()
        for proc in list(self._procs):
            _kill(proc)
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, version: Version, mounts: dict[str, Path]) -> None:
        start = time.monotonic()
        version.status = "RUNNING"
        slow = self.faults.take("slow_kernel", version.slug)
        if slow is not None and self._stopping.wait(float(slow["seconds"])):
            return
        try:
            input_dir = mount_inputs(mounts, version.folder / "input")
        except Exception as e:  # an unusable mount is the kernel's failure, as on Kaggle
            version.log.append({"stream_name": "stderr", "time": 0.0, "data": f"{e}\n"})
            version.failure, version.status = str(e), "ERROR"
            return
        folders = {name: version.folder / name for name in ("working", "scratch", "tmp")}
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and "PROXY" not in k.upper()}
        env.update({INPUT_ENV: str(input_dir), WORKING_ENV: str(folders["working"]),
                    SCRATCH_ENV: str(folders["scratch"]), "TMPDIR": str(folders["tmp"]),
                    "KAGGLE_KERNEL_RUN_TYPE": "Batch", "PYTHONUNBUFFERED": "1"})
        limit = float(version.request.get("sessionTimeoutSeconds") or SESSION_LIMIT_S)
        killed = self.faults.take("session_limit", version.slug)
        if killed is not None:
            limit = min(limit, float(killed["seconds"]))
        returncode, timed_out = self._execute(version, env, start, limit)
        failed = self.faults.take("kernel_error", version.slug)
        if timed_out:
            shutil.rmtree(version.working, ignore_errors=True)  # a killed session keeps nothing
            version.working.mkdir()
            version.failure = (f"Kernel ran past its session limit of {limit:g} s and was stopped; a session "
                               "stopped at its limit keeps no output")
        elif returncode:
            version.failure = f"Kernel exited with code {returncode}; see the log"
        elif failed is not None:
            version.failure = failed["message"]
            version.log.append({"stream_name": "stderr", "time": round(time.monotonic() - start, 3),
                                "data": failed["message"] + "\n"})
        version.status = "ERROR" if returncode or failed is not None else "COMPLETE"

    def _execute(self, version: Version, env: dict[str, str], start: float, limit: float) -> tuple[int, bool]:
        """Run the version's script for at most `limit` seconds; its stdout and stderr become log entries (also
        in log.txt). Returns the exit code and whether the limit stopped it."""
        with open(version.folder / "log.txt", "w", encoding="utf-8") as log, subprocess.Popen(
            [sys.executable, str(version.folder / "script.py")], cwd=version.working, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        ) as proc:
            self._procs.add(proc)
            timer = threading.Timer(limit, _kill, args=(proc,))
            timer.start()
            lock = threading.Lock()
            readers = [threading.Thread(target=_read_stream, args=(stream, name, version, log, lock, start))
                       for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join()
            returncode = proc.wait()
            timed_out = not timer.is_alive() and not self._stopping.is_set()
            timer.cancel()
            self._procs.discard(proc)
        return returncode, timed_out and returncode != 0


def _kill(proc: subprocess.Popen) -> None:
    """Kill the kernel and every process it started (its session), so none holds the log pipes open."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _read_stream(stream: IO[bytes], name: str, version: Version, log: IO[str], lock: threading.Lock,
                 start: float) -> None:
    for raw in stream:
        text = raw.decode("utf-8", errors="replace")
        with lock:
            version.log.append({"stream_name": name, "time": round(time.monotonic() - start, 3), "data": text})
            log.write(text)
            log.flush()
