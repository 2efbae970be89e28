"""Hostile input, host side (issue 16: items 9, 10, 12, 15, 16, 18, 23, 24, 25): full or read-only disks, a file
where a folder belongs, negative demo seeds, undecodable path bytes on a strict console, kernel errors under
torchrun, blank CSV lines, progress bars quoted as a failure, JSON nulls, invoke's usage errors.

Table rows go through `test_hostile`'s own check (exit 2, one `iwc: error:` line naming the file or field, no
traceback, nothing on disk changed); what a row cannot express is a test of its own below.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import test_hostile
from test_hostile import ROOT, Case, World, _reproduce, _stage, _text
from test_hostile import test_hostile_input_is_refused_in_one_line_and_changes_nothing as refused_in_one_line
from test_tasks import _invoke as invoke

from iwc import layout
from iwc.data.competition import MD_JSON
from iwc.errors import IwcError
from iwc.host import bundle
from iwc.host.backends.local import run_local, run_streamed
from iwc.host.bundle import build_kernels, package_sources, render_script
from iwc.host.cli import main
from iwc.host.kaggle_client import KaggleClient, log_lines
from iwc.host.logtext import meaningful
from iwc.host.synth import write_demo
from iwc.recipe import DEMO, load_recipe
from iwc.train.launch import kernel_command

world = test_hostile.world  # the fixture every case runs in


def _disk(code: int):
    """The disk fails with `code` (ENOSPC, EDQUOT, EROFS) as the kernels are written."""
    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(path, text):
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(bundle, "write_text", fail)
    return patch


def _raise_disk_full() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "work/full_val.npz")


def _null_detections(w: World) -> None:
    data = json.loads((w.comp / MD_JSON).read_text(encoding="utf-8"))
    data["images"][0]["detections"] = None
    (w.comp / MD_JSON).write_text(json.dumps(data), encoding="utf-8")


CASES = [
    # 9: a full, over-quota or read-only disk is one line, exit 2, wherever it strikes (here: writing the kernels)
    Case("reproduce-disk-full-writing-kernels", _reproduce(), _text("No space left on device (ENOSPC): free space"),
         patch=_disk(errno.ENOSPC)),
    Case("reproduce-quota-writing-kernels", _reproduce(), _text("(EDQUOT)"), patch=_disk(errno.EDQUOT)),
    Case("reproduce-read-only-writing-kernels", _reproduce(), _text("Read-only file system (EROFS)"),
         patch=_disk(errno.EROFS)),
    Case("stage-disk-full", _stage("full"), _text("cannot write work/full_val.npz: No space left on device"),
         patch=lambda mp: mp.setattr(layout, "working_dir", _raise_disk_full)),
    # 10: --working-dir names a file
    Case("stage-working-dir-is-a-file",
         lambda w: ["stage", "full", "--input-root", str(w.data), "--working-dir", str(w.sub), "--recipe", "demo"],
         lambda w: f"working dir {w.sub}: {w.sub} is a file, not a folder"),
    Case("stage-working-dir-below-a-file",
         lambda w: ["stage", "full", "--input-root", str(w.data), "--working-dir", str(w.sub / "out"),
                    "--recipe", "demo"],
         lambda w: f"{w.sub} is a file, not a folder"),
    # 12: a negative demo seed is refused before anything is written
    Case("demo-data-negative-seed", lambda w: ["demo-data", str(w.root / "demo"), "--seed", "-1"],
         _text("argument --seed: -1 is negative: give a seed >= 0")),
    Case("reproduce-negative-data-seed", _reproduce("--demo", "--data-seed", "-5"),
         _text("argument --data-seed: -5 is negative")),
    # 23: --data names a file
    Case("reproduce-data-is-a-file", _reproduce(data=lambda w: w.sub),
         lambda w: f"--data {w.sub} is a file, not a data folder"),
    # 25: "detections": null is named null
    Case("stage-null-detections", _stage("crop"), _text("field 'detections' is null"), setup=_null_detections),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_host_hostile_input_is_refused_in_one_line_and_changes_nothing(case, world, capsys, monkeypatch):
    refused_in_one_line(case, world, capsys, monkeypatch)


@pytest.mark.parametrize("argv", [
    lambda w: ["reproduce", "--data", str(w.sub), "--recipe", "demo", "--run", "hostile"],
    lambda w: ["stage", "full", "--input-root", str(w.data), "--working-dir", str(w.sub), "--recipe", "demo"],
], ids=["data", "working-dir"])
def test_a_file_for_a_folder_is_called_a_file_not_a_missing_mount(argv, world, capsys):
    assert main(argv(world)) == 2
    err = capsys.readouterr().err
    assert f"{world.sub} is a file, not a" in err
    assert "IWC_INPUT_ROOT" not in err and "kernel-metadata.json" not in err and "Attach" not in err


def test_a_disk_error_the_user_cannot_fix_stays_a_bug(monkeypatch):
    from iwc.host import cli

    def broken(args):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/dev/sda")

    monkeypatch.setattr(cli, "_recipe", broken)
    with pytest.raises(OSError, match="Input/output error"):
        main(["recipe"])


def test_write_demo_refuses_a_negative_seed_before_creating_anything(tmp_path):
    with pytest.raises(IwcError, match="demo seed -1 must be an integer >= 0"):
        write_demo(tmp_path / "demo", seed=-1, progress=False)
    assert not (tmp_path / "demo").exists()


def test_working_dir_that_is_a_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv(layout.WORKING_ENV, str(tmp_path / "f" / "a" / "b"))
    with pytest.raises(IwcError, match=f"{tmp_path / 'f'} is a file, not a folder"):
        layout.working_dir()
    monkeypatch.setenv(layout.WORKING_ENV, str(tmp_path / "new" / "out"))
    assert layout.working_dir() == tmp_path / "new" / "out"  # not made yet: the stage makes it


# --- 9: the kernel's bootstrap ------------------------------------------------------------------------------

DISK_FULL_STAGE = """\
import errno, os


