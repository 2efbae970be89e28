"""Shared fixtures: one small synthetic competition per test session."""

from pathlib import Path

import pytest

from iwc.host.synth import DemoInfo, write_demo


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoInfo:
    """The `small` synthetic competition (seed 0), written once; treat it as read-only."""
    return write_demo(Path(tmp_path_factory.mktemp("demo")) / "data", seed=0, scale="small", progress=False)
