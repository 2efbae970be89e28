"""Multi-process training: `fit` under `torchrun --nproc-per-node 2` on the CPU (gloo), and how it is launched.

The runs train the demo recipe's full model shrunk to 32 px (tests/distributed_worker.py) on synthetic
images a network learns within three epochs; the single-process runs of the same worker are the yardstick.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import distributed_worker as worker  # tests/ is on sys.path under pytest
import numpy as np
import pytest
import torch

from iwc import layout
from iwc.errors import IwcError
from iwc.host.backends.local import run_local
from iwc.host.bundle import build_kernels
from iwc.recipe import load_recipe
from iwc.train import distributed, launch
from iwc.train.device import FAKE_GPUS_ENV
from iwc.train.fit import CHECKPOINT, HISTORY
from iwc.train.launch import KERNEL_FILE_ENV, PROCESSES_ENV, TORCHRUN, kernel_command, processes_wanted

WORKER = Path(__file__).with_name("distributed_worker.py")
SEEDS = (0, 1, 2)
# Accuracies are measured on 81 validation images: one standard error is about 0.035 near 0.9, and the
# seeds alone spread them by about as much; a multi-process run may fall 0.1 (~3 errors) outside them.
MARGIN = 0.1


def torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    return subprocess.run([*kernel_command(WORKER, 2), str(out), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in history]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """Final validation accuracy of one-process runs, one per seed."""
    torch.set_num_threads(1)
    return [worker.train(tmp_path_factory.mktemp(f"single{s}"), s)[1].history[-1]["val_acc"] for s in SEEDS]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """An uninterrupted two-process run: its folder and each process's report."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_shard_splits_every_batch_between_the_processes():
    batch = np.arange(10, 20)
    parts = [distributed.shard(batch, r, 3) for r in range(3)]
    assert [count for _, count in parts] == [4, 3, 3]
    assert np.concatenate([p for p, _ in parts]).tolist() == batch.tolist()
    tiny = [distributed.shard(batch[:1], r, 2) for r in range(2)]  # fewer images than processes
    assert [(p.tolist(), count) for p, count in tiny] == [([10], 1), ([10], 0)]


def test_one_process_needs_no_process_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    model = torch.nn.Linear(2, 2)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.wrap(model) is model
    assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2]
    images = np.zeros((5, 2))
    assert distributed.my_part(images) is images
    with distributed.main_first():
        distributed.barrier()
    assert not torch.distributed.is_initialized()


def test_two_processes_agree_and_match_the_single_process_accuracy(ddp, single):
    out, (rank0, rank1) = ddp
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["weights"] == rank1["weights"]  # gradients averaged, BatchNorm statistics shared
    assert _without_timing(rank0["history"]) == _without_timing(rank1["history"])  # summed over both
    assert [(r["stage"], r["epoch"]) for r in rank0["history"]] == [(0, 0), (1, 0), (1, 1)]
    assert json.loads((out / HISTORY).read_text()) == rank0["history"]
    accuracy = rank0["history"][-1]["val_acc"]
    assert min(single) - MARGIN <= accuracy <= max(single) + MARGIN, (accuracy, single)
    assert min(single) > 0.6  # chance is 0.25: the yardstick itself learned


