"""Every manifest records the runtime: python, torch, timm and numpy versions and the device."""

import sys

import torch

from iwc.provenance import code_version, runtime


def test_runtime_names_versions_and_the_device():
    info = runtime()
    assert set(info) == {"python", "torch", "timm", "numpy", "device"}
    assert info["torch"] == torch.__version__ and info["python"].startswith(f"{sys.version_info.major}.")
    if torch.cuda.is_available():
        assert info["device"].startswith("cuda: ") and torch.cuda.get_device_name(0) in info["device"]
    else:
        assert info["device"] == "cpu"
    assert code_version("iwc.submission")["runtime"] == info


def test_a_process_without_torch_used_no_device(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    assert runtime()["device"] == "none"
