"""Several processes, one model: torchrun's process group and the few collective steps training needs.

Under `torchrun --nproc-per-node N` (WORLD_SIZE > 1 in the environment) the first helper that needs the
group joins it: gloo on the CPU, NCCL on CUDA with each process on `cuda:LOCAL_RANK`. Without torchrun
every helper is the identity for one process, so single-process code runs exactly as it would without
this module.
"""

from __future__ import annotations

import atexit
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from iwc.errors import IwcError

# Long: the other processes wait at a barrier while rank 0 builds the image caches (an hour on the full data).
TIMEOUT = timedelta(hours=3)


def world_size() -> int:
    """Number of processes in the run: torchrun's WORLD_SIZE, 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def rank() -> int:
    """This process's index in [0, world_size())."""
    return int(os.environ.get("RANK") or 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's index on this machine: the CUDA device it uses."""
    return int(os.environ.get("LOCAL_RANK") or 0) if world_size() > 1 else 0


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0; the only process without torchrun)."""
    return rank() == 0


def device() -> torch.device:
    """This process's device: `cuda:LOCAL_RANK` when there is CUDA, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank()) if world_size() > 1 else torch.device("cuda")


def init() -> None:
    """Join torchrun's process group unless already in it; nothing on one process."""
    if world_size() == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        if local_rank() >= torch.cuda.device_count():
            raise IwcError(f"{os.environ.get('LOCAL_WORLD_SIZE', world_size())} processes per machine but only "
                           f"{torch.cuda.device_count()} CUDA device(s): run with --gpus {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device())
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    atexit.register(cleanup)


def cleanup() -> None:
    """Leave the process group (registered at exit by `init`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() > 1:
        init()
        dist.barrier(device_ids=[local_rank()] if torch.cuda.is_available() else None)


@contextmanager
def main_first() -> Iterator[None]:
    """Run the body on rank 0 first, then on the others: rank 0 builds (a cache, crops), the others
    find it built and reuse it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The sum of each value over all processes; one process gets `values` back unchanged."""
    if world_size() == 1:
        return list(values)
    init()
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return t.tolist()


def all_gather(obj: object) -> list:
    """Every process's `obj` (picklable), in rank order."""
    if world_size() == 1:
        return [obj]
    init()
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics: each process last updated
    them from its own shard of a batch)."""
    if world_size() == 1:
        return
    init()
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def wrap(model: nn.Module) -> nn.Module:
    """`model` under DistributedDataParallel (gradients averaged over the processes at each backward);
    the model itself on one process. Wrap after freezing: only parameters that train then are synced."""
    if world_size() == 1:
        return model
    init()
    if not torch.cuda.is_available():
        # On the CPU the parameters stay contiguous while the inputs are channels-last, so 1x1 convolutions
        # get gradients with other (equivalent) strides than DDP's buckets: a harmless warning per process.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(model)
    return DistributedDataParallel(model, device_ids=[local_rank()])


def shard(batch: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, int]:
    """This process's part of a global batch of indexes, and how many of them count.

    Near-equal contiguous parts, larger ones first. A batch smaller than `world` leaves some processes
    without an image: they get the batch's first index to keep the collective steps in step, with a
    count of 0 (their loss weighs nothing).
    """
    mine = np.array_split(batch, world)[rank]
    return (mine, len(mine)) if len(mine) else (batch[:1], 0)


def part_range(n: int) -> slice:
    """This process's contiguous part of `n` rows (validation is split this way); all rows on one process."""
    world, r = world_size(), rank()
    return slice(n * r // world, n * (r + 1) // world)


class Part:
    """Rows [start, stop) of an image array or view, read lazily: `len()` and contiguous slices."""

    def __init__(self, images: Sequence, rows: slice) -> None:
        self.images, self.start, self.stop = images, rows.start, rows.stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("Part supports contiguous slices only")
        return self.images[self.start + start:self.start + stop]


def my_part(images: Sequence) -> Sequence:
    """This process's rows of `images` (see `part_range`); `images` itself on one process."""
    return images if world_size() == 1 else Part(images, part_range(len(images)))
