"""Kaggle layout: env overrides and input discovery under both mount layouts."""

import tempfile
from pathlib import Path

import pytest

from iwc import layout
from iwc.errors import IwcError
from iwc.layout import (
    COMPETITION_MARKER,
    find_competition,
    find_kernel_output,
    find_resized,
    input_root,
    scratch_dir,
    working_dir,
)

MANIFEST = "full_model.manifest.json"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def legacy_root(root: Path) -> Path:
    touch(root / "iwildcam-2020-fgvc7" / COMPETITION_MARKER)
    touch(root / "iwildcam-2020-fgvc7" / "train" / "a.jpg")
    touch(root / "iwildcam2020-256" / "256_images" / "train" / "images" / "a.jpg")
    touch(root / "iwc-full-image-model" / MANIFEST)
    return root


def new_root(root: Path) -> Path:
    touch(root / "competitions" / "iwildcam-2020-fgvc7" / COMPETITION_MARKER)
    touch(root / "datasets" / "qitvision" / "iwildcam2020-256" / "256_images" / "test" / "images" / "b.jpg")
    touch(root / "notebooks" / "someone" / "iwc-full-image-model" / MANIFEST)
    return root


def test_paths_default_to_kaggle(monkeypatch):
    for var in ("IWC_INPUT_ROOT", "IWC_WORKING_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert (input_root(), working_dir()) == (Path("/kaggle/input"), Path("/kaggle/working"))


def test_env_overrides_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("IWC_INPUT_ROOT", str(tmp_path / "in"))
    monkeypatch.setenv("IWC_WORKING_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("IWC_SCRATCH_DIR", str(tmp_path / "scratch"))
    assert (input_root(), working_dir()) == (tmp_path / "in", tmp_path / "out")
    assert scratch_dir() == tmp_path / "scratch"
    assert (tmp_path / "scratch").is_dir()


def test_scratch_defaults_to_system_temp(monkeypatch):
    monkeypatch.delenv("IWC_SCRATCH_DIR", raising=False)
    assert scratch_dir() == Path(tempfile.gettempdir()) / "iwc-scratch"


def test_scratch_inside_the_working_dir_is_refused_before_anything_is_made(monkeypatch, tmp_path):
    monkeypatch.setenv("IWC_WORKING_DIR", str(tmp_path / "working"))
    monkeypatch.setenv("IWC_SCRATCH_DIR", str(tmp_path / "working" / "cache"))
    with pytest.raises(IwcError, match=r"inside the working dir .*point \$IWC_SCRATCH_DIR at a folder outside"):
        scratch_dir()
    assert not (tmp_path / "working").exists()


def test_discovers_legacy_layout(tmp_path):
    root = legacy_root(tmp_path)
    assert find_competition(root) == root / "iwildcam-2020-fgvc7"
    assert find_resized(root) == root / "iwildcam2020-256"
    assert find_kernel_output(root, MANIFEST) == root / "iwc-full-image-model"


def test_discovers_new_layout(tmp_path):
    root = new_root(tmp_path)
    assert find_competition(root) == root / "competitions" / "iwildcam-2020-fgvc7"
    assert find_resized(root) == root / "datasets" / "qitvision" / "iwildcam2020-256"
    assert find_kernel_output(root, MANIFEST) == root / "notebooks" / "someone" / "iwc-full-image-model"


def test_root_defaults_to_input_root(monkeypatch, tmp_path):
    monkeypatch.setenv("IWC_INPUT_ROOT", str(new_root(tmp_path)))
    assert find_competition() == tmp_path / "competitions" / "iwildcam-2020-fgvc7"


def test_follows_symlinked_mounts_and_counts_a_folder_once(tmp_path):
    real = tmp_path / "real"
    touch(real / COMPETITION_MARKER)
    root = tmp_path / "input"
    (root / "competitions").mkdir(parents=True)
    (root / "competitions" / "iwildcam-2020-fgvc7").symlink_to(real, target_is_directory=True)
    (root / "iwildcam-2020-fgvc7").symlink_to(real, target_is_directory=True)
    found = find_competition(root)
    assert found.resolve() == real.resolve()
    assert found.parent in (root, root / "competitions")


def test_missing_input_says_what_was_searched_and_what_to_attach(tmp_path):
    touch(tmp_path / "datasets" / "someone" / "other" / "x.csv")
    with pytest.raises(IwcError) as e:
        find_competition(tmp_path)
    msg = str(e.value)
    assert COMPETITION_MARKER in msg and "datasets/someone/other" in msg
    assert "iwildcam-2020-fgvc7" in msg and "competition_sources" in msg


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(IwcError, match="IWC_INPUT_ROOT"):
        find_resized(tmp_path / "nowhere")


def test_two_matches_are_ambiguous(tmp_path):
    touch(tmp_path / "a" / MANIFEST)
    touch(tmp_path / "notebooks" / "me" / "b" / MANIFEST)
    with pytest.raises(IwcError, match="ambiguous") as e:
        find_kernel_output(tmp_path, MANIFEST)
    assert str(tmp_path / "a") in str(e.value) and str(tmp_path / "notebooks" / "me" / "b") in str(e.value)


def test_search_depth_is_bounded(tmp_path):
    touch(tmp_path / "1" / "2" / "3" / "4" / MANIFEST)
    assert find_kernel_output(tmp_path, MANIFEST) == tmp_path / "1" / "2" / "3" / "4"
    touch(tmp_path / "a" / "b" / "c" / "d" / "e" / "other.json")
    with pytest.raises(IwcError, match="not found"):
        find_kernel_output(tmp_path, "other.json")


def test_image_folders_are_not_searched(tmp_path):
    touch(tmp_path / "comp" / "train" / "sub" / MANIFEST)
    with pytest.raises(IwcError, match="not found"):
        find_kernel_output(tmp_path, MANIFEST)


def test_big_folders_are_not_searched(monkeypatch, tmp_path):
    monkeypatch.setattr(layout, "MAX_ENTRIES", 5)
    touch(tmp_path / "big" / "sub" / MANIFEST)
    assert find_kernel_output(tmp_path, MANIFEST) == tmp_path / "big" / "sub"
    for i in range(5):
        touch(tmp_path / "big" / f"{i}.jpg")
    with pytest.raises(IwcError, match="not found"):
        find_kernel_output(tmp_path, MANIFEST)
