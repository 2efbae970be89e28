"""Local backend: a generated kernel runs in a subprocess against a symlinked Kaggle-shaped input root."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iwc.errors import IwcError
from iwc.host.backends.local import mount_inputs, run_local
from iwc.host.bundle import render_script
from iwc.layout import COMPETITION_MARKER
from iwc.provenance import closure_sources, package_sources
from iwc.recipe import DEMO

CORE = tuple(closure_sources("iwc.layout", package_sources()))  # what the bootstrap and a stage's layout need

COPYING_STAGE = """\
from iwc import layout
from iwc.io import write_text


def main(recipe, name):
    competition = layout.find_competition()
    text = (competition / "iwildcam2020_train_annotations.json").read_text()
    print("read", len(text), "characters from", competition.relative_to(layout.input_root()))
    write_text(layout.working_dir() / "copy.json", text)
"""

FAILING_STAGE = """\
from iwc.errors import IwcError


def main(recipe, name):
    print("about to fail")
    raise IwcError("the fake stage has nothing to do: attach something")
"""


def write_kernel(tmp_path: Path, stage: str) -> Path:
    sources = {rel: text for rel, text in package_sources().items() if rel in CORE}
    script = tmp_path / "kernel" / "iwc_fake.py"
    script.parent.mkdir()
    script.write_text(render_script("fake", "iwc.stages.fake:main", DEMO, sources | {"stages/fake.py": stage}))
    return script


def competition(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "iwildcam-2020-fgvc7"
    folder.mkdir(parents=True)
    (folder / COMPETITION_MARKER).write_text('{"images": []}')
    return folder


def test_kernel_reads_mounted_input_and_writes_output(tmp_path, capfd):
    real = competition(tmp_path)
    log = tmp_path / "logs" / "fake.log"
    inputs = {"competitions/iwildcam-2020-fgvc7": real}
    working = run_local(write_kernel(tmp_path, COPYING_STAGE), inputs, tmp_path / "run", log_path=log)
    assert working == (tmp_path / "run" / "working").resolve()
    assert (working / "copy.json").read_text() == '{"images": []}'
    link = tmp_path / "run" / "input" / "competitions" / "iwildcam-2020-fgvc7"
    assert link.is_symlink() and link.resolve() == real.resolve()
    expected = "read 14 characters from competitions/iwildcam-2020-fgvc7"
    assert expected in log.read_text()
    assert expected in capfd.readouterr().out


def test_rerun_replaces_the_mounts(tmp_path):
    kernel = write_kernel(tmp_path, COPYING_STAGE)
    run_local(kernel, {"competitions/iwildcam-2020-fgvc7": competition(tmp_path)}, tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    (other / COMPETITION_MARKER).write_text("{}")
    working = run_local(kernel, {"iwildcam-2020-fgvc7": other}, tmp_path / "run")
    assert (working / "copy.json").read_text() == "{}"
    assert not (tmp_path / "run" / "input" / "competitions").exists()


def test_failure_surfaces_the_kernel_error_once(tmp_path, capfd):
    log = tmp_path / "fake.log"
    with pytest.raises(IwcError) as e:
        run_local(write_kernel(tmp_path, FAILING_STAGE), {}, tmp_path / "run", log_path=log)
    msg = str(e.value)
    assert msg == f"the fake stage has nothing to do: attach something (kernel log: {log})"
    out = capfd.readouterr()
    assert "about to fail" in out.out
    assert "nothing to do" not in out.out + out.err  # shown once: by whoever prints the IwcError
    text = log.read_text()
    assert "about to fail" in text and "error: the fake stage has nothing to do" in text
    assert "Traceback" not in text


def test_an_error_quotes_the_users_folder_not_the_mount(tmp_path, capfd):
    stage = (FAILING_STAGE.replace("from iwc.errors", "from iwc import layout\nfrom iwc.errors")
             .replace('"the fake stage has nothing to do: attach something"',
                      'f"{layout.find_competition() / \'x.json\'}: broken\\nfix it"'))
    real = competition(tmp_path)
    with pytest.raises(IwcError) as e:
        run_local(write_kernel(tmp_path, stage), {"competitions/iwildcam-2020-fgvc7": real}, tmp_path / "run")
    assert str(e.value) == f"{real / 'x.json'}: broken\nfix it"
    assert "x.json" not in capfd.readouterr().out


def test_a_crash_names_its_last_line_without_repeating_the_output(tmp_path, capfd):
    stage = "def main(recipe, name):\n    print('working')\n    raise ValueError('boom')\n"
    log = tmp_path / "fake.log"
    with pytest.raises(IwcError) as e:
        run_local(write_kernel(tmp_path, stage), {}, tmp_path / "run", log_path=log)
    msg = str(e.value)
    assert msg.startswith("kernel iwc_fake.py failed with exit code 1: ValueError: boom (kernel log:")
    assert "working" not in msg and "\n" not in msg
    out = capfd.readouterr().out
    assert out.count("Traceback") == 1 and "ValueError: boom" in out


SOURCE_DIR_STAGE = """\
import os
import signal
import sys

