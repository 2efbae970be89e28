"""Training: the recipe's one-cycle stages over a uint8 image cache, checkpointed every epoch, resumed exactly.

Each stage freezes (or not) the body, builds AdamW over fastai-style layer groups with one-cycle learning
rates, and runs its epochs: batches drawn from the cache in a seeded order, augmented on the device,
optionally mixed up, trained with soft-target cross-entropy (label smoothing + mixup). After every epoch
the model is validated on the plain (un-augmented) path and `out_dir` receives `checkpoint.pt` (model,
optimizer, schedule, position, history, every RNG state) and `history.json`; `training_curves.png` is
redrawn at the end of each stage.
A rerun with the same inputs continues from the checkpoint and ends with the same weights, bit for bit
on the CPU, as a run that was never interrupted.

Under `torchrun` (see `iwc.train.distributed`) the model trains with DistributedDataParallel: every
process draws the same batch order, takes its part of each batch (the global batch size and the
schedule stay the recipe's), augments and mixes it with its own random streams; losses, accuracies and
validation are summed over the processes, and rank 0 alone writes the files. The checkpoint then holds
every process's random states, so a resume with the same number of processes is exact too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from tqdm.auto import tqdm

from iwc.errors import IwcError
from iwc.io import atomic_write, save_png, sha256_json, write_json
from iwc.recipe import Model, Stage
from iwc.train import distributed
from iwc.train.augment import BatchAugment
from iwc.train.model import amp_dtype, autocast, param_groups, place, set_frozen
from iwc.train.predict import plain_probs, to_device
from iwc.train.session import SessionPlan

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
CURVES = "training_curves.png"
log = logging.getLogger(__name__)
_POSTFIX_EVERY = 10  # batches between progress-bar loss updates (each one waits for the device)

Augmenter = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class FitResult:
    history: list[dict]  # one record per epoch, as in history.json
    checkpoint: Path  # out_dir/checkpoint.pt; the final weights are its "model" entry


def fit(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray | None,
        val_labels: np.ndarray | None, m: Model, seed: int, out_dir: str | Path, device: torch.device | str,
        augment: Augmenter | None = None, progress: bool = True,
        on_epoch_end: Callable[[dict], None] | None = None, session: SessionPlan | None = None) -> FitResult:
    """Train `model` through the stages of `m` and leave the final weights in it.

    Images are uint8 (N, S, S, 3) arrays or memmaps (the cache), labels int64 class indexes.
    `augment(x_uint8_on_device, generator)` makes the training inputs (default
    `BatchAugment(m.augment, m.image_size)`). `on_epoch_end(record)` runs after each epoch is saved.
    `session` (`iwc.train.session.SessionPlan`) is told of every batch and epoch: it logs the ETA and raises
    `SessionStop` after a saved epoch when the next one would pass the session limit.
    A fresh run seeds torch's global generator with `seed`; if `out_dir/checkpoint.pt` exists (same
    recipe, seed and data sizes), training continues from it with every random state restored.
    Under torchrun every process calls `fit` with the same arguments (`on_epoch_end` runs on each, after
    rank 0 has saved); only rank 0 shows progress and writes files.
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    train_labels = _check_labels(train_images, train_labels, model.num_classes, "train")
    if val_images is not None:
        val_labels = _check_labels(val_images, val_labels, model.num_classes, "validation")
    augment = augment if augment is not None else BatchAugment(m.augment, m.image_size)
    place(model, device)
    world, rank = distributed.world_size(), distributed.rank()
    progress = progress and distributed.is_main()

    rng = TrainRandom(seed, rank, world)
    key = _run_key(m, seed, len(train_images), 0 if val_images is None else len(val_images))
    path = out_dir / CHECKPOINT
    saved = _read_checkpoint(path, key, world) if path.exists() else None
    if saved is None:
        torch.manual_seed(rng.seed)
        first_stage, history = 0, []
    else:
        model.load_state_dict(saved["model"])
        rng.load_state_dict(saved["rng"] if world == 1 else saved["rng"][rank])
        first_stage, history = saved["stage"], saved["history"]
    if session is not None:
        session.begin(len(history))

    steps_per_epoch = math.ceil(len(train_images) / m.batch_size)
    for si, stage in enumerate(m.stages[first_stage:], start=first_stage):
        trainer = StageTrainer(model, stage, m, steps_per_epoch, device, augment, rng)
        first_epoch = 0
        if saved is not None and si == saved["stage"]:
            trainer.load_state_dict(saved["trainer"])
            first_epoch = saved["epoch"]
        for epoch in range(first_epoch, stage.epochs):
            desc = f"stage {si + 1}/{len(m.stages)} epoch {epoch + 1}/{stage.epochs}"
            stats = trainer.epoch(train_images, train_labels, progress, desc,
                                  None if session is None else session.batch)
            record = {"stage": si, "epoch": epoch, **stats}
            distributed.broadcast_buffers(model)  # the BatchNorm statistics validated and saved: rank 0's
            if val_images is not None:
                record.update(_validate(model, val_images, val_labels, m, device, progress))
            if distributed.is_main():
                log.info("%s: %s", desc, _epoch_line(record))
            history.append(record)
            rng_state = rng.state_dict() if world == 1 else distributed.all_gather(rng.state_dict())
            if distributed.is_main():
                _save_checkpoint(path, {
                    "key": key, "stage": si, "epoch": epoch + 1, "model": model.state_dict(),
                    "trainer": trainer.state_dict(), "rng": rng_state, "history": history,
                    **({"processes": world} if world > 1 else {}),
                })
                write_json(out_dir / HISTORY, history)
                if epoch + 1 == stage.epochs and si + 1 < len(m.stages):  # plots cost ~1 s: once per stage
                    plot_curves(history, out_dir / CURVES)
            distributed.barrier()
            if on_epoch_end is not None:
                on_epoch_end(record)
            if session is not None:
                session.epoch_end()
    if history and distributed.is_main():
        plot_curves(history, out_dir / CURVES)
    return FitResult(history, path)


