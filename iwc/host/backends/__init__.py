"""Execution backends: `get_backend(name)` -> an object with `run(KernelRun) -> outputs folder`."""

from __future__ import annotations

from iwc.errors import IwcError
from iwc.host.backends.base import Backend, KernelRun

BACKENDS = ("local", "docker", "kaggle")


def get_backend(name: str) -> Backend:
    """The backend called `name` (one of `BACKENDS`)."""
    if name == "local":
        from iwc.host.backends.local import LocalBackend

        return LocalBackend()
    if name == "docker":
        from iwc.host.backends.docker import DockerBackend

        return DockerBackend()
    if name == "kaggle":
        from iwc.host.backends.kaggle import KaggleBackend

        return KaggleBackend()
    raise IwcError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "KernelRun", "get_backend"]
