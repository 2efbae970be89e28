"""Faults the Kaggle sandbox can inject, each for a chosen number of matching events.

`Faults.inject(name, times, match, **params)` arms a fault; the server asks `Faults.take(name, subject)` at the
point where that fault would strike and gets the fault's parameters (it fires, one use spent) or None.
`parse_fault("rate_limit:2,retry_after=3")` reads the command-line form.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from iwc.errors import IwcError

# name -> (what it does, default parameters)
FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "push_error": ("SaveKernel answers 200 with an `error` and creates no version",
                   {"message": "Kernel push rejected by the sandbox (injected fault)"}),
    "kernel_error": ("the kernel runs, then its version ends in ERROR",
                     {"message": "Your notebook ran out of memory (injected fault)"}),
    "rate_limit": ("ListKernelSessionOutput answers 429 with Retry-After", {"retry_after": 1}),
    "expired_url": ("an output file URL answers 403 and stays expired: list the outputs again", {}),
    "short_download": ("a file download sends the full Content-Length but only half the bytes", {}),
    "submission_rejected": ("the submission ends in ERROR with an errorDescription",
                            {"message": "Submission rejected by the sandbox (injected fault)"}),
    "slow_kernel": ("the kernel stays RUNNING this many seconds longer", {"seconds": 5.0}),
    "session_limit": ("the kernel's session is killed after this many seconds, as at Kaggle's limit: ERROR, and "
                      "none of its outputs is kept", {"seconds": 5.0}),
    "rules_not_accepted": ("a competition call answers 403, as before the competition's rules are accepted",
                           {"message": "You must accept this competition's rules (injected fault)"}),
}


@dataclass
class _Armed:
    times: int
    match: str
    params: dict[str, Any] = field(default_factory=dict)


class Faults:
    """The armed faults of one sandbox; thread-safe. `fired[name]` counts how often each struck."""

    def __init__(self) -> None:
        self._armed: dict[str, list[_Armed]] = {}
        self._lock = threading.Lock()
        self.fired: Counter[str] = Counter()

    def inject(self, name: str, times: int = 1, match: str = "", **params: Any) -> None:
        """Arm fault `name` for the next `times` events whose subject contains `match`."""
        if name not in FAULTS:
            raise IwcError(f"unknown sandbox fault {name!r}: choose one of {', '.join(FAULTS)}")
        defaults = FAULTS[name][1]
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise IwcError(f"sandbox fault {name!r} takes {', '.join(defaults) or 'no parameters'}, "
                           f"not {', '.join(unknown)}")
        if times < 1:
            raise IwcError(f"sandbox fault {name!r}: times must be at least 1, not {times}")
        with self._lock:
            self._armed.setdefault(name, []).append(_Armed(times, match, {**defaults, **params}))

    def take(self, name: str, subject: str = "") -> dict[str, Any] | None:
        """The parameters of fault `name` if it strikes the event about `subject` (one use spent), else None."""
        with self._lock:
            for armed in self._armed.get(name, []):
                if armed.match in subject:
                    armed.times -= 1
                    if not armed.times:
                        self._armed[name].remove(armed)
                    self.fired[name] += 1
                    return armed.params
        return None


def parse_fault(text: str) -> tuple[str, int, dict[str, Any]]:
    """`name[:times][,key=value...]` -> (name, times, params); numbers become floats, `match` stays text."""
    head, *pairs = text.split(",")
    name, _, times = head.partition(":")
    if not times.strip().isdigit() and times:
        raise IwcError(f"--fault {text!r}: the count after ':' must be a whole number, e.g. rate_limit:2")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise IwcError(f"--fault {text!r}: {pair!r} is not key=value, e.g. rate_limit:2,retry_after=3")
        params[key.strip()] = value if key.strip() in ("match", "message") else _number(text, value)
    return name.strip(), int(times or 1), params


def _number(text: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise IwcError(f"--fault {text!r}: {value!r} is not a number") from None
