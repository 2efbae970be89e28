"""Every GPU a model kernel sees: started as one process where it should train in N > 1, a kernel starts
itself again under torchrun, N processes (one per GPU), and exits as they do.

A real Kaggle kernel can only count its devices, so it counts them (`device.gpu_count`); `$IWC_PROCESSES` fixes
the number instead (the kernel's bootstrap sets it from the `--gpus` the kernel was generated with). Only a
kernel restarts itself (its bootstrap names its file in `$IWC_KERNEL_FILE`): `iwc stage` runs in its own process.
`kernel_command` is the one way a kernel file is started under torchrun, by a host backend or by the kernel.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import PurePath

from iwc.errors import IwcError
from iwc.recipe import Model

PROCESSES_ENV = "IWC_PROCESSES"  # training processes of a model kernel; unset: one per GPU it counts
KERNEL_FILE_ENV = "IWC_KERNEL_FILE"  # set by a kernel's bootstrap: the file to start again under torchrun

log = logging.getLogger(__name__)

# torchrun, exiting as its processes do: a process's exit code (2 after its `error:` line) is torchrun's own, where
# plain torchrun turns any failure into 1 and prints a ChildFailedError traceback and log lines after the error
# (its logs are silenced; the processes print their own output and tracebacks); stopped by a signal (Ctrl-C), it
# stops its processes and exits 128 + the signal, without a SignalException traceback. Plain Python code, not a
# module of iwc: the Docker image runs it with no iwc installed.
TORCHRUN = """\
import logging, sys
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run
logging.getLogger("torch.distributed").handlers = [logging.NullHandler()]
try:
    run(parse_args(sys.argv[1:]))
except SignalException as e:
    sys.exit(128 + int(e.sigval))
except ChildFailedError as e:
    rank, failure = e.get_first_failure()
    code = failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode
    if code != 2:
        print(f"torchrun: the process of rank {rank} ended with exit code {failure.exitcode}", file=sys.stderr)
    sys.exit(code)
"""


def kernel_command(kernel_file: str | PurePath, processes: int | None = 1, python: str = sys.executable) -> list[str]:
    """The command that runs a kernel file: `python FILE` (`processes` 1, 0 for a CPU run, or None: the kernel
    decides, see `processes_wanted`), or with `processes` > 1 torchrun starting that many copies of it on this
    machine (DDP training, one GPU each; see `TORCHRUN`)."""
    if processes is not None and processes < 0:
        raise IwcError(f"--gpus {processes}: give 0 (CPU) or more")
    if processes is None or processes <= 1:
        return [python, str(kernel_file)]
    return [python, "-c", TORCHRUN, "--standalone", "--nproc-per-node", str(processes), str(kernel_file)]


def processes_wanted(m: Model) -> int:
    """How many processes this process should train `m` in: 1 when it is one of a torchrun job already or is
    no kernel (`$IWC_KERNEL_FILE` unset); else `$IWC_PROCESSES` when set; else 1 for `device = "cpu"`, and one
    per GPU it counts (at least 1) otherwise."""
    # Imported here, as torch is: the host imports this module for `kernel_command` and the variables' names.
    from iwc.train import device, distributed

    if distributed.world_size() > 1 or not os.environ.get(KERNEL_FILE_ENV):
        return 1
    asked = os.environ.get(PROCESSES_ENV, "").strip()
    if asked:
        if not asked.isdigit():
            raise IwcError(f"${PROCESSES_ENV} is {asked!r}: give a number of training processes (0 or 1: one)")
        return max(int(asked), 1)
    return 1 if m.device == "cpu" else max(device.gpu_count(), 1)


def train_on_every_gpu(m: Model, name: str) -> None:
    """Return at once when this process is to train `m` itself (`processes_wanted` 1); else start this kernel
    again under torchrun with that many processes and exit with their exit code."""
    from iwc.train import device, distributed  # as in processes_wanted

    processes = processes_wanted(m)
    if processes == 1:
        if not os.environ.get(KERNEL_FILE_ENV) and distributed.world_size() == 1 and m.device != "cpu" \
                and device.gpu_count() > 1:  # e.g. `iwc stage`, or a kernel run where its file has no name
            log.warning("%s: trains on one of the %d GPUs it sees: only a kernel file restarts itself under "
                        "torchrun (or start it under torchrun yourself)", name, device.gpu_count())
        return
    log.info("%s: training on %d GPUs: this kernel starts %d processes of itself (torchrun)", name, processes,
             processes)
    sys.exit(run_children(kernel_command(os.environ[KERNEL_FILE_ENV], processes)))


def run_children(cmd: list[str]) -> int:
    """Run `cmd` to its end, passing an interrupt or termination on to it (torchrun then stops its processes);
    its exit code (128 + the signal for one that killed it)."""
    proc = subprocess.Popen(cmd)
    passes = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _frame: proc.send_signal(signum)) for s in passes}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code if code >= 0 else 128 - code
