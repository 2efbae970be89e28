"""iwc.train.fit: batches, one-cycle schedule, mixup, determinism, exact resume; the GPU benchmark's CPU skip."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iwc.errors import IwcError
from iwc.recipe import Augment, Model, Stage
from iwc.train.augment import plain
from iwc.train.fit import (
    CHECKPOINT,
    CURVES,
    HISTORY,
    epoch_batches,
    fit,
    mixup,
    one_cycle,
    soft_cross_entropy,
    soft_targets,
)
from iwc.train.model import create_model

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 3
M = Model(
    arch="test_resnet", pretrained=False, image_size=32, cache_size=36, batch_size=16, label_smoothing=0.1,
    augment=Augment(rotate_deg=10, zoom_max=1.2, warp=0.2),
    stages=(Stage(epochs=2, lr_lo=1e-2, lr_hi=1e-2, frozen=True, mixup=0.4),
            Stage(epochs=2, lr_lo=1e-4, lr_hi=1e-3, frozen=False)),
)


class Interrupt(Exception):
    pass


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 36, 36, 3), dtype=np.uint8), rng.integers(0, CLASSES, n).astype(np.int64)


TRAIN = _data(40, 1)  # 3 batches per epoch: 16 + 16 + 8
VAL = _data(12, 2)


def _fit(out_dir: Path, m: Model = M, seed: int = 0, **kwargs) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(123)  # the same initial weights whatever `seed` trains with
    model = create_model(m, CLASSES)
    result = fit(model, *TRAIN, *VAL, m=m, seed=seed, out_dir=out_dir, device="cpu", progress=False, **kwargs)
    return model, result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted fit that the other tests compare against."""
    out = tmp_path_factory.mktemp("reference")
    model, result = _fit(out)
    return out, model, result


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_epoch_batches_visit_every_image_once_in_sorted_batches():
    g = torch.Generator().manual_seed(0)
    first, second = epoch_batches(10, 4, g), epoch_batches(10, 4, g)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(np.concatenate(first).tolist()) == list(range(10))
    assert all(np.all(np.diff(b) > 0) for b in first)
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_one_cycle_warms_up_to_the_peak_then_anneals():
    torch.manual_seed(0)
    model = create_model(M, CLASSES)
    stage = Stage(epochs=2, lr_lo=1e-4, lr_hi=1e-2, frozen=False, pct_start=0.25)
    optimizer, scheduler = one_cycle(model, stage, total_steps=40)
    lrs, beta1 = [], []
    for _ in range(40):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        beta1.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()  # no gradients: nothing moves, but the scheduler sees a real step order
        scheduler.step()
    lrs = np.array(lrs)
    peak = np.array([1e-4, 1e-3, 1e-2])
    np.testing.assert_allclose(lrs[0], peak / 25)
    assert lrs[:, 2].argmax() == 9  # pct_start * 40 steps, counted from 0
    np.testing.assert_allclose(lrs[9], peak)
    np.testing.assert_allclose(lrs[-1], peak / 25e4, rtol=0.05)
    assert np.all(np.diff(lrs[:10, 2]) > 0) and np.all(np.diff(lrs[9:, 2]) < 0)
    np.testing.assert_allclose(lrs[:, 1] / lrs[:, 0], 10)  # the groups keep their geometric spread
    assert beta1[0] == pytest.approx(0.95) and beta1[9] == pytest.approx(0.85)


def test_soft_targets_smooth_and_match_cross_entropy():
    y = torch.tensor([0, 2, 1])
    t = soft_targets(y, 4, 0.2)
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    assert t[0, 0].item() == pytest.approx(0.85) and t[0, 1].item() == pytest.approx(0.05)
    logits = torch.randn(3, 4)
    torch.testing.assert_close(soft_cross_entropy(logits, soft_targets(y, 4, 0.0)), F.cross_entropy(logits, y))


