"""`iwc weights save`: fetch timm's pretrained weights once, where a model hub is reachable, into one local
safetensors file that `weights_file` in a recipe then loads offline (e.g. attached as a Kaggle dataset)."""

from __future__ import annotations

from pathlib import Path

import timm
from safetensors.torch import save as safetensors_bytes

from iwc.errors import IwcError
from iwc.io import atomic_write
from iwc.train.model import hub_model


def save_pretrained(arch: str, out: Path) -> int:
    """Write `arch`'s pretrained state dict (classifier head included) to `out` (.safetensors) atomically;
    return the file size in bytes. `IwcError` for an unknown arch, a bad `out` or an unreachable hub."""
    if not timm.is_model(arch):
        raise IwcError(f"--arch {arch!r} is not a timm architecture; see timm.list_models()")
    if out.suffix != ".safetensors":
        raise IwcError(f"--out {out}: the file name must end in .safetensors (the format weights_file reads)")
    if out.is_dir():
        raise IwcError(f"--out {out} is a directory; pass a file name ending in .safetensors")
    state = {name: t.detach().contiguous().clone() for name, t in hub_model(arch).state_dict().items()}
    data = safetensors_bytes(state, metadata={"arch": arch, "source": "timm pretrained"})
    try:
        with atomic_write(out, "wb") as f:
            f.write(data)
    except OSError as e:
        raise IwcError(f"cannot write {out}: {e.strerror or e}; choose a writable folder with free space") from e
    return len(data)
