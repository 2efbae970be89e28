"""Networks from timm: create with hub, local or random weights; freeze the body; discriminative lr groups.

Also how a network runs on a device (`place`, `autocast`): channels-last and mixed precision on CUDA only,
plain float32 on the CPU so CPU runs stay bit-exact.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import timm
import torch
from timm.models import group_parameters
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from iwc.errors import IwcError
from iwc.recipe import Model

HUB_TIMEOUT_S = 3.0  # an offline kernel fails this fast instead of spending ~50 s in download retries
HF_ENDPOINT = "https://huggingface.co"  # huggingface_hub's default; the HF_ENDPOINT variable overrides it
OFFLINE_HELP = ("set weights_file in the recipe's full/crop section to a local weights file (save one where the "
                "hub is reachable: `iwc weights save --arch {arch} --out FILE.safetensors`; on Kaggle attach it as "
                "a dataset), or train from random init: --set full.pretrained=false --set crop.pretrained=false")


def create_model(m: Model, num_classes: int) -> nn.Module:
    """A timm `m.arch` with a `num_classes` head: weights from `m.weights_file` when set, else timm's hub
    when `m.pretrained`, else random. The head is freshly initialized unless the file's head fits it."""
    if not timm.is_model(m.arch):
        raise IwcError(f"model.arch {m.arch!r} is not a timm architecture; see timm.list_models()")
    if m.weights_file:
        model = timm.create_model(m.arch, pretrained=False, num_classes=num_classes)
        load_weights(model, m.weights_file)
        return model
    if m.pretrained:
        return hub_model(m.arch, num_classes=num_classes)
    return timm.create_model(m.arch, pretrained=False, num_classes=num_classes)


def check_weights_source(m: Model) -> None:
    """In seconds, what `create_model(m, ...)` will need: the weights file exists, or the hub answers when
    `m` is pretrained. Call it before slow work (caching images, cutting crops) so an offline run fails first."""
    if m.weights_file and not Path(m.weights_file).is_file():
        raise IwcError(f"weights file {m.weights_file} does not exist; attach it or fix model.weights_file")
    if m.pretrained and not m.weights_file:
        require_hub(m.arch)


def hub_model(arch: str, **kwargs) -> nn.Module:
    """timm's `arch` with its pretrained weights (kwargs go to `timm.create_model`); an `IwcError` saying what
    to do, within seconds, when the weights cannot be fetched."""
    require_hub(arch)
    try:
        return timm.create_model(arch, pretrained=True, **kwargs)
    except OSError as e:  # hub reachable but the download failed, or weights not cached
        raise IwcError(f"cannot download pretrained {arch!r} weights from the timm hub ({e}); "
                       + OFFLINE_HELP.format(arch=arch)) from e


def require_hub(arch: str) -> None:
    """Connect to the host serving `arch`'s pretrained weights (HF_ENDPOINT for hub weights), waiting at most
    HUB_TIMEOUT_S; `IwcError` with the offline options when it cannot be reached. Skipped when HF_HUB_OFFLINE
    is set: the weights are then read from the local Hugging Face cache."""
    from timm.models import get_pretrained_cfg

    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false", "no"):
        return
    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        return  # no pretrained weights known: timm itself says so
    url = (os.environ.get("HF_ENDPOINT") or HF_ENDPOINT) if cfg.hf_hub_id else cfg.url
    if not url:
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
    except OSError as e:
        raise IwcError(f"pretrained {arch!r} weights: the model hub {host}:{port} cannot be reached "
                       f"({e.strerror or e}); " + OFFLINE_HELP.format(arch=arch)) from e


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
