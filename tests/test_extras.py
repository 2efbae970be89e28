"""A kernel's per-model outputs packed into one archive (iwc.extras) and unpacked by the host (iwc.host.outputs)."""

import zipfile

import pytest

from iwc.errors import IwcError
from iwc.extras import EXTRAS_ZIP, pack, per_model_files
from iwc.host.outputs import unpack_extras


def test_per_model_files_are_packed_byte_stable_and_unpacked_as_written(tmp_path):
    files = {"confusion_crop.png": b"\x89PNG crop", "confusion_crop2.csv": b"a,b\n", "top_losses_full.png": b"f",
             "report.md": b"# r", "full_test.npz": b"npz"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    names = per_model_files(tmp_path, ["full", "crop", "crop2"])
    assert names == ["confusion_crop.png", "confusion_crop2.csv", "top_losses_full.png"]  # not full_test.npz
    assert pack(tmp_path, names) == names
    assert sorted(p.name for p in tmp_path.iterdir()) == [EXTRAS_ZIP, "full_test.npz", "report.md"]
    first = (tmp_path / EXTRAS_ZIP).read_bytes()
    assert unpack_extras(tmp_path) == names
    assert {n: (tmp_path / n).read_bytes() for n in names} == {n: files[n] for n in names}
    pack(tmp_path, names)
    assert (tmp_path / EXTRAS_ZIP).read_bytes() == first  # no time of writing in the archive
    assert pack(tmp_path, []) == [] and unpack_extras(tmp_path / "nothing") == []


@pytest.mark.parametrize(("member", "error"), [("../outside.png", "not a plain file name"), (None, "is damaged")])
def test_a_foreign_or_damaged_archive_is_one_error_and_writes_nothing_outside(tmp_path, member, error):
    archive = tmp_path / EXTRAS_ZIP
    if member is None:
        archive.write_bytes(b"PK\x03\x04 not a zip")
    else:
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(member, b"x")
    with pytest.raises(IwcError, match=error):
        unpack_extras(tmp_path)
    assert not (tmp_path.parent / "outside.png").exists()
