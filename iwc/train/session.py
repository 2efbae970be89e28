"""Plan a model stage around the session limit (Kaggle ends a session at 12 h, 9 h on some shapes, and keeps
nothing of a session it kills): an ETA for the whole stage after the first minutes of training, and a clean
stop at the last epoch boundary that still fits.

`SessionPlan` is fed by `fit` (`begin`, `batch`, `epoch_end`). When the next epoch (and, before the last one,
the prediction after it) would end past the usable budget (`limit - margin(limit)`), `epoch_end` raises
`SessionStop`: the checkpoint of that epoch is already in the working folder; the stage writes the resumable
marker `<name>.resume.json` (`write_marker`) and exits 0, so the session's outputs are kept. The next session
attaches that output (the Kaggle backend pushes a version naming its own kernel in `kernel_sources`) and
`restore` copies the checkpoint back into the working folder, from which `fit` resumes exactly.

Settings, from the environment (the kernel's bootstrap sets them from the values baked into the script;
`iwc stage --session-limit` sets them for one process):
- `IWC_SESSION_LIMIT_S`: the session's limit in seconds; unset or 0: no limit (the ETA is still logged);
- `IWC_SESSION_START`: when the session began (`time.time()`; the bootstrap's first line), default now;
- `IWC_SESSION_CLOCK`: `batch:S`, a deterministic clock for tests: each training batch takes S seconds and
  nothing else takes any time.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

from iwc import layout
from iwc.errors import IwcError
from iwc.io import read_json_object, write_json
from iwc.recipe import Model

LIMIT_ENV = "IWC_SESSION_LIMIT_S"
START_ENV = "IWC_SESSION_START"
CLOCK_ENV = "IWC_SESSION_CLOCK"
KAGGLE_LIMIT_S = 12 * 3600.0  # Kaggle's session limit (9 h on some machine shapes: pass that instead)
MARGIN_S = 30 * 60.0  # kept free at the end: the session's start-up, the estimate's error, saving the outputs
ETA_AFTER_S = 120.0  # the ETA is logged after this much training (or at the first epoch's end, if sooner)
FORWARD_SHARE = 1 / 3  # a forward pass (validation, TTA) costs about a third of a training step per image
CHECKPOINT = "checkpoint.pt"  # iwc.train.fit's file in `<working>/<name>/`
log = logging.getLogger(__name__)


def margin(limit_s: float) -> float:
    """What is kept free of a session of `limit_s`: 30 minutes, or a tenth of the limit when that is shorter."""
    return min(MARGIN_S, limit_s / 10)


def marker_name(name: str) -> str:
    """The resumable marker a stage stopped before the session limit leaves in its working folder."""
    return f"{name}.resume.json"


class SessionStop(Exception):
    """Raised by `SessionPlan.epoch_end` when the next epoch would pass the limit; `marker` says where and why."""

    def __init__(self, marker: dict) -> None:
        super().__init__(marker["why"])
        self.marker = marker


class SessionPlan:
    """The time budget of one model stage in one session.

    `n_train` training rows (batches of `m.batch_size`), `n_val` validated after every epoch, `n_predict`
    predicted with TTA at the end; `session` counts the sessions of this stage (1 for the first).
    """

    def __init__(self, name: str, m: Model, n_train: int, n_val: int, n_predict: int, session: int = 1) -> None:
        self.name, self.m, self.session = name, m, session
        self.n_val, self.n_predict = n_val, n_predict
        self.steps = math.ceil(n_train / m.batch_size)
        self.epochs = sum(stage.epochs for stage in m.stages)
        self.limit = _env_seconds(LIMIT_ENV)
        clock = os.environ.get(CLOCK_ENV, "")
        self._batch_s = _fake_clock(clock) if clock else None
        self._start = time.time() if self._batch_s is not None else _env_seconds(START_ENV) or time.time()
        self._batches = self._done = self._first = 0
        self._train_start = self._ticks = 0.0
        self._eta_logged = False

    def now(self) -> float:
        """Seconds since the session started."""
        return self._ticks if self._batch_s is not None else time.time() - self._start

    @property
    def budget(self) -> float | None:
        return None if not self.limit else self.limit - margin(self.limit)

    def begin(self, done_epochs: int) -> None:
        """Training starts (or resumes) with `done_epochs` epochs already in the checkpoint."""
        self._first = self._done = done_epochs
        self._train_start = self.now()

    def batch(self) -> None:
        """One training batch is done; after the first minutes of training, log the ETA once."""
        self._batches += 1
        if self._batch_s is not None:
            self._ticks += self._batch_s
        if not self._eta_logged and self.now() - self._train_start >= ETA_AFTER_S:
            self._log_eta()

    def epoch_end(self) -> None:
        """An epoch is saved: raise `SessionStop` when what must follow it in this session would pass the budget.
        Every process of a torchrun run decides the same (rank 0's clock)."""
        self._done += 1
        if not self._eta_logged:
            self._log_eta()
        now, left = self.now(), self.epochs - self._done
        needed = now + (self._epoch_s() if left else 0.0) + (self._predict_s() if left <= 1 else 0.0)
        stop = self.budget is not None and needed > self.budget
        from iwc.train import distributed  # torch: imported only where training runs, not by the host's CLI

        if distributed.world_size() > 1:
            stop = distributed.all_reduce_sum([float(stop and distributed.is_main())])[0] > 0
        if not stop:
            return
        what = (f"epoch {self._done + 1} of {self.epochs}" + (" and the prediction" if left == 1 else "")
                if left else "the prediction")
        raise SessionStop({
            "stage": self.name, "epochs_done": self._done, "epochs": self.epochs, "session": self.session,
            "elapsed_s": round(now, 1), "needed_s": round(needed, 1), "limit_s": self.limit,
            "budget_s": self.budget,
            "why": (f"{what} would end at {_hours(needed)} into the session, past its usable {_hours(self.budget)} "
                    f"(limit {_hours(self.limit)} minus a {_hours(margin(self.limit))} margin)"),
        })

    def _per_batch(self) -> float:
        return (self.now() - self._train_start) / max(self._batches, 1)

    def _epoch_s(self) -> float:
        """One epoch with its validation: as measured in this session once one has ended, else estimated."""
        if self._done > self._first:
            return (self.now() - self._train_start) / (self._done - self._first)
        return self._per_batch() * self.steps + self._forward_s(self.n_val)

    def _forward_s(self, images: int) -> float:
        return self._per_batch() / self.m.batch_size * images * FORWARD_SHARE

    def _predict_s(self) -> float:
        return self._forward_s(self.n_predict * (1 + self.m.tta.views))

    def _log_eta(self) -> None:
        self._eta_logged = True
        left = self.epochs - self._done
        train_s = self._per_batch() * self.steps * left if self._done == self._first else self._epoch_s() * left
        remaining = train_s + self._predict_s()
        end = self.now() + remaining
        line = (f"{self.name}: ETA: the stage ends in about {_hours(remaining)} ({left} of {self.epochs} epochs "
                f"left at {self._per_batch():.2f} s/batch, then prediction {_hours(self._predict_s())}), "
                f"{_hours(end)} into session {self.session}")
        if self.budget is None:
            log.info("%s; no session limit", line)
        elif end <= self.budget:
            log.info("%s: fits its limit of %s", line, _hours(self.limit))
        else:
            log.warning("%s: past its usable %s (limit %s): it stops at the last epoch that fits and continues in "
                        "a next session", line, _hours(self.budget), _hours(self.limit))
        if self.budget is not None and self.now() + self._epoch_s() > self.budget and self._done == self._first:
            log.warning("%s: one epoch (about %s) does not fit in a session's usable %s: this session will be "
                        "killed, keeping nothing; shorten the epoch (fewer or smaller images) or raise "
                        "--session-limit", self.name, _hours(self._epoch_s()), _hours(self.budget))


def restore(name: str, work: Path) -> int:
    """Before training: copy the checkpoint of a previous session (an attached output holding
    `<name>.resume.json`) into `work/<name>/`, unless one is there; remove a stale marker from `work`.
    Returns this session's number: 1 when nothing is resumed; one more than the marker's when `work` itself holds
    one (`iwc stage` run again in the same folder: `fit` resumes from the checkpoint there)."""
    stale = work / marker_name(name)
    session = int(read_json_object(stale).get("session", 0)) + 1
    stale.unlink(missing_ok=True)
    found = layout.find_marked(None, marker_name(name), f"the previous session's output with {marker_name(name)!r}",
                               "Attach the kernel's own previous output (kernel_sources).", required=False)
    if found is None:
        return session
    marker = read_json_object(found / marker_name(name))
    source, target = found / name / CHECKPOINT, work / name / CHECKPOINT
    if not source.is_file():
        raise IwcError(f"{found / marker_name(name)}: the previous session's checkpoint {source} is missing: "
                       "attach that session's complete output, or push the kernel without it to start afresh")
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target.with_name(target.name + ".part"))
        target.with_name(target.name + ".part").replace(target)
    session = int(marker.get("session", 1)) + 1
    log.info("%s: session %d: resuming from the checkpoint of session %d (%s of %s epochs done) in %s", name,
             session, session - 1, marker.get("epochs_done"), marker.get("epochs"), found)
    return session


def write_marker(work: Path, stop: SessionStop) -> None:
    """Leave the resumable marker in `work` and say why the stage stops here."""
    write_json(work / marker_name(stop.marker["stage"]), stop.marker)
    log.warning("%s: stopping before the session limit: %s; checkpoint and %s kept in %s for the next session",
                stop.marker["stage"], stop.marker["why"], marker_name(stop.marker["stage"]), work)


def _env_seconds(name: str) -> float:
    text = os.environ.get(name, "").strip()
    try:
        value = float(text or 0)
    except ValueError:
        raise IwcError(f"${name} = {text!r} is not a number of seconds") from None
    if value < 0 or not math.isfinite(value):
        raise IwcError(f"${name} = {text!r} must be a positive number of seconds (0: none)")
    return value


def _fake_clock(text: str) -> float:
    kind, _, seconds = text.partition(":")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if kind != "batch" or not value >= 0:
        raise IwcError(f"${CLOCK_ENV} = {text!r}: write batch:SECONDS (each training batch takes that long)")
    return value


def _hours(seconds: float | None) -> str:
    seconds = seconds or 0.0
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"
