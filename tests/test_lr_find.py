"""`iwc lr-find`: the lr range test, its suggestion and plot, and the command on the small demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from iwc.host.cli import main
from iwc.recipe import Model, Stage
from iwc.train.lr_find import _suggest, lr_range_test, plot_lr_find
from iwc.train.model import create_model

M = Model(arch="test_resnet", pretrained=False, image_size=32, cache_size=36, batch_size=16,
          stages=(Stage(epochs=1, lr_lo=1e-3, lr_hi=1e-2, frozen=False, mixup=0.4),))


def test_the_rate_grows_exponentially_and_a_diverging_loss_stops_the_test(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (40, 36, 36, 3), dtype=np.uint8)
    labels = np.arange(40) % 3
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(lr_range_test(create_model(M, 3), images, labels, M, 0, torch.device("cpu"), batches=30,
                                  start=1e-5, end=1e3, progress=False))
    result = runs[0]
    assert result.lrs[0] == pytest.approx(1e-5) and result.losses == runs[1].losses  # seeded: the same losses
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, np.log(1e8) / 29)
    assert len(result.lrs) < 30  # an lr of 1e3 diverges before the last batch
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1] and result.min_loss_lr in result.lrs
    plot_lr_find(result, tmp_path / "a.png", "t")
    plot_lr_find(result, tmp_path / "b.png", "t")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_the_suggestion_is_the_steepest_descent_past_the_first_batches():
    lrs = list(10.0 ** np.linspace(-7, 1, 33))  # four points a decade
    # a settling drop in the first batches (left out), steepest at 1e-3, lowest at 1e-1, then divergence
    smoothed = [3.0, 2.0, *[2.0 - 0.001 * i for i in range(14)], 1.9, 1.2, 1.0, *[0.95 - 0.01 * i for i in range(6)],
                0.9, *np.linspace(1.0, 5.0, 7)]
    result = _suggest(lrs, smoothed, smoothed)
    assert result.suggestion == pytest.approx(lrs[17]) and result.min_loss_lr == pytest.approx(lrs[24])
    short = _suggest(lrs[:12], smoothed[:12], smoothed[:12])  # too few batches to leave both ends out
    assert short.suggestion == pytest.approx(short.min_loss_lr / 10)


def test_lr_find_command_on_the_small_demo(small_demo, tmp_path, capsys):
    tiny = ["full.image_size=32", "full.cache_size=36", "full.batch_size=16"]
    args = ["lr-find", "--model", "full", "--data", str(small_demo.root), "--batches", "12", "--out",
            str(tmp_path), "--recipe", "demo", *[a for o in tiny for a in ("--set", o)]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    figures = json.loads((tmp_path / "lr_find_full.json").read_text())
    assert len(figures["lrs"]) == len(figures["losses"]) <= 12
    assert f"--set full.stages.0.lr_hi={figures['suggestion']:.2g}" in printed
    with Image.open(tmp_path / "lr_find_full.png") as plot:
        assert plot.format == "PNG" and plot.size == (700, 400)
    assert main(["lr-find", "--model", "nope", "--data", str(small_demo.root)]) == 2
    assert "iwc: error: --model 'nope' is not a model of recipe 'demo'" in capsys.readouterr().err
