"""Shared fixtures: one small synthetic competition per test session, and one shrunk end-to-end run on it."""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from iwc.host.pipeline import RunResult, reproduce
from iwc.host.synth import DemoInfo, write_demo
from iwc.recipe import load_recipe
from iwc.train.fit import CHECKPOINT


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoInfo:
    """The `small` synthetic competition (seed 0), written once; treat it as read-only."""
    return write_demo(Path(tmp_path_factory.mktemp("demo")) / "data", seed=0, scale="small", progress=False)


@pytest.fixture(scope="session")
def quirky_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoInfo:
    """The same competition with the real files' quirks planted (`quirks=True`), written once; read-only."""
    return write_demo(Path(tmp_path_factory.mktemp("quirks")) / "data", seed=0, scale="small", progress=False,
                      quirks=True)


@dataclass(frozen=True)
class TinyRun:
    """A finished `reproduce` of the demo recipe shrunk by `test_reproduce.TINY` on `small_demo` (local backend,
    with the test labels): its `run_dir`, what `reproduce` returned (`result.submission_dir` is its submission
    folder) and its `submission.csv` bytes."""

    run_dir: Path
    result: RunResult
    submission: bytes

    def copy(self, run_dir: Path, submission_dir: Path | None = None) -> None:
        """Copy the run folder (and the submission folder, when given) to where a test changes or reruns it.

        A stage's cache key holds no path of the run, and its outputs are checked by content: in the copy every
        stage of the same recipe is unchanged. Checkpoints (128 MB a model stage) are hard links: a stage only ever
        replaces one whole (atomic_write renames), never writes into it."""
        shutil.copytree(self.run_dir, run_dir, symlinks=True, copy_function=_copy_or_link_checkpoint)
        if submission_dir is not None:
            shutil.copytree(self.result.submission_dir, submission_dir, symlinks=True)


def _copy_or_link_checkpoint(src: str, dst: str) -> None:
    if Path(src).name == CHECKPOINT:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@pytest.fixture(scope="session")
def tiny_run(small_demo: DemoInfo, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The shrunk demo run, made once for the session; read-only: a test that changes it works on `.copy(...)`."""
    from test_reproduce import TINY  # the shrink the end-to-end tests share

    base = tmp_path_factory.mktemp("tiny-run")
    result = reproduce(small_demo.root, load_recipe("demo", TINY), base / "runs" / "tiny",
                       base / "submissions" / "tiny", truth=small_demo.ground_truth)
    assert result.ran == ["full", "crop", "aggregate"] and result.skipped == []
    return TinyRun(base / "runs" / "tiny", result, (result.submission_dir / "submission.csv").read_bytes())


@pytest.fixture
def quick_kaggle_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kaggle clients made in this process without their own poll times poll every 0.1 s (growing to 0.5 s), not every
    5 s (to 60 s): the sandbox answers by the number of polls, so the default waits only cost time."""
    from iwc.host.kaggle_client import KaggleClient

    init = KaggleClient.__init__

    def quick(self: KaggleClient, progress: bool = True, poll_s: float = 0.1, max_poll_s: float = 0.5) -> None:
        init(self, progress, poll_s, max_poll_s)

    monkeypatch.setattr(KaggleClient, "__init__", quick)


def talk_to_sandbox(monkeypatch: pytest.MonkeyPatch, sandbox, home: Path) -> None:
    """Point this process's Kaggle client at `sandbox` with its made-up token: no credential of the machine is read,
    and `home` stands in for the user's home folder."""
    from iwc.host.sandbox.server import CREDENTIAL_VARS

    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in sandbox.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(home))