def main(recipe, name):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/kaggle/working/full_test.npz")
"""
# Replaces the bootstrap's install_sources: the disk is full before the first source file is written.
NO_ROOM_FOR_SOURCES = """
def install_sources(sources):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/tmp/iwc-src-1-x/iwc/errors.py")

"""


@pytest.mark.parametrize(("stage_text", "early", "file"), [
    (DISK_FULL_STAGE, False, "/kaggle/working/full_test.npz"),
    ("def main(recipe, name):\n    pass\n", True, "/tmp/iwc-src-1-x/iwc/errors.py"),
])
def test_a_kernel_on_a_full_disk_says_so_in_one_line_and_exits_2(tmp_path, stage_text, early, file):
    script = render_script("full", "iwc.stages.probe:main", DEMO, package_sources() | {"stages/probe.py": stage_text})
    if early:
        script = script.replace('\n\nif __name__ == "__main__":', NO_ROOM_FOR_SOURCES + '\nif __name__ == "__main__":')
    path = tmp_path / "kernel.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "IWC_SCRATCH_DIR": str(tmp_path / "scratch")})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot write {file}: No space left on device (ENOSPC): free space on that disk (or choose a "
        "writable folder), then run again; finished stages are kept"]


# --- 15: bytes that are no UTF-8 in a path, on a strict UTF-8 console ----------------------------------------

def test_undecodable_path_bytes_print_escaped_on_a_strict_console(world):
    odd = os.fsdecode(b"sub-\xff.csv")  # a surrogate escape: not encodable as UTF-8
    sub = world.root / odd
    sub.write_bytes(world.sub.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8:strict", "PYTHONUTF8": "0",
           "LC_ALL": "C.UTF-8"}
    for argv, shown in ((["validate", odd, "--sample", str(world.sample)], "valid ("),
                        (["assemble", odd, "--sample", str(world.sample), "--out", "out-\udcff"], "wrote ")):
        done = subprocess.run([sys.executable, "-m", "iwc.host.cli", *argv], cwd=world.root, capture_output=True,
                              timeout=120, env=env)
        stdout, stderr = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, stderr
        assert "Traceback" not in stderr and shown in stdout and "\\udcff" in stdout
    assert (world.root / "out-\udcff" / "submission.csv").is_file()


# --- 16: a kernel error under torchrun keeps its one line and exit code 2 ---------------------------------------

def test_a_two_process_kernel_error_is_one_line_exit_2(tmp_path, capfd):
    recipe = load_recipe("demo", [f"full.weights_file={tmp_path / 'nowhere.safetensors'}"])
    (kernel_dir,) = build_kernels(tmp_path / "kernels", recipe, stages=["full"])
    env = {layout.SCRATCH_ENV: str(tmp_path / "scratch"), "OMP_NUM_THREADS": "1"}
    with pytest.raises(IwcError) as err:
        run_local(kernel_dir / "iwc_full.py", {}, tmp_path / "stage", tmp_path / "log.txt", env, processes=2)
    message = str(err.value)
    assert message.startswith(f"weights file {tmp_path / 'nowhere.safetensors'} does not exist"), message
    assert "\n" not in message and "exit code" not in message
    console = capfd.readouterr()
    for text in (message, console.out, console.err, (tmp_path / "log.txt").read_text()):
        assert "Traceback" not in text and "ChildFailedError" not in text and "=====" not in text


def test_torchrun_exits_with_its_processes_code_and_names_the_rank(tmp_path):
    script = tmp_path / "k.py"
    script.write_text("import os, sys\nsys.exit(3 if os.environ['RANK'] == '1' else 0)\n")
    done = subprocess.run(kernel_command(script, 2), cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == ["torchrun: the process of rank 1 ended with exit code 3"]


# --- 18: blank lines are no rows ----------------------------------------------------------------------------

def test_validate_counts_the_rows_it_read_and_names_blank_lines(world, capsys):
    rows = len(world.sub.read_text().splitlines()) - 1
    padded = world.write("padded.csv", world.sub.read_text() + "\n\n\n")
    assert main(["validate", str(padded), "--sample", str(world.sample)]) == 0
    assert capsys.readouterr().out == f"{padded}: valid ({rows} rows; 3 blank lines skipped)\n"
    assert main(["validate", str(world.sub), "--sample", str(world.sample)]) == 0
    assert capsys.readouterr().out == f"{world.sub}: valid ({rows} rows)\n"


# --- 24: a failed kernel is quoted by a meaningful line, never a progress bar -------------------------------

BAR = "crop images:   0%|          | 0/64 [00:00<?, ?img/s]"


def test_kaggle_failure_quotes_the_log_not_its_progress_bars(monkeypatch):
    records = [{"stream_name": "stdout", "time": 1.0, "data": "iwc kernel: iwc.stages.crop:main\n"},
               {"stream_name": "stderr", "time": 2.0, "data": "error: the crop images are gone\n"},
               {"stream_name": "stderr", "time": 2.5, "data": "\r" + BAR[:14]},
               {"stream_name": "stderr", "time": 2.6, "data": BAR[14:] + "\r" + BAR + "\n"}]
    client = object.__new__(KaggleClient)
    client.progress, client.poll_s, client.max_poll_s = False, 0.0, 0.0
    monkeypatch.setattr(client, "status", lambda kernel, version: ("ERROR", "exit 0: | 0/64 [00:00<?, ?img/s]"))
    monkeypatch.setattr(client, "_list_outputs_page", lambda kernel, version, token: ([], None, json.dumps(records)))
    with pytest.raises(IwcError) as err:
        client.wait("me/iwc-crop", 3, deadline_s=60)
    message = str(err.value)
    assert message.endswith("ended ERROR. Last lines of its log:\niwc kernel: iwc.stages.crop:main\n"
                            "error: the crop images are gone"), message
    assert "0/64" not in message
    assert BAR in log_lines(json.dumps(records))  # the saved log keeps the bar's last state


def test_local_failure_quotes_the_last_line_that_is_not_a_bar(tmp_path):
    script = tmp_path / "k.py"
    script.write_text(f"import sys\nprint('loading the cache', flush=True)\nprint({BAR!r}, file=sys.stderr)\n"
                      "sys.exit(1)\n")
    with pytest.raises(IwcError, match=r"failed with exit code 1: loading the cache; the lines above"):
        run_streamed([sys.executable, str(script)], dict(os.environ), tmp_path, None, "k.py")


def test_meaningful_lines_drop_bars_and_their_fragments():
    lines = ["epoch 3/10 acc 0.5", " 42%|####2     ", "| 0/64 [00:00<?, ?img/s]", "0it [00:00, ?it/s]", "",
             "error: 5/7 files missing"]
    assert meaningful(lines) == ["epoch 3/10 acc 0.5", "error: 5/7 files missing"]


# --- 25: invoke's usage errors exit 2 -----------------------------------------------------------------------

def test_invoke_with_an_unknown_option_exits_2_in_one_line():
    done = invoke("reproduce", "--bogus")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["iwc: error: No idea what '--bogus' is! see `invoke --help <task>`"]