def test_mixup_blends_images_and_labels_with_the_same_weights():
    n, classes = 32, 32
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()  # image i = i
    targets = soft_targets(torch.arange(n), classes, 0.0)
    mixed, mixed_targets = mixup(x, targets, 0.4, np.random.default_rng(0))
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(n))
    assert (mixed_targets.max(1).values < 1).any() and (mixed_targets.max(1).values >= 0.5).all()
    expected_pixel = mixed_targets @ torch.arange(classes, dtype=torch.float32)  # sum of lam_k * k
    torch.testing.assert_close(mixed[:, 0, 0, 0], expected_pixel)


def test_fit_writes_history_curves_and_checkpoint(reference):
    out, _, result = reference
    history = json.loads((out / HISTORY).read_text())
    assert history == result.history
    assert [(r["stage"], r["epoch"]) for r in history] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "images_per_s"} <= history[0].keys()
    assert all(0 <= r["val_acc"] <= 1 and r["images_per_s"] > 0 for r in history)
    assert (out / CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.checkpoint == out / CHECKPOINT and result.checkpoint.is_file()


def test_same_seed_gives_identical_weights_and_another_seed_does_not(reference, tmp_path):
    _, model, result = reference
    again, again_result = _fit(tmp_path / "again")
    _assert_same_weights(model, again)
    assert [r["train_loss"] for r in again_result.history] == [r["train_loss"] for r in result.history]
    one_epoch = dataclasses.replace(M, stages=(dataclasses.replace(M.stages[0], epochs=1),))
    a, _ = _fit(tmp_path / "seed0", one_epoch, seed=0)
    b, _ = _fit(tmp_path / "seed1", one_epoch, seed=1)
    assert not torch.equal(a.fc.weight, b.fc.weight)


def test_interrupted_fit_resumes_to_the_same_weights(reference, tmp_path):
    _, model, result = reference
    stopped_at = []

    def crash(record):  # each run dies right after saving its first epoch
        stopped_at.append((record["stage"], record["epoch"]))
        raise Interrupt

    for _ in range(3):
        with pytest.raises(Interrupt):
            _fit(tmp_path, on_epoch_end=crash)
    assert stopped_at == [(0, 0), (0, 1), (1, 0)]  # mid stage 1, at the stage boundary, mid stage 2
    resumed, resumed_result = _fit(tmp_path)
    _assert_same_weights(model, resumed)
    assert [r["train_loss"] for r in resumed_result.history] == [r["train_loss"] for r in result.history]
    assert [r["val_loss"] for r in resumed_result.history] == [r["val_loss"] for r in result.history]


def test_finished_fit_reloads_its_weights_without_training(reference):
    out, model, result = reference
    calls = []
    again, again_result = _fit(out, on_epoch_end=calls.append)
    assert calls == []
    _assert_same_weights(model, again)
    assert again_result.history == result.history


def test_checkpoint_of_another_recipe_is_refused(reference):
    out = reference[0]
    with pytest.raises(IwcError, match="another recipe"):
        _fit(out, dataclasses.replace(M, label_smoothing=0.0))


def test_injected_augment_sees_every_image_once_per_epoch(tmp_path):
    sizes = []

    def stand_in(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sizes.append(len(x))
        return plain(x, M.image_size)

    m = dataclasses.replace(M, stages=(dataclasses.replace(M.stages[1], epochs=2),))
    _fit(tmp_path, m, augment=stand_in)
    assert sizes == [16, 16, 8] * 2


def test_labels_outside_the_model_classes_are_an_iwc_error(tmp_path):
    model = create_model(M, CLASSES)
    images, labels = TRAIN
    with pytest.raises(IwcError, match="class indexes"):
        fit(model, images, labels + CLASSES, None, None, M, 0, tmp_path, "cpu", progress=False)
    with pytest.raises(IwcError, match="labels for"):
        fit(model, images, labels[:-1], None, None, M, 0, tmp_path, "cpu", progress=False)
    with pytest.raises(IwcError, match="no images"):
        fit(model, images, labels, images[:0], labels[:0], M, 0, tmp_path, "cpu", progress=False)


def test_gpu_benchmark_skips_cleanly_without_cuda(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["skipped"] is True and "no CUDA device" in result["reason"]
    assert "no CUDA device: skipped" in run.stdout
