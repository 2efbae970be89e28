"""One run at a time: an exclusive lock on a run folder, held while `reproduce` works in it.

The lock is an OS file lock (`filelock`) on `<run>/.lock`: the OS releases it when its holder dies, so a
lock left by a killed process is simply taken over. Who holds it (pid, host, start time) is written beside
it, to `<run>/lock.json`, for the message a second process gets; a `lock.json` still there when the lock is
taken means the previous holder ended without releasing it (killed), which is said and then overwritten.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from iwc.errors import IwcError
from iwc.io import read_json_object, write_json

LOCK_FILE = ".lock"
HOLDER_FILE = "lock.json"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block (creating the folder); `IwcError` at once if another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = read_json_object(run_dir / HOLDER_FILE)
        pid = holder.get("pid")
        stop = f"stop it (kill {pid})" if pid else "stop it"
        raise IwcError(f"run folder {run_dir} is in use by {describe(holder)}: wait for that run to finish, "
                       f"{stop}, or pass another --run") from None
    try:
        previous = read_json_object(run_dir / HOLDER_FILE)
        if previous:
            print(f"{run_dir}: taking over the lock of {describe(previous)}, which ended without releasing it")
        write_json(run_dir / HOLDER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
        yield
    finally:
        (run_dir / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()


def describe(holder: dict) -> str:
    """'pid 123 on host h (started ...)' from a holder record; what is known when parts are missing."""
    if not holder.get("pid"):
        return "another process"
    return f"pid {holder['pid']} on host {holder.get('host', '?')} (started {holder.get('started', '?')})"
