"""Which lines of a kernel log say something: progress bars and their fragments do not.

A failed kernel is quoted by its last meaningful lines (`meaningful`), never by a tqdm redraw such as
`| 0/64 [00:00<?, ?img/s]` (Kaggle's log records split a bar anywhere; `\r` redraws leave the bar's last state).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# tqdm's trailer "[elapsed<remaining, rate]" (e.g. "[00:00<?, ?img/s]", "[01:02, 3.4it/s]"), or its bar "42%|"
_PROGRESS = re.compile(r"\[\d+:\d{2}(?::\d{2})?(?:<[^\]]*)?(?:,[^\]]*)?\]\s*$|^[^|]{0,80}?\d+%\|")


def is_progress(line: str) -> bool:
    """Whether `line` is (a fragment of) a progress bar."""
    return bool(_PROGRESS.search(line))


def meaningful(lines: Iterable[str]) -> list[str]:
    """`lines` without blank lines and progress-bar fragments, in order."""
    return [line for line in lines if line.strip() and not is_progress(line)]
