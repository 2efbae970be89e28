"""The device a model trains on, as its recipe declares it (`Model.device`: "cuda" | "cpu" | "auto").

`check_device(m, name)` runs first in a model kernel, before any data is read: a model that needs CUDA gets a
device that exists AND runs a small convolution in the recipe's AMP dtype, or the kernel stops with one line
naming what it found and what to do. `model_device(m)`: the device to train on ("cpu" forces the CPU, "auto" and
"cuda" take this process's GPU when there is one). `gpu_count()`: the GPUs a kernel counts (`$IWC_FAKE_GPUS` on a
machine without CUDA, for tests only); `device_name(dev)`: what a manifest calls a device.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from iwc.errors import IwcError
from iwc.recipe import Model
from iwc.train import distributed
from iwc.train.model import autocast

GPU_SHAPE = "NvidiaTeslaT4"  # a Kaggle machine shape whose GPUs current torch builds run (a P100, sm_60, fails)
FAKE_GPUS_ENV = "IWC_FAKE_GPUS"  # tests only: how many GPUs a machine without CUDA pretends to have


def gpu_count() -> int:
    """The CUDA devices this process sees; without CUDA, `$IWC_FAKE_GPUS` (a test's stand-in, trained on with gloo
    on the CPU) or 0."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    fake = os.environ.get(FAKE_GPUS_ENV, "").strip()
    return int(fake) if fake.isdigit() else 0


def device_name(dev: torch.device) -> str:
    """`dev` for a manifest: "cpu", or "cuda:<index> <name>" (e.g. "cuda:1 Tesla T4")."""
    if dev.type != "cuda":
        return dev.type
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


def model_device(m: Model) -> torch.device:
    """The CPU for `device = "cpu"`, else this process's device (its GPU when there is CUDA)."""
    return torch.device("cpu") if m.device == "cpu" else distributed.device()


def check_device(m: Model, name: str) -> torch.device:
    """`model_device(m)`, checked: for `device = "cuda"`, `IwcError` (one line) when there is no CUDA device or
    this torch build cannot run a convolution on it in the AMP dtype."""
    dev = model_device(m)
    if m.device != "cuda":
        return dev
    cpu_run = f"or pass --set {name}.device=cpu for a deliberate CPU run (far slower)"
    if dev.type != "cuda":
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise IwcError(f"model {name!r} needs a CUDA GPU (device = \"cuda\") and this machine has none (torch "
                       f"{torch.__version__}, {build}, found only the CPU): run it on a GPU machine (Kaggle: "
                       f"machine_shape {GPU_SHAPE}), {cpu_run}")
    try:
        probe_convolution(dev)
    except RuntimeError as e:
        gpu, (major, minor) = torch.cuda.get_device_name(dev), torch.cuda.get_device_capability(dev)
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IwcError(f"model {name!r}: the GPU {gpu} (sm_{major}{minor}) cannot run this torch build "
                       f"({torch.__version__}, built for {' '.join(torch.cuda.get_arch_list()) or 'no GPU'}): {why}; "
                       f"choose another GPU (Kaggle: machine_shape {GPU_SHAPE}, not a P100), {cpu_run}") from e
    return dev


def probe_convolution(dev: torch.device) -> None:
    """A small convolution forward and backward on `dev` in its AMP dtype; raises what the device raises."""
    conv = nn.Conv2d(3, 8, 3).to(dev)
    x = torch.randn(2, 3, 16, 16, device=dev)
    with autocast(dev):
        y = conv(x)
    y.float().sum().backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