class TrainRandom:
    """Every random stream of a fit, seeded once: batch order + augmentation (a CPU torch generator, so the
    parameters are the same on any device), mixup (numpy), and torch's global generators (dropout).

    With several processes (`rank` of `world`) the batch order (`order`) stays `seed`'s on every process,
    while augmentation, mixup and torch's generators use a seed of their own per process (`self.seed`).
    """

    def __init__(self, seed: int, rank: int = 0, world: int = 1) -> None:
        self.world = world
        self.seed = seed if world == 1 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
        self.order = torch.Generator().manual_seed(seed)
        self.generator = self.order if world == 1 else torch.Generator().manual_seed(self.seed)
        self.numpy = np.random.default_rng(self.seed)

    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.get_state(), "numpy": self.numpy.bit_generator.state,
                 "torch": torch.get_rng_state()}
        if self.world > 1:
            state["order"] = self.order.get_state()
        if torch.cuda.is_available():  # several processes: each keeps its own device's state only
            state["cuda"] = torch.cuda.get_rng_state_all() if self.world == 1 else torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.numpy.bit_generator.state = state["numpy"]
        torch.set_rng_state(state["torch"])
        if self.world > 1:
            self.order.set_state(state["order"])
        if "cuda" in state and torch.cuda.is_available():
            if self.world == 1:
                torch.cuda.set_rng_state_all(state["cuda"])
            else:
                torch.cuda.set_rng_state(state["cuda"])