import iwc


def main(recipe, name):
    print("sources in", os.path.dirname(os.path.dirname(iwc.__file__)), flush=True)
    if os.environ.get("IWC_TEST_DIE"):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _source_dir(log: Path) -> Path:
    lines = [line for line in log.read_text().splitlines() if line.startswith("sources in ")]
    return Path(lines[-1].removeprefix("sources in "))


def test_kernel_sources_live_under_the_scratch_dir_and_a_killed_kernels_are_removed_next_time(tmp_path):
    kernel, scratch, log = write_kernel(tmp_path, SOURCE_DIR_STAGE), tmp_path / "scratch", tmp_path / "log.txt"
    env = {"IWC_SCRATCH_DIR": str(scratch)}
    run_local(kernel, {}, tmp_path / "run", log, env=env)
    assert _source_dir(log).parent == scratch and not _source_dir(log).exists()  # removed at exit
    with pytest.raises(IwcError, match="exit code -9"):
        run_local(kernel, {}, tmp_path / "run", log, env={**env, "IWC_TEST_DIE": "1"})
    killed = _source_dir(log)
    assert killed.parent == scratch and killed.is_dir()  # a SIGKILL leaves no chance to clean up
    run_local(kernel, {}, tmp_path / "run", log, env=env)
    assert not killed.exists()
    assert list(scratch.iterdir()) == []
    assert log.read_text().count("sources in ") == 3  # the log is appended to, never truncated


def test_env_reaches_the_kernel(tmp_path):
    stage = "import os\n\n\ndef main(recipe, name):\n    print('flag is', os.environ['IWC_TEST_FLAG'])\n"
    log = tmp_path / "fake.log"
    run_local(write_kernel(tmp_path, stage), {}, tmp_path / "run", log, env={"IWC_TEST_FLAG": "on"})
    assert "flag is on" in log.read_text()


@pytest.mark.parametrize("name", ["../escape", "/abs/path", ""])
def test_bad_mount_names_are_rejected(tmp_path, name):
    with pytest.raises(IwcError, match="relative path"):
        mount_inputs({name: tmp_path}, tmp_path / "input")


def test_missing_and_overlapping_mounts_are_rejected(tmp_path):
    with pytest.raises(IwcError, match="not a folder"):
        mount_inputs({"x": tmp_path / "missing"}, tmp_path / "input")
    with pytest.raises(IwcError, match="overlap"):
        mount_inputs({"datasets/a": tmp_path, "datasets/a/b": tmp_path}, tmp_path / "input")


def test_input_dir_with_real_files_is_left_alone(tmp_path):
    keep = tmp_path / "input" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    with pytest.raises(IwcError, match="real file"):
        mount_inputs({}, tmp_path / "input")
    assert keep.read_text() == "mine"


SLEEPING_STAGE = SOURCE_DIR_STAGE + """\
    import time

    time.sleep(600)
"""

HOST = """\
import signal
import sys
from pathlib import Path

from iwc.host.backends.local import run_local

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started with SIGINT ignored

kernel, work, log, scratch = sys.argv[1:]
try:
    run_local(Path(kernel), {}, Path(work), Path(log), env={"IWC_SCRATCH_DIR": scratch})
except KeyboardInterrupt:
    print("host interrupted", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_stops_the_kernel_and_it_removes_its_sources(tmp_path):
    kernel, scratch, log = write_kernel(tmp_path, SLEEPING_STAGE), tmp_path / "scratch", tmp_path / "log.txt"
    host = subprocess.Popen([sys.executable, "-c", HOST, str(kernel), str(tmp_path / "run"), str(log), str(scratch)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (log.is_file() and "sources in " in log.read_text()):
            assert host.poll() is None and time.monotonic() < deadline, "the kernel never started"
            time.sleep(0.2)
        sources = _source_dir(log)
        assert sources.is_dir()
        host.send_signal(signal.SIGINT)  # the host only, as when the kernel ignores the terminal's signal
        out, _ = host.communicate(timeout=120)
    finally:
        host.kill()
    assert host.returncode == 130 and "host interrupted" in out
    assert not sources.exists()  # the kernel got an interrupt in turn and cleaned up before it ended
    assert list(scratch.iterdir()) == []


PROGRESS_STAGE = """\
import time

from tqdm import tqdm


def main(recipe, name):
    for _ in tqdm(range(40), desc="work"):
        time.sleep(0.02)
"""


def test_progress_bars_written_to_a_log_redraw_rarely(tmp_path):
    log = tmp_path / "log.txt"
    run_local(write_kernel(tmp_path, PROGRESS_STAGE), {}, tmp_path / "run", log_path=log)
    draws = [d for d in log.read_text().replace("\r", "\n").splitlines() if d.startswith("work:")]
    assert draws[-1].startswith("work: 100%") and len(draws) < 10  # not one redraw per step (41)
