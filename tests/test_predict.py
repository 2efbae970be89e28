"""iwc.train.predict: TTA probabilities keyed by image id x original category id."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from iwc.data.categories import CategoryMap
from iwc.errors import IwcError
from iwc.recipe import TTA, Model
from iwc.train.augment import plain
from iwc.train.model import create_model
from iwc.train.predict import predict_tta

CATEGORIES = CategoryMap([0, 3, 75, 290, 404])  # sparse original ids
M = Model(arch="test_resnet", pretrained=False, image_size=32, cache_size=40, batch_size=8,
          tta=TTA(views=3, beta=0.4, scale=1.35))
IMAGES = np.random.default_rng(0).integers(0, 256, (11, 40, 40, 3), dtype=np.uint8)  # 2 batches: 8 + 3
IDS = np.array([f"img{i:02d}" for i in range(len(IMAGES))])


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return create_model(M, len(CATEGORIES)).eval()


def _plain_probs(net: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return net(plain(torch.from_numpy(IMAGES), M.image_size)).softmax(1).numpy()


def test_rows_sum_to_one_keyed_by_image_and_original_category(net):
    table = predict_tta(net, IMAGES, IDS, CATEGORIES, M, "cpu", seed=0, progress=False)
    assert table.image_ids.tolist() == IDS.tolist()
    assert table.category_ids.tolist() == [0, 3, 75, 290, 404]
    assert table.probs.dtype == np.float32 and table.probs.shape == (11, 5)
    np.testing.assert_allclose(table.probs.sum(1), 1, atol=1e-5)


def test_same_seed_same_table_other_seed_other_views(net):
    a = predict_tta(net, IMAGES, IDS, CATEGORIES, M, "cpu", seed=0, progress=False)
    b = predict_tta(net, IMAGES, IDS, CATEGORIES, M, "cpu", seed=0, progress=False)
    c = predict_tta(net, IMAGES, IDS, CATEGORIES, M, "cpu", seed=1, progress=False)
    assert np.array_equal(a.probs, b.probs)
    assert not np.array_equal(a.probs, c.probs)


def test_no_views_or_full_beta_is_the_plain_prediction(net):
    expected = _plain_probs(net)
    for tta in (TTA(views=0), TTA(views=2, beta=1.0)):
        table = predict_tta(net, IMAGES, IDS, CATEGORIES, dataclasses.replace(M, tta=tta), "cpu", 0, False)
        np.testing.assert_allclose(table.probs, expected, atol=1e-6)


def test_final_is_beta_plain_plus_the_rest_on_the_mean_of_views(net):
    class Mirrors:  # a stand-in: view i = the image mirrored i times, no randomness
        def tta_view(self, x, index, scale, generator=None):
            return plain(x.flip(2) if index % 2 else x, M.image_size)

    p_plain = _plain_probs(net)
    with torch.no_grad():
        p_mirror = net(plain(torch.from_numpy(IMAGES).flip(2), M.image_size)).softmax(1).numpy()
    m = dataclasses.replace(M, tta=TTA(views=2, beta=0.25))
    table = predict_tta(net, IMAGES, IDS, CATEGORIES, m, "cpu", seed=0, progress=False, augment=Mirrors())
    np.testing.assert_allclose(table.probs, 0.25 * p_plain + 0.75 * (p_plain + p_mirror) / 2, atol=1e-6)


def test_mismatched_inputs_are_an_iwc_error(net):
    with pytest.raises(IwcError, match="category map"):
        predict_tta(net, IMAGES, IDS, CategoryMap([1, 2]), M, "cpu", seed=0, progress=False)
    with pytest.raises(IwcError, match="image ids"):
        predict_tta(net, IMAGES, IDS[:-1], CATEGORIES, M, "cpu", seed=0, progress=False)
