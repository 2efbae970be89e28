"""Atomic writes and probability tables."""

import numpy as np
import pytest

from iwc.errors import IwcError
from iwc.io import atomic_write, child_path, is_plain_name, sha256_file, write_json
from iwc.probs import ProbTable, categories_path


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("good")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "good"
    assert list(tmp_path.iterdir()) == [path]


def test_write_json_is_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert sha256_file(tmp_path / "a.json") == sha256_file(tmp_path / "b.json")


@pytest.mark.parametrize("name", ["img.jpg", "a..b", "...jpg", ".hidden", "x y", "ünïcode", "C:x"])
def test_child_path_joins_a_plain_file_name(tmp_path, name):
    assert is_plain_name(name)
    assert child_path(tmp_path, name, "image id") == tmp_path / name


@pytest.mark.parametrize("name", ["", ".", "..", "../victim.jpg", "a/b.jpg", "/etc/passwd", "a\\b", "..\\x",
                                  "a\x00b", "sub/", None, 5])
def test_child_path_refuses_what_is_no_plain_file_name(tmp_path, name):
    assert not is_plain_name(name)
    with pytest.raises(IwcError, match=r"^image id 'x' \(train JSON\): .* is not a plain file name"):
        child_path(tmp_path, name, "image id 'x' (train JSON)")


def test_prob_table_round_trip(tmp_path):
    t = ProbTable(["x", "y"], [0, 72], np.array([[0.25, 0.75], [1.0, 0.0]]))
    t.save(tmp_path / "p.npz")
    u = ProbTable.load(tmp_path / "p.npz")
    assert u.image_ids.tolist() == ["x", "y"] and u.category_ids.tolist() == [0, 72]
    assert u.probs.dtype == np.float32 and np.array_equal(u.probs, t.probs)
    assert u.argmax_category().tolist() == [72, 0]
    assert categories_path(tmp_path / "p.npz").is_file()


@pytest.mark.parametrize(
    ("ids", "cats", "probs", "message"),
    [
        (["a"], [3, 1], [[0.5, 0.5]], "increasing"),
        (["a", "a"], [1], [[1.0], [1.0]], "unique"),
        (["a"], [1, 2], [[1.0]], "shape"),
    ],
)
def test_prob_table_rejects_bad_tables(ids, cats, probs, message):
    with pytest.raises(IwcError, match=message):
        ProbTable(ids, cats, np.array(probs))


def test_missing_table_says_which_stage(tmp_path):
    with pytest.raises(IwcError, match="run the stage"):
        ProbTable.load(tmp_path / "nope.npz")