class StageTrainer:
    """One stage: frozen or not, AdamW over layer groups, one-cycle schedule, and the per-batch step.

    `net` is what runs the batches: the model itself, or under torchrun the model in DistributedDataParallel.
    """

    def __init__(self, model: nn.Module, stage: Stage, m: Model, steps_per_epoch: int, device: torch.device,
                 augment: Augmenter, rng: TrainRandom) -> None:
        set_frozen(model, stage.frozen)
        self.model, self.stage, self.m, self.device, self.augment, self.rng = model, stage, m, device, augment, rng
        self.net = distributed.wrap(model)
        self.optimizer, self.scheduler = one_cycle(model, stage, stage.epochs * steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)

    def epoch(self, images: np.ndarray, labels: np.ndarray, progress: bool, desc: str,
              on_batch: Callable[[], None] | None = None) -> dict[str, float]:
        """One pass over the images (`on_batch()` after each batch); returns train_loss, train_acc (against the
        unmixed labels), images_per_s, each over all processes."""
        self.model.train()
        batches = epoch_batches(len(images), self.m.batch_size, self.rng.order)
        world, rank = distributed.world_size(), distributed.rank()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen, start = 0, time.perf_counter()
        with tqdm(total=len(batches), desc=desc, unit="batch", disable=not progress) as bar:
            for k, batch in enumerate(batches):
                idx, count = distributed.shard(batch, rank, world)
                x, y = to_device(images[idx], self.device), to_device(labels[idx], self.device)
                # DDP averages gradients over processes: weighing each process's mean loss by its share
                # of the batch makes that average the gradient of the global batch's mean loss.
                batch_loss, batch_correct = self.step(x, y, count * world / len(batch))
                if count:
                    loss_sum += batch_loss
                    correct += batch_correct
                    seen += count
                bar.update()
                if on_batch is not None:
                    on_batch()
                if progress and (k % _POSTFIX_EVERY == 0 or k == len(batches) - 1):
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}",
                                    img_s=f"{seen * world / (time.perf_counter() - start):.0f}", refresh=False)
        loss_total, correct_total, seen = distributed.all_reduce_sum([loss_sum.item(), correct.item(), seen])
        stats = {"train_loss": loss_total / seen, "train_acc": correct_total / seen}
        stats["images_per_s"] = seen / (time.perf_counter() - start)  # after .item(): the device is done
        return stats

    def step(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment, mix and train on one uint8 batch; returns (summed loss, correct count) on the device."""
        inputs = self.augment(x, self.rng.generator)
        targets = soft_targets(y, self.model.num_classes, self.m.label_smoothing)
        if self.stage.mixup > 0:
            inputs, targets = mixup(inputs, targets, self.stage.mixup, self.rng.numpy)
        return self.update(inputs, targets, y, weight)

    def update(self, inputs: torch.Tensor, targets: torch.Tensor, y: torch.Tensor,
               weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer + schedule step on ready inputs and soft targets; `weight` scales the loss that is
        backpropagated (not the one returned)."""
        with autocast(self.device):
            logits = self.net(inputs)
        loss = soft_cross_entropy(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss if weight == 1 else loss * weight).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach() * len(y), (logits.detach().argmax(1) == y).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def one_cycle(model: nn.Module, stage: Stage, total_steps: int) -> tuple[torch.optim.AdamW, OneCycleLR]:
    """AdamW over the layer groups and a one-cycle schedule peaking at each group's rate.

    Like fastai v1: start at max/25, cosine warm-up for `pct_start` of the steps, cosine anneal to
    max/25e4, momentum (Adam's beta1) cycled 0.95 -> 0.85 -> 0.95; beta2 = 0.99.
    """
    groups = param_groups(model, stage.lr_lo, stage.lr_hi)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=stage.weight_decay)
    scheduler = OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=total_steps,
                           pct_start=stage.pct_start, div_factor=25.0, final_div_factor=1e4)
    return optimizer, scheduler


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into batches (the last may be smaller), each batch's indexes
    sorted so reads from a memory-mapped cache move forward through the file."""
    order = torch.randperm(n, generator=generator).numpy()
    return [np.sort(order[i:i + batch_size]) for i in range(0, n, batch_size)]


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Class indexes -> (B, C) float targets: one-hot, label-smoothed towards uniform by `smoothing`."""
    return F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes


