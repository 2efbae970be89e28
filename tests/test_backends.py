"""Local backend: a generated kernel runs in a subprocess against a symlinked Kaggle-shaped input root."""

from pathlib import Path

import pytest

from iwc.errors import IwcError
from iwc.host.backends.local import mount_inputs, run_local
from iwc.host.bundle import package_sources, render_script
from iwc.layout import COMPETITION_MARKER
from iwc.recipe import DEMO

CORE = ("__init__.py", "errors.py", "io.py", "layout.py", "recipe.py", "stages/__init__.py")

COPYING_STAGE = """\
from iwc import layout
from iwc.io import write_text


def main(recipe):
    competition = layout.find_competition()
    text = (competition / "iwildcam2020_train_annotations.json").read_text()
    print("read", len(text), "characters from", competition.relative_to(layout.input_root()))
    write_text(layout.working_dir() / "copy.json", text)
"""

FAILING_STAGE = """\
from iwc.errors import IwcError


def main(recipe):
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


def test_failure_surfaces_the_kernel_error(tmp_path):
    log = tmp_path / "fake.log"
    with pytest.raises(IwcError) as e:
        run_local(write_kernel(tmp_path, FAILING_STAGE), {}, tmp_path / "run", log_path=log)
    msg = str(e.value)
    assert "exit code 2" in msg and str(log) in msg and "about to fail" in msg
    assert "error: the fake stage has nothing to do: attach something" in msg
    assert "Traceback" not in log.read_text()


def test_env_reaches_the_kernel(tmp_path):
    stage = "import os\n\n\ndef main(recipe):\n    print('flag is', os.environ['IWC_TEST_FLAG'])\n"
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
