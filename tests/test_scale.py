"""Issue 13 at the real size: progress that reaches the log while it happens, plots and scratch that scale."""

import threading
import time

from test_backends import write_kernel

from iwc.host.backends.local import _Lines, run_local

SLOW_EPOCH_STAGE = """\
import os
import time
from pathlib import Path

from tqdm import tqdm


def main(recipe, name):
    release = Path(os.environ["IWC_TEST_RELEASE"])
    bar = tqdm(total=2, desc="epoch 1", unit="batch")
    time.sleep(0.5)  # past the redraw interval: this update redraws
    bar.update(1)
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:  # the epoch lasts until the test has seen it
        time.sleep(0.05)
    print("released" if release.exists() else "never released", flush=True)
    bar.update(1)
    bar.close()
"""


def test_a_slow_epoch_has_its_progress_line_in_the_log_before_it_ends(tmp_path):
    log, release = tmp_path / "log.txt", tmp_path / "release"
    env = {"TQDM_MININTERVAL": "0.2", "IWC_TEST_RELEASE": str(release)}
    kernel = write_kernel(tmp_path, SLOW_EPOCH_STAGE)
    run = threading.Thread(target=run_local, args=(kernel, {}, tmp_path / "run", log, env))
    run.start()
    try:
        deadline = time.monotonic() + 300
        while not (log.is_file() and "epoch 1:  50%" in log.read_text()):
            assert run.is_alive() and time.monotonic() < deadline, "no progress line while the epoch ran"
            time.sleep(0.05)
        seen = log.read_text()
    finally:
        release.touch()
        run.join(timeout=300)
    assert "released" not in seen  # the line came while the epoch was still running
    lines = log.read_text().splitlines()
    assert "released" in lines and "\r" not in log.read_text()  # a redraw is a line of its own in the log
    assert [line for line in lines if line.startswith("epoch 1:  50%")][:1] == [seen.splitlines()[-1]]
    assert lines[-1].startswith("epoch 1: 100%")


def test_lines_end_at_carriage_returns_across_chunks():
    lines = _Lines()
    got = lines.feed(b"a\r") + lines.feed(b"\nb\xc3") + lines.feed(b"\xa9\rbar 1")
    assert got == [("a", "\r"), ("b\u00e9", "\r")] and lines.rest == "bar 1" and lines.redraw
    assert lines.feed(b"0\rbar 2\n") + lines.feed(b"tail") + lines.feed(b"") == [
        ("bar 10", "\r"), ("bar 2", "\n"), ("tail", "\n")]
    assert not lines.redraw  # the rest after a "\n" is not a redraw