def mixup(inputs: torch.Tensor, targets: torch.Tensor, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """fastai v1 mixup: each image is blended with a random partner of the batch, weight lam ~ Beta(alpha,
    alpha) kept >= 0.5 so the original stays dominant; targets are blended with the same weights."""
    lam = rng.beta(alpha, alpha, size=len(inputs))
    lam = to_device(np.maximum(lam, 1 - lam).astype(np.float32), inputs.device)
    partner = to_device(rng.permutation(len(inputs)), inputs.device)
    w = lam.view(-1, 1, 1, 1)
    mixed = (w * inputs + (1 - w) * inputs[partner]).contiguous(memory_format=torch.channels_last)
    return mixed, lam[:, None] * targets + (1 - lam[:, None]) * targets[partner]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against probability targets (B, C)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch (train, and validation when present), stage boundaries dashed; PNG."""
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], "o-", label="train")
        if "val_loss" in history[0]:
            ax.plot(epochs, [r[f"val_{metric}"] for r in history], "o-", label="validation")
        for k in range(1, len(history)):
            if history[k]["stage"] != history[k - 1]["stage"]:
                ax.axvline(k + 0.5, color="grey", linestyle="--")
        ax.set(xlabel="epoch", ylabel=metric, title={"loss": "loss", "acc": "accuracy"}[metric])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    save_png(fig, path, dpi=80)


def _epoch_line(record: dict) -> str:
    """One epoch's figures for the log: train loss and accuracy, and the validation's when there is one."""
    line = f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
    if "val_acc" in record:
        line += f", validation loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}"
    return f"{line}, {record['images_per_s']:.0f} img/s"


def _validate(model: nn.Module, images: np.ndarray, labels: np.ndarray, m: Model,
              device: torch.device, progress: bool = False) -> dict[str, float]:
    """Validation loss and accuracy; with several processes each scores its part and the sums are shared."""
    probs = plain_probs(model, distributed.my_part(images), m, device, progress)
    labels = labels[distributed.part_range(len(labels))]
    picked = probs[np.arange(len(labels)), labels]
    losses, hits = -np.log(np.maximum(picked, 1e-12)), probs.argmax(1) == labels
    if distributed.world_size() == 1:
        return {"val_loss": float(losses.mean()), "val_acc": float(hits.mean())}
    loss_sum, hit_sum, n = distributed.all_reduce_sum([losses.sum(dtype=np.float64), hits.sum(), len(labels)])
    return {"val_loss": loss_sum / n, "val_acc": hit_sum / n}


def _check_labels(images: np.ndarray, labels: np.ndarray | None, num_classes: int, what: str) -> np.ndarray:
    """Labels as int64 class indexes, one per image, each in [0, num_classes); at least one image."""
    if len(images) == 0:
        raise IwcError(f"{what}: no images; check the split and the image cache (pass None for no validation)")
    if labels is None or len(labels) != len(images):
        raise IwcError(f"{what}: {0 if labels is None else len(labels)} labels for {len(images)} images; "
                       "pass one class index per cached image")
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) and 0 <= labels.min() <= labels.max() < num_classes):
        raise IwcError(f"{what}: labels must be class indexes in [0, {num_classes}); map category ids "
                       "through the CategoryMap first")
    return labels.astype(np.int64)


def _run_key(m: Model, seed: int, n_train: int, n_val: int) -> str:
    """What a checkpoint must match to be resumed: the recipe (TTA aside), the seed and the data sizes."""
    recipe = {k: v for k, v in dataclasses.asdict(m).items() if k != "tta"}
    return sha256_json({"model": recipe, "seed": seed, "n_train": n_train, "n_val": n_val})


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def _read_checkpoint(path: Path, key: str, world: int) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several error types
        raise IwcError(f"checkpoint {path} is unreadable ({e}); delete it to train from the start") from e
    if not isinstance(state, dict) or state.get("key") != key:
        raise IwcError(f"checkpoint {path} belongs to another recipe, seed or data set; delete it to train "
                       "from the start, or use another output folder")
    if state.get("processes", 1) != world:
        raise IwcError(f"checkpoint {path} was written by a run of {state.get('processes', 1)} process(es) "
                       f"and this run has {world}: resume with as many GPUs (--gpus), or delete it to train "
                       "from the start")
    return state
