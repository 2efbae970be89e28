"""A model stage's image sheets (issue 15): a batch as the network sees it, and the top losses."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from iwc.probs import ProbTable
from iwc.recipe import Augment
from iwc.train.augment import BatchAugment
from iwc.train.sheets import denormalise, show_batch, top_losses

STILL = Augment(rotate_deg=0.0, zoom_max=1.0, warp=0.0, brightness=0.0, contrast=0.0, flip=False)
NAMES = {0: "empty", 5: "deer", 9: "a very long category name indeed, past any cell"}


def _images(n: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_show_batch_shows_the_augmented_inputs_denormalised_and_a_fixed_size_png(tmp_path):
    images, labels = _images(100), np.array([0, 5, 9, 5] * 25)
    augment = BatchAugment(Augment(), 32)
    shown = show_batch(images, labels, NAMES, augment, 3, tmp_path / "a.png")
    assert shown.shape == (16, 32, 32, 3)
    pick = np.sort(np.random.default_rng(3).choice(100, 16, replace=False))
    network = augment(torch.from_numpy(images[pick]), torch.Generator().manual_seed(3))  # what the model gets
    np.testing.assert_array_equal(shown, denormalise(network))
    # With no augmentation and no resize the sheet shows the cached pixels themselves.
    plain = show_batch(images, labels, NAMES, BatchAugment(STILL, 40), 3, tmp_path / "still.png")
    np.testing.assert_allclose(plain, images[pick] / 255, atol=2e-3)
    show_batch(images, labels, NAMES, augment, 3, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as sheet:
        assert sheet.format == "PNG" and min(sheet.size) > 300 and max(sheet.size) <= 2000
        assert "Software" not in sheet.info


def test_top_losses_highest_first_ties_by_id_unknown_categories_left_out(tmp_path):
    ids = np.array(["e", "d", "c", "b", "a"])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4]], np.float32)
    table = ProbTable(ids, [0, 5], probs)
    truth = np.array([0, 0, 0, 9, 5])  # "b" is of a category the model never trained on
    top = top_losses(_images(5), truth, table, NAMES, tmp_path / "t.png", "crops")
    assert [r["id"] for r in top] == ["c", "d", "a", "e"]  # c and d tie (p_true 0.2): by id
    assert top[0] == {"id": "c", "true": 0, "predicted": 5, "loss": round(float(-np.log(np.float32(0.2))), 4),
                      "p_true": 0.2}
    with Image.open(tmp_path / "t.png") as sheet:
        assert max(sheet.size) <= 2000


def test_sheets_stay_within_2000_px_whatever_the_counts(tmp_path):
    n = 1000
    rng = np.random.default_rng(1)
    table = ProbTable(np.arange(n).astype(str), np.arange(300), rng.dirichlet(np.ones(300), n))
    top = top_losses(_images(n, 16), rng.integers(0, 300, n), table, {}, tmp_path / "t.png")
    show_batch(_images(n, 16), np.zeros(n, int), {}, BatchAugment(Augment(), 224), 0, tmp_path / "s.png")
    assert len(top) == 16
    for name in ("t.png", "s.png"):
        with Image.open(tmp_path / name) as sheet:
            assert max(sheet.size) <= 2000
    empty = ProbTable(np.array([], str), [0, 5], np.zeros((0, 2)))
    assert top_losses(_images(0), np.array([], int), empty, NAMES, tmp_path / "none.png") == []
    with Image.open(tmp_path / "none.png") as sheet:
        assert sheet.format == "PNG"
