"""Execution backends, in one registry: `get_backend(name)` -> a `Backend` that runs `KernelRun`s."""

from __future__ import annotations

import importlib

from iwc.errors import IwcError
from iwc.host.backends.base import Backend, KernelRun, RunOptions

# name -> "module:class", imported on first use (the Kaggle backend imports the kaggle client)
BACKENDS = {
    "local": "iwc.host.backends.local:LocalBackend",
    "docker": "iwc.host.backends.docker:DockerBackend",
    "kaggle": "iwc.host.backends.kaggle:KaggleBackend",
}


def get_backend(name: str) -> Backend:
    """A new backend of kind `name` (one of `BACKENDS`)."""
    if name not in BACKENDS:
        raise IwcError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["BACKENDS", "Backend", "KernelRun", "RunOptions", "get_backend"]
