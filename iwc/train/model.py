"""Networks from timm: create with hub, local or random weights; freeze the body; discriminative lr groups.

Also how a network runs on a device (`place`, `autocast`): channels-last and mixed precision on CUDA only,
plain float32 on the CPU so CPU runs stay bit-exact.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import timm
import torch
from timm.models import group_parameters
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from iwc.errors import IwcError
from iwc.recipe import Model


def create_model(m: Model, num_classes: int) -> nn.Module:
    """A timm `m.arch` with a `num_classes` head: weights from `m.weights_file` when set, else timm's hub
    when `m.pretrained`, else random. The head is freshly initialized unless the file's head fits it."""
    if not timm.is_model(m.arch):
        raise IwcError(f"model.arch {m.arch!r} is not a timm architecture; see timm.list_models()")
    if m.weights_file:
        model = timm.create_model(m.arch, pretrained=False, num_classes=num_classes)
        load_weights(model, m.weights_file)
        return model
    try:
        return timm.create_model(m.arch, pretrained=m.pretrained, num_classes=num_classes)
    except OSError as e:  # hub unreachable (offline kernel) or weights not cached
        raise IwcError(
            f"cannot download pretrained {m.arch!r} weights from the timm hub ({e}); attach them as a dataset "
            "and set model.weights_file to the file, or set model.pretrained=false"
        ) from e


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict or checkpoint (`.pt`/`.pth`/`.bin`/`.safetensors`) into `model`.

    Classifier-head tensors whose shape differs from the model's are dropped (the head keeps its fresh
    init); any other missing, unexpected or mis-shaped key is an IwcError.
    """
    path = Path(path)
    if not path.is_file():
        raise IwcError(f"weights file {path} does not exist; attach it or fix model.weights_file")
    state = _read_state_dict(path)
    own = model.state_dict()
    head = _head_name(model) + "."
    head_keys = {k for k in own if k.startswith(head)}
    state = {k: v for k, v in state.items() if not (k in head_keys and v.shape != own[k].shape)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch outside the head
        raise IwcError(f"weights file {path} does not fit this architecture: {e}") from e
    bad = [k for k in result.missing_keys if k not in head_keys] + list(result.unexpected_keys)
    if bad:
        raise IwcError(
            f"weights file {path} does not fit this architecture: {len(bad)} missing/unexpected key(s), "
            f"e.g. {bad[:5]}; check that model.arch matches the weights"
        )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a plain state dict, a {"model"|"state_dict": ...} checkpoint or safetensors."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # every reader has its own error types for a damaged or foreign file
        raise IwcError(f"cannot read weights file {path} ({e}); it must be a torch state dict or safetensors") from e
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IwcError(f"weights file {path} holds no state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _head_name(model: nn.Module) -> str:
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)


def set_frozen(model: nn.Module, frozen: bool) -> None:
    """Frozen: only the classifier head and BatchNorm layers train (fastai's `train_bn`: BN statistics and
    affine parameters keep adapting to the new data while the pretrained filters stay fixed).
    Not frozen: everything trains."""
    for module in model.modules():
        trainable = not frozen or isinstance(module, _BatchNorm)
        for p in module.parameters(recurse=False):
            p.requires_grad_(trainable)
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Every parameter once, in three groups as fastai splits a ResNet: stem + early stages, late stages,
    classifier head. The body's stages come from timm's coarse `group_matcher` and are halved in order."""
    head = list(model.get_classifier().parameters())
    head_ids = {id(p) for p in head}
    grouped = group_parameters(model, model.group_matcher(coarse=True), return_values=True)
    units = [[p for p in params if id(p) not in head_ids] for _, params in sorted(grouped.items())]
    units = [u for u in units if u]
    half = (len(units) + 1) // 2
    body = [[p for u in units[:half] for p in u], [p for u in units[half:] for p in u]]
    return [g for g in body if g] + [head]


def param_groups(model: nn.Module, lr_lo: float, lr_hi: float) -> list[dict]:
    """Optimizer parameter groups with learning rates spread geometrically from `lr_lo` (stem) to `lr_hi`
    (head), fastai's slice(lo, hi); lo == hi gives one rate everywhere."""
    if not (lr_lo > 0 and lr_hi > 0):
        raise IwcError(f"learning rates must be positive, got lr_lo={lr_lo}, lr_hi={lr_hi}; fix the recipe stage")
    groups = layer_groups(model)
    last = max(len(groups) - 1, 1)
    return [{"params": g, "lr": lr_lo * (lr_hi / lr_lo) ** (i / last)} for i, g in enumerate(groups)]


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move `model` to `device`; channels-last memory on CUDA, where convolutions run faster that way."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bfloat16 on CUDA GPUs that have it natively, float16 on older ones (a T4), None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes on `device` (a no-op on CPU)."""
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
