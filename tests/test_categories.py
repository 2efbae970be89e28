import json

import numpy as np
import pytest

from iwc.data.categories import CategoryMap
from iwc.errors import IwcError


def test_from_labels_maps_sparse_ids_to_contiguous_indices_and_back():
    cmap = CategoryMap.from_labels([372, 0, 675, 0, 75, 372])
    assert len(cmap) == 4
    assert cmap.category_ids.tolist() == [0, 75, 372, 675]
    index = cmap.to_index([675, 0, 372, 372, 75])
    assert index.dtype == np.int64 and index.tolist() == [3, 0, 2, 2, 1]
    back = cmap.to_category(index)
    assert back.dtype == np.int64 and back.tolist() == [675, 0, 372, 372, 75]


def test_unknown_category_id_is_an_iwc_error_naming_it():
    cmap = CategoryMap([0, 75, 372])
    for unknown in ([0, 76], [999], [-1]):
        with pytest.raises(IwcError, match=rf"\[{unknown[-1]}\] are not among the 3 classes"):
            cmap.to_index(unknown)


def test_ids_must_be_unique_and_increasing():
    for ids in ([3, 1], [1, 1]):
        with pytest.raises(IwcError, match="from_labels"):
            CategoryMap(ids)


def test_index_out_of_range_is_an_iwc_error():
    with pytest.raises(IwcError, match="out of range"):
        CategoryMap([0, 5]).to_category([2])


def test_save_load_round_trip_writes_plain_json(tmp_path):
    cmap = CategoryMap([0, 75, 372, 675])
    cmap.save(tmp_path / "model.categories.json")
    assert json.loads((tmp_path / "model.categories.json").read_text()) == {"category_ids": [0, 75, 372, 675]}
    loaded = CategoryMap.load(tmp_path / "model.categories.json")
    assert loaded == cmap
    assert loaded != CategoryMap([0, 75])


def test_load_missing_or_malformed_file_is_an_iwc_error(tmp_path):
    with pytest.raises(IwcError, match="does not exist"):
        CategoryMap.load(tmp_path / "absent.json")
    for text in ('{"ids": [1]}', '{"category_ids": [1, "2"]}', "not json"):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(IwcError, match="unreadable"):
            CategoryMap.load(tmp_path / "bad.json")
