"""The Kaggle client module on its own: the only importer of `kaggle`, and lazily; log parsing; unpacking."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from iwc.errors import IwcError
from iwc.host.kaggle_client import (
    OUTPUT_LISTING_LIMIT,
    POLL_ENV,
    KaggleClient,
    OutputFile,
    _safe_relative,
    log_lines,
    poll_from_env,
    read_kernel_metadata,
)

PACKAGE = Path(__file__).resolve().parents[1] / "iwc"


def _kaggle_imports(tree: ast.AST) -> list[ast.AST]:
    found = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n.split(".")[0] in ("kaggle", "kagglesdk") for n in names):
            found.append(node)
    return found


def test_only_the_client_imports_kaggle_and_only_inside_functions():
    trees = {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text(encoding="utf-8"))
             for p in PACKAGE.rglob("*.py") if not p.name.startswith("sandbox")}  # the sandbox server is no client
    assert {name for name, tree in trees.items() if _kaggle_imports(tree)} == {"host/kaggle_client.py"}
    client = trees["host/kaggle_client.py"]
    assert not set(map(id, client.body)) & set(map(id, _kaggle_imports(client)))  # none at module level


def test_the_cli_and_the_backend_load_without_importing_kaggle():
    code = ("import sys, iwc.host.cli, iwc.host.kaggle_cli, iwc.host.backends.kaggle, iwc.host.kaggle_client\n"
            "iwc.host.cli.build_parser()\n"
            "assert not {'kaggle', 'kagglesdk'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_kaggle_log_records_become_lines_and_plain_text_stays():
    log = '[{"stream_name": "stdout", "time": 0.1, "data": "a\\n"}\n,{"stream_name": "stderr", "time": 0.2, ' \
          '"data": "b\\r50%\\rdone\\nc\\n"}]'
    assert log_lines(log) == ["a", "done", "c"]
    assert log_lines("plain\ntext\n") == ["plain", "text"]
    assert log_lines("") == []


def _archive(path, members: dict[str, str]):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


def test_unpack_swaps_the_folder_in_keeping_what_was_there_and_the_kept_names(tmp_path):
    from iwc.host.kaggle_client import COMPLETE_MARKER, _unpack

    folder = tmp_path / "comp"
    folder.mkdir()
    (folder / "meta.json").write_text("mine")
    (folder / "notes.txt").write_text("user's")
    archive = _archive(tmp_path / "a.zip", {"meta.json": "theirs", "train/x.jpg": "jpeg"})
    _unpack(archive, folder, keep={"meta.json"})
    assert {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()} == {
        "meta.json": "mine", "notes.txt": "user's", "train/x.jpg": "jpeg",
        COMPLETE_MARKER: (folder / COMPLETE_MARKER).read_text()}
    assert not archive.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["comp"]


@pytest.mark.parametrize("broken", ["member-outside", "fails-late"])
def test_an_unpack_that_fails_leaves_the_folder_whole_and_nothing_beside_it(tmp_path, monkeypatch, broken):
    from iwc.errors import IwcError
    from iwc.host import kaggle_client

    folder = tmp_path / "comp"
    folder.mkdir()
    (folder / "meta.json").write_text("mine")
    members = {"../evil.txt": "x"} if broken == "member-outside" else {"train/x.jpg": "jpeg"}
    archive = _archive(tmp_path / "a.zip", members)
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    if broken == "fails-late":  # after the extraction, while the marker is written
        monkeypatch.setattr(kaggle_client, "write_json", disk_full)
    with pytest.raises((IwcError, OSError)):
        kaggle_client._unpack(archive, folder, keep={"meta.json"})
    assert [p.name for p in folder.iterdir()] == ["meta.json"] and (folder / "meta.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "comp"]


def test_a_listing_as_long_as_kaggles_limit_is_refused_before_anything_is_pulled(tmp_path):
    client = KaggleClient.__new__(KaggleClient)  # no credential: nothing here reaches Kaggle
    client.outputs = lambda kernel, version: ([OutputFile(f"f{i}.png", "u") for i in range(OUTPUT_LISTING_LIMIT)], "")
    (tmp_path / "working").mkdir()
    with pytest.raises(IwcError, match=r"lists 500 output files.*at most 50 \(iwc.extras\)"):
        client.pull("me/kernel", 3, tmp_path / "working")
    assert list(tmp_path.iterdir()) == [tmp_path / "working"] and not any((tmp_path / "working").iterdir())


@pytest.mark.parametrize("name", ["submission.csv", "full/history.json", "./a.txt"])
def test_an_output_name_below_the_folder_is_kept(name):
    assert _safe_relative(name, "kernel v3") == Path(name)


@pytest.mark.parametrize("name", ["", ".", "../x", "a/../../x", "/etc/passwd", "a\x00b", "..\\x"])
def test_an_output_name_that_leaves_the_folder_is_refused(name):
    with pytest.raises(IwcError, match=r"kernel v3: output file name .* points outside the output folder"):
        _safe_relative(name, "kernel v3")


@pytest.mark.parametrize("code_file", ["../outside.py", "/etc/passwd", ["run.py"]])
def test_kernel_metadata_code_file_must_name_a_file_in_the_kernel_folder(tmp_path, code_file):
    folder = tmp_path / "kernel"
    folder.mkdir()
    (tmp_path / "outside.py").write_text("print('not this kernel')\n")
    meta = {"id": "me/some-kernel", "title": "some kernel", "code_file": code_file, "language": "python",
            "kernel_type": "script"}
    (folder / "kernel-metadata.json").write_text(json.dumps(meta))
    with pytest.raises(IwcError, match=r"kernel-metadata.json: code_file: .* is not a plain file name"):
        read_kernel_metadata(folder)


def test_iwc_kaggle_poll_s_fixes_the_wait_between_polls_and_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.setenv(POLL_ENV, "0.5")
    assert poll_from_env() == 0.5
    monkeypatch.delenv(POLL_ENV)
    assert poll_from_env() is None
    for bad in ("soon", "0", "-1", "nan", "601"):
        monkeypatch.setenv(POLL_ENV, bad)
        with pytest.raises(IwcError, match=f"{POLL_ENV}='{bad}': give the seconds"):
            poll_from_env()
