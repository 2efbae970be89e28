"""`iwc doctor`: what this environment offers a kernel (the Docker image's smoke test).

`doctor_lines()` -> lines naming the versions of iwc, Python, torch, timm and numpy (as the manifests record
them: `iwc.provenance.runtime`), the CUDA devices, the decoder the crop stage cuts with, and the free disk under
the working dir and the scratch dir. Reports, never fails: a missing folder is measured at its nearest existing parent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from iwc import __version__, layout
from iwc.data import jpeg_region
from iwc.provenance import runtime


def doctor_lines() -> list[str]:
    """The report, one fact a line."""
    import torch  # imported here so that `runtime()` reports its build and the device

    info = runtime()
    lines = [f"iwc {__version__}", *(f"{name} {info[name]}" for name in ("python", "torch", "timm", "numpy"))]
    if torch.cuda.is_available():
        lines.append(f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} device(s)")
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            lines.append(f"  cuda:{index} {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        lines.append(f"CUDA: no device (device {info['device']}; torch built for CUDA {torch.version.cuda or 'none'})")
    lines.append(f"crop decoder: {jpeg_region.decoder()}")
    for label, folder in (("working dir", layout.working_dir()), ("scratch", layout.scratch_dir())):
        lines.append(f"{label} {folder}: {_free_disk(folder)}")
    return lines


def _free_disk(folder: Path) -> str:
    """Free space on the file system that holds `folder` (or its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    where = "" if probe == folder else f" (not created yet; measured at {probe})"
    return f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB{where}"
