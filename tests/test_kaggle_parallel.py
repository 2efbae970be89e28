"""The pipeline runs independent stages together when the backend is `parallel` (Kaggle), one by one otherwise."""

import threading

import pytest

from iwc.errors import IwcError
from iwc.host.backends.base import Backend, KernelRun
from iwc.host.pipeline import STATE_FILE, _run_wave, _waves
from iwc.io import read_json_object
from iwc.recipe import DEMO
from iwc.stages import stage_specs

SPECS = stage_specs(DEMO)
START = {"full": ("start", ""), "crop": ("start", "")}  # what `_plan` says of stages never run


class Together(Backend):
    """A backend whose kernels only finish when both have started: sequential runs break the barrier."""

    name = "together"

    def __init__(self, parallel: bool, fail: str = "") -> None:
        self.parallel, self.fail = parallel, fail
        self.barrier = threading.Barrier(2, timeout=5)

    def run(self, job: KernelRun):
        self.barrier.wait()
        if job.spec.name == self.fail:
            raise IwcError(f"{job.spec.name} failed")
        (job.stage_dir / "working").mkdir(parents=True, exist_ok=True)
        return job.stage_dir / "working"


def jobs(tmp_path):
    return [KernelRun(SPECS[s], tmp_path / "kernels" / s, {}, tmp_path / "stages" / s) for s in ("full", "crop")]


def test_waves_put_full_and_crop_together_before_the_aggregator():
    assert _waves(SPECS) == [["full", "crop"], ["aggregate"]]


def test_a_parallel_backend_runs_full_and_crop_at_the_same_time(tmp_path):
    states = _run_wave(Together(parallel=True), jobs(tmp_path), {"full": "k1", "crop": "k2"}, START)
    assert {s: state["ran"] for s, state in states.items()} == {"full": True, "crop": True}


def test_a_sequential_backend_runs_them_one_by_one(tmp_path):
    with pytest.raises(threading.BrokenBarrierError):
        _run_wave(Together(parallel=False), jobs(tmp_path), {"full": "k1", "crop": "k2"}, START)


def test_a_failure_beside_a_success_is_raised_after_the_success_is_recorded(tmp_path):
    with pytest.raises(IwcError, match="crop failed"):
        _run_wave(Together(parallel=True, fail="crop"), jobs(tmp_path), {"full": "k1", "crop": "k2"}, START)
    assert read_json_object(tmp_path / "stages" / "full" / STATE_FILE)["complete"] is True
    assert read_json_object(tmp_path / "stages" / "crop" / STATE_FILE)["complete"] is False
