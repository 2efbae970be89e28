"""iwc.train.model: weights sources, freezing, discriminative learning-rate groups."""

from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from iwc.errors import IwcError
from iwc.recipe import Model
from iwc.train import model as model_mod
from iwc.train.model import create_model, layer_groups, param_groups, set_frozen

TINY = Model(arch="test_resnet", pretrained=False, image_size=32, cache_size=36, batch_size=8)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _net(num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(TINY, num_classes)


def test_random_init_has_the_requested_head():
    net = _net(7)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_arch_is_an_iwc_error():
    with pytest.raises(IwcError, match="not a timm architecture"):
        create_model(dataclasses.replace(TINY, arch="no_such_net"), 3)


def test_offline_hub_download_says_how_to_attach_weights(monkeypatch):
    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return timm.create_model(name, **kwargs)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no probe: the download itself fails (weights not cached)
    monkeypatch.setattr(model_mod.timm, "create_model", offline)
    with pytest.raises(IwcError, match="weights_file"):
        create_model(dataclasses.replace(TINY, pretrained=True), 3)


@pytest.mark.parametrize("form", ["state_dict", "checkpoint", "ddp", "safetensors"])
def test_weights_file_roundtrip_with_another_head_size(tmp_path, form):
    source = _net(num_classes=9, seed=1)
    state = source.state_dict()
    path = tmp_path / ("w.safetensors" if form == "safetensors" else "w.pt")
    if form == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif form == "checkpoint":
        torch.save({"model": state, "epoch": 3}, path)
    elif form == "ddp":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    torch.manual_seed(2)
    loaded = create_model(dataclasses.replace(TINY, weights_file=str(path)), 4)
    for name, tensor in loaded.state_dict().items():
        if name.startswith("fc."):
            assert tensor.shape[0] == 4  # head re-initialized at the new size
        else:
            assert torch.equal(tensor, state[name]), name


def test_weights_file_with_same_head_loads_the_head_too(tmp_path):
    source = _net(num_classes=4, seed=1)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = create_model(dataclasses.replace(TINY, weights_file=str(tmp_path / "w.pt")), 4)
    assert torch.equal(loaded.fc.weight, source.fc.weight)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_weights_that_do_not_fit_the_body_are_an_iwc_error(tmp_path, damage):
    state = _net(4).state_dict()
    if damage == "missing":
        del state["layer1.0.conv1.weight"]
    elif damage == "unexpected":
        state["extra.weight"] = torch.zeros(1)
    else:
        state["conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(IwcError, match="does not fit"):
        create_model(dataclasses.replace(TINY, weights_file=str(tmp_path / "w.pt")), 4)


def test_missing_or_unreadable_weights_file_is_an_iwc_error(tmp_path):
    with pytest.raises(IwcError, match="does not exist"):
        create_model(dataclasses.replace(TINY, weights_file=str(tmp_path / "none.pt")), 4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(IwcError, match="cannot read"):
        create_model(dataclasses.replace(TINY, weights_file=str(tmp_path / "junk.pt")), 4)


def test_frozen_body_does_not_move_but_head_and_batchnorm_do():
    net = _net()
    set_frozen(net, True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    net(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    opt.step()
    assert net.conv1[0].weight.grad is None and not net.conv1[0].weight.requires_grad
    assert torch.equal(net.layer2[0].conv1.weight, before["layer2.0.conv1.weight"])
    assert not torch.equal(net.fc.weight, before["fc.weight"])
    assert not torch.equal(net.bn1.weight, before["bn1.weight"])  # fastai train_bn
    set_frozen(net, False)
    assert all(p.requires_grad for p in net.parameters())


def test_param_groups_cover_every_parameter_once_with_geometric_rates():
    net = _net()
    groups = param_groups(net, 1e-5, 1e-3)
    np.testing.assert_allclose([g["lr"] for g in groups], [1e-5, 1e-4, 1e-3])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in net.fc.parameters()}
    assert id(net.conv1[0].weight) in {id(p) for p in groups[0]["params"]}
    assert id(net.layer4[0].conv1.weight) in {id(p) for p in groups[1]["params"]}


def test_param_groups_follow_the_fastai_resnet_split():
    net = _net()
    names = {id(p): n.split(".")[0] for n, p in net.named_parameters()}
    early, late, head = layer_groups(net)
    assert [names[id(p)] for p in head] == ["fc", "fc"]
    assert {names[id(p)] for p in early} == {"conv1", "bn1", "layer1", "layer2"}
    assert {names[id(p)] for p in late} == {"layer3", "layer4"}


def test_equal_rates_give_one_rate_everywhere_and_bad_rates_fail():
    assert {g["lr"] for g in param_groups(_net(), 3e-3, 3e-3)} == {3e-3}
    with pytest.raises(IwcError, match="positive"):
        param_groups(_net(), 0.0, 1e-3)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_unreachable_hub_fails_before_any_download_with_the_offline_options(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    downloads = []
    monkeypatch.setattr(model_mod.timm, "create_model", lambda *a, **k: downloads.append((a, k)))
    with pytest.raises(IwcError) as e:
        create_model(dataclasses.replace(TINY, pretrained=True), 3)
    message = str(e.value)
    assert downloads == []  # the probe answered: no download attempt, so no retry loop
    assert "cannot be reached" in message and "127.0.0.1" in message
    assert "weights_file" in message and "iwc weights save --arch test_resnet" in message
    assert "--set full.pretrained=false" in message
    assert "\n" not in message


def test_weights_save_then_weights_file_round_trip(tmp_path, monkeypatch):
    from iwc.host import weights

    torch.manual_seed(3)
    source = timm.create_model("test_resnet", pretrained=False)  # stands in for the hub's weights
    monkeypatch.setattr(weights, "hub_model", lambda arch: source)
    out = tmp_path / "w" / "test_resnet.safetensors"
    assert weights.save_pretrained("test_resnet", out) == out.stat().st_size
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left
    loaded = create_model(dataclasses.replace(TINY, weights_file=str(out)), source.num_classes)
    expected = source.state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in loaded.state_dict().items())


@pytest.mark.parametrize(("arch", "out", "message"), [
    ("nosuchnet", "w.safetensors", "not a timm architecture"),
    ("test_resnet", "w.pt", "must end in .safetensors"),
    ("test_resnet", "dir.safetensors", "is a directory"),
])
def test_weights_save_refuses_bad_arguments(tmp_path, arch, out, message):
    from iwc.host.weights import save_pretrained

    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(IwcError, match=message):
        save_pretrained(arch, tmp_path / out)
