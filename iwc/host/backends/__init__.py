"""Execution backends: `get_backend(name)` -> an object with `run(KernelRun) -> outputs folder`."""

from __future__ import annotations

from iwc.errors import IwcError
from iwc.host.backends.base import Backend, KernelRun

BACKENDS = ("local",)


def get_backend(name: str) -> Backend:
    """The backend called `name` (one of `BACKENDS`)."""
    if name == "local":
        from iwc.host.backends.local import LocalBackend

        return LocalBackend()
    raise IwcError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "KernelRun", "get_backend"]