def test_interrupted_two_process_run_resumes_to_the_same_weights(ddp, tmp_path):
    _, (uninterrupted, _) = ddp
    stopped = torchrun(tmp_path, "--stop-after", "2")  # mid stage 2: its first of two epochs is saved
    assert stopped.returncode != 0 and "stopped after epoch 2" in stopped.stderr
    assert len(json.loads((tmp_path / HISTORY).read_text())) == 2
    resumed = torchrun(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for r in (0, 1):
        report = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert _without_timing(report["history"]) == _without_timing(uninterrupted["history"])
        assert report["weights"] == uninterrupted["weights"]  # every process's random streams restored


def test_a_checkpoint_of_two_processes_is_not_resumed_by_one(ddp, tmp_path):
    out, _ = ddp
    (tmp_path / CHECKPOINT).write_bytes((out / CHECKPOINT).read_bytes())
    with pytest.raises(IwcError, match="2 process"):
        worker.train(tmp_path)


def test_kernel_command_starts_torchrun_for_several_processes(tmp_path):
    assert kernel_command("k.py", 1, python="py") == ["py", "k.py"]
    assert kernel_command(Path("k.py"), 4, python="py") == [
        "py", "-c", TORCHRUN, "--standalone", "--nproc-per-node", "4", "k.py"]
    assert kernel_command("k.py", 0, python="py") == ["py", "k.py"]  # --gpus 0: one process on the CPU
    with pytest.raises(IwcError, match=r"give 0 \(CPU\) or more"):
        kernel_command("k.py", -1)


def test_local_backend_runs_a_kernel_once_per_process(tmp_path):
    kernel = tmp_path / "kernel.py"
    kernel.write_text("import os, pathlib\n"
                      "out = pathlib.Path(os.environ['IWC_WORKING_DIR'], 'rank' + os.environ['RANK'])\n"
                      "out.write_text(os.environ['WORLD_SIZE'])\n")
    working = run_local(kernel, {}, tmp_path / "stage", processes=2)
    assert sorted(p.name for p in working.iterdir()) == ["rank0", "rank1"]
    assert (working / "rank1").read_text() == "2"


def test_generated_full_kernel_seeing_two_gpus_restarts_itself_on_both_and_rank0_writes_the_outputs(small_demo,
                                                                                                    tmp_path):
    recipe = load_recipe("demo", ["full.arch='test_resnet'", "full.image_size=32", "full.cache_size=36",
                                  "full.batch_size=64",
                                  "full.stages.0.epochs=1", "full.stages.1.epochs=1", "full.tta.views=1"])
    (kernel_dir,) = build_kernels(tmp_path / "kernels", recipe, stages=["full"])  # no --gpus: every GPU seen
    inputs = {f"competitions/{layout.COMPETITION_SLUG}": small_demo.competition_dir,
              f"datasets/{layout.RESIZED_DATASET}": small_demo.resized_dir}
    env = {layout.SCRATCH_ENV: str(tmp_path / "scratch"), "OMP_NUM_THREADS": "1", FAKE_GPUS_ENV: "2"}
    working = run_local(kernel_dir / "iwc_full.py", inputs, tmp_path / "stage", tmp_path / "log.txt", env,
                        processes=None)  # started as one plain process, as Kaggle starts a kernel
    manifest = json.loads((working / "full.manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["devices"] == ["cpu", "cpu"] and len(manifest["history"]) == 2
    assert (working / "full_val.npz").is_file() and (working / "full_test.npz").is_file()
    assert len(manifest["top_losses"]) == 16 and (working / "show_batch_full.png").is_file()  # rank 0's sheets
    log = (tmp_path / "log.txt").read_text()
    assert "training on 2 GPUs: this kernel starts 2 processes of itself (torchrun)" in log
    assert log.count("iwc kernel: iwc.stages.full:main") == 3  # the bootstrap ran in the kernel, then in each child
    assert log.count("classes,") == 1  # only rank 0 logs INFO lines


@pytest.mark.parametrize(("env", "device", "processes"), [
    ({}, "auto", 1),  # no kernel file: `iwc stage` in its own process
    ({KERNEL_FILE_ENV: "k.py"}, "auto", 3),  # one per GPU counted
    ({KERNEL_FILE_ENV: "k.py"}, "cpu", 1),  # the recipe says CPU
    ({KERNEL_FILE_ENV: "k.py", PROCESSES_ENV: "1"}, "auto", 1),  # --gpus 1
    ({KERNEL_FILE_ENV: "k.py", PROCESSES_ENV: "2"}, "auto", 2),
    ({KERNEL_FILE_ENV: "k.py", "WORLD_SIZE": "3"}, "auto", 1),  # already one of torchrun's processes
])
def test_a_kernel_trains_in_one_process_per_gpu_unless_told_otherwise(env, device, processes, monkeypatch):
    for name in ("WORLD_SIZE", KERNEL_FILE_ENV, PROCESSES_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("iwc.train.device.gpu_count", lambda: 3)
    m = dataclasses.replace(load_recipe("demo").models["full"], device=device)
    assert processes_wanted(m) == processes
    monkeypatch.setenv(PROCESSES_ENV, "two")
    if KERNEL_FILE_ENV in env and "WORLD_SIZE" not in env:
        with pytest.raises(IwcError, match=PROCESSES_ENV):
            processes_wanted(m)


def test_a_process_that_cannot_restart_itself_trains_on_one_gpu_and_says_so(monkeypatch, caplog):
    for name in ("WORLD_SIZE", KERNEL_FILE_ENV, PROCESSES_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("iwc.train.device.gpu_count", lambda: 2)
    with caplog.at_level("WARNING", logger="iwc.train.launch"):
        launch.train_on_every_gpu(load_recipe("demo").models["full"], "full")  # returns: trains here
    assert "full: trains on one of the 2 GPUs it sees" in caplog.text


@pytest.mark.parametrize("argv", [["--gpus", "-1"], ["--gpus", "3", "--backend", "kaggle"],
                                  ["--gpus", "0", "--backend", "kaggle"]])
def test_reproduce_refuses_a_gpu_count_it_cannot_use(argv, capsys):
    from iwc.host.cli import main

    assert main(["reproduce", *argv]) == 2
    err = capsys.readouterr().err
    assert "--gpus" in err
    if "kaggle" in argv:  # the shapes Kaggle has, and what to give
        assert "NvidiaTeslaT4, 2 x T4" in err and "NvidiaTeslaP100" in err and "give --gpus 1 or 2" in err


@pytest.mark.parametrize("gpus", [None, 1, 2])
def test_kaggle_accepts_the_gpus_of_its_machine_shape_and_the_kernels_carry_the_count(gpus, tmp_path):
    from iwc.host.backends import RunOptions
    from iwc.host.backends.kaggle import KaggleBackend
    from iwc.host.bundle import render_kernels

    KaggleBackend(client=object()).check(RunOptions(tmp_path, gpus=gpus))
    files = render_kernels(load_recipe("demo"), gpus=gpus)
    assert json.loads(files["full/kernel-metadata.json"])["machine_shape"] == "NvidiaTeslaT4"
    assert f"\nPROCESSES = {gpus!r}  #" in files["full/iwc_full.py"]
    assert "\nPROCESSES = None  #" in files["aggregate/iwc_aggregate.py"]  # trains nothing
