"""Input pipeline throughput: the uint8 cache + batched augmentation against per-sample PIL loading.

Both paths start from the same 256 x 256 JPEGs (synthetic, photo-like, quality 90 like the resized
competition dataset) and yield the same augmented float32 (batch, 3, size, size) batches:

- cached: decode once into a uint8 memmap at `cache_size` (build rate reported separately), then per
  batch gather rows from the memmap -> torch -> `BatchAugment`, in the main process, timed at each
  torch thread count of `--threads`;
- baseline: `iwc.host.baseline.make_loader`, PIL decode + torchvision transforms per sample in
  DataLoader workers, the usual way.

For context it also times timm resnet50 (random init, channels-last) training and inference at `size`
on this CPU, to show whether the pipeline or the model bounds an epoch. Writes JSON and prints a table:

    python benchmarks/pipeline.py --out benchmarks/results/pipeline.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import PIL
import timm
import torch
import torchvision
from PIL import Image

from iwc.data.cache import build_cache
from iwc.host.baseline import make_loader
from iwc.io import write_json
from iwc.provenance import code_version
from iwc.recipe import Augment
from iwc.train.augment import BatchAugment

NUM_CLASSES = 267  # iWildCam 2020 category count; only sizes the model head


def write_jpegs(folder: Path, count: int, seed: int, size: int = 256) -> list[Path]:
    """`count` photo-like JPEGs (smooth scene + texture + grain), quality 90."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        f = rng.uniform(2, 12, 3)
        phase = rng.uniform(0, 6, 3)
        scene = np.stack([np.sin(f[c] * (xx + yy * (c - 1)) + phase[c]) for c in range(3)], -1)
        texture = np.repeat(rng.normal(0, 1, (size // 4, size // 4, 1)), 4, 0).repeat(4, 1)
        pixels = 110 + 60 * scene + 20 * texture + rng.normal(0, 6, (size, size, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def images_per_second(batches: Callable[[], Iterable[torch.Tensor]], epochs: int) -> tuple[list[float], tuple]:
    """One warm-up epoch, then `epochs` timed epochs: (images/s of each, first batch shape)."""
    shapes = [tuple(batch.shape) for batch in batches()]
    rates = []
    for _ in range(epochs):
        seen, start = 0, time.perf_counter()
        for batch in batches():
            seen += batch.shape[0]
        rates.append(seen / (time.perf_counter() - start))
    return rates, shapes[0]


def cached_batches(images: np.ndarray, augment: BatchAugment, batch_size: int,
                   generator: torch.Generator) -> Callable[[], Iterable[torch.Tensor]]:
    """A callable that yields one shuffled epoch of augmented batches gathered from the uint8 memmap."""
    rng = np.random.default_rng(0)

    def epoch() -> Iterable[torch.Tensor]:
        order = rng.permutation(len(images))
        for start in range(0, len(order), batch_size):
            rows = np.sort(order[start:start + batch_size])  # sorted rows read the memmap in file order
            yield augment(torch.from_numpy(images[rows]), generator)

    return epoch


def model_rates(size: int, train_batch: int, infer_batch: int, steps: int) -> dict[str, float]:
    """resnet50 images/s at `size` px: SGD training steps and no-grad inference, channels-last."""
    model = timm.create_model("resnet50", pretrained=False, num_classes=NUM_CLASSES)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(train_batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (train_batch,))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    xi = torch.randn(infer_batch, 3, size, size).contiguous(memory_format=torch.channels_last)

    def infer_step() -> None:
        with torch.inference_mode():
            model(xi)

    model.train()
    train = _timed(train_step, steps) / train_batch
    model.eval()
    infer = _timed(infer_step, steps) / infer_batch
    return {"train_img_s": 1 / train, "infer_img_s": 1 / infer}


def _timed(step: Callable[[], None], steps: int) -> float:
    """Median seconds per call of `step`, after one warm-up call."""
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pipeline_rates(args: argparse.Namespace) -> dict:
    """Images/s of the cache build, then of each timed epoch: cached path per thread count, baseline."""
    aug = Augment()
    with tempfile.TemporaryDirectory(prefix="iwc-bench-") as tmp:
        paths = write_jpegs(Path(tmp), args.images, args.seed)
        start = time.perf_counter()
        cache = build_cache(paths, [p.stem for p in paths], args.cache_size, Path(tmp) / "cache",
                            progress=False)
        build = len(paths) / (time.perf_counter() - start)
        generator = torch.Generator().manual_seed(args.seed)
        cached_epoch = cached_batches(cache.images, BatchAugment(aug, args.size), args.batch, generator)
        cached = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            cached[str(threads)], cached_shape = images_per_second(cached_epoch, args.epochs)
        # Created only now: its workers start decoding at once and would compete with the cached timing.
        loader = make_loader(paths, args.size, args.batch, workers=args.workers, aug=aug)
        baseline, baseline_shape = images_per_second(lambda: loader, args.epochs)
        assert cached_shape == baseline_shape, f"paths yield different batches: {cached_shape}, {baseline_shape}"
    return {"cache_build": build, "cached_batched": cached, "baseline_dataloader": baseline}


def run(args: argparse.Namespace) -> dict:
    """Every measurement, with the machine and the settings, as one JSON-ready dict.

    Epoch rates are medians over the timed epochs (model: steps), which resists other load on the
    machine; the per-epoch figures and the load average are kept beside them. The cached path and the
    model run at each torch thread count of `--threads`: on a busy machine one thread can beat two.
    """
    load_before = os.getloadavg()[0]
    pipeline = pipeline_rates(args)  # its DataLoader workers have exited when it returns
    model = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        model[str(threads)] = model_rates(args.size, args.train_batch, args.batch, args.model_steps)
    cached = {t: statistics.median(r) for t, r in pipeline["cached_batched"].items()}
    baseline = statistics.median(pipeline["baseline_dataloader"])
    return {
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min": {"before": load_before,
                                                                      "after": os.getloadavg()[0]},
                    "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "timm": timm.__version__, "numpy": np.__version__, "pillow": PIL.__version__},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "code": code_version("iwc.train.fit"),
        "images_per_s": {
            "cache_build": pipeline["cache_build"],
            "baseline_dataloader": baseline,
            "cached_batched_by_threads": cached,
            "resnet50_train_by_threads": {t: r["train_img_s"] for t, r in model.items()},
            "resnet50_infer_by_threads": {t: r["infer_img_s"] for t, r in model.items()},
        },
        "images_per_s_each_epoch": {k: pipeline[k] for k in ("cached_batched", "baseline_dataloader")},
        "speedup_cached_vs_baseline": max(cached.values()) / baseline,
    }


def print_table(result: dict, workers: int) -> None:
    rates = result["images_per_s"]
    rows = [("cache build (decode once)", "pool", rates["cache_build"]),
            (f"baseline DataLoader, {workers} workers", "1 each", rates["baseline_dataloader"])]
    for key, label in (("cached_batched_by_threads", "cached memmap + BatchAugment"),
                       ("resnet50_train_by_threads", "resnet50 train step"),
                       ("resnet50_infer_by_threads", "resnet50 inference")):
        rows += [(label, threads, rate) for threads, rate in rates[key].items()]
    print(f"{'measurement':<36}{'threads':>8}{'images/s':>12}")
    for label, threads, rate in rows:
        print(f"{label:<36}{threads:>8}{rate:>12.1f}")
    print(f"cached / baseline (best thread count): {result['speedup_cached_vs_baseline']:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline.json"))
    p.add_argument("--images", type=int, default=512, help="synthetic 256 px JPEGs")
    p.add_argument("--size", type=int, default=128, help="augmented output size, px")
    p.add_argument("--cache-size", type=int, default=144, help="uint8 cache resolution, px")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    p.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    p.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                   help="torch thread counts to time the cached path and the model with")
    p.add_argument("--train-batch", type=int, default=32, help="resnet50 training batch")
    p.add_argument("--model-steps", type=int, default=3, help="timed resnet50 steps (median)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    result = run(args)
    write_json(args.out, result)
    print_table(result, args.workers)


if __name__ == "__main__":
    main()
