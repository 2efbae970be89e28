"""GPU throughput of the training and prediction engine: ResNet50, 128 px, batch 256, AMP, channels-last.

Measures, in images per second:
- train pipeline: what `fit` does per batch: uint8 rows gathered from a host cache, pinned, copied to
  the GPU, `BatchAugment` on the device, mixup, forward/backward/AdamW/one-cycle step;
- train model only: the same step on a synthetic input already on the GPU (the ceiling the pipeline
  is measured against);
- augment only: `BatchAugment` alone on a uint8 batch already on the GPU;
- predict pipeline: `predict_tta` with the recipe's TTA (1 plain + `views` augmented passes per image) and
  plain, from the same host cache;
- predict model only: the same 1 + `views` forward passes per image on a synthetic input already on the GPU.
Each pipeline figure is also given as its share of the model-only figure.

One device: `fit` spreads training over several GPUs under torchrun (`iwc reproduce --gpus N`), each
process running this same per-batch step on its part of the batch; `devices` records how many there are.

Usage: python benchmarks/gpu.py --out benchmarks/results/gpu.json
Without a CUDA device it writes {"skipped": true, "reason": "no CUDA device: skipped"} and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from iwc.io import write_json
from iwc.recipe import REFERENCE, TTA, Model


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    m = dataclasses.replace(REFERENCE.models["full"], pretrained=False, image_size=args.size,
                            cache_size=args.cache_size, batch_size=args.batch)
    result = {
        "torch": torch.__version__,
        "settings": {"arch": m.arch, "image_size": m.image_size, "cache_size": m.cache_size,
                     "batch_size": m.batch_size, "classes": args.classes, "pretrained": False,
                     "amp": "bf16 if supported else fp16", "channels_last": True, "mixup": m.stages[-1].mixup,
                     "tta_views": m.tta.views, "timed_batches": args.batches, "warmup_batches": args.warmup},
    }
    if not torch.cuda.is_available():
        result.update(skipped=True, reason="no CUDA device: skipped")
        write_json(args.out, result)
        print(json.dumps(result))
        return 0
    result.update(_measure(m, args))
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def _measure(m: Model, args: argparse.Namespace) -> dict:
    """The measurements (needs CUDA); the engine is imported here so that a CPU-only skip stays quick."""
    from iwc.data.categories import CategoryMap
    from iwc.train.augment import BatchAugment
    from iwc.train.fit import StageTrainer, TrainRandom, soft_targets
    from iwc.train.model import create_model, place
    from iwc.train.predict import predict_tta, softmax

    stage = m.stages[-1]  # all layers train, with mixup: the heavier of the reference's two stages
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = place(create_model(m, args.classes), device)
    augment = BatchAugment(m.augment, m.image_size)
    trainer = StageTrainer(model, stage, m, 2 * (args.warmup + args.batches), device, augment, TrainRandom(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch * args.batches, m.cache_size, m.cache_size, 3), dtype=np.uint8)
    labels = rng.integers(0, args.classes, len(images)).astype(np.int64)
    warm = args.batch * args.warmup

    trainer.epoch(images[:warm], labels[:warm], progress=False, desc="warm-up")
    pipeline = trainer.epoch(images, labels, progress=False, desc="pipeline")["images_per_s"]

    x = torch.randn(m.batch_size, 3, m.image_size, m.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels[:m.batch_size]).to(device)
    targets = soft_targets(y, args.classes, m.label_smoothing)
    model_only = _rate(lambda: trainer.update(x, targets, y), m.batch_size, args)

    x_uint8 = torch.from_numpy(images[:m.batch_size]).to(device)
    generator = torch.Generator().manual_seed(0)
    augment_only = _rate(lambda: augment(x_uint8, generator), m.batch_size, args)

    categories = CategoryMap(range(args.classes))
    ids = np.array([f"img{i}" for i in range(len(images))])

    def predict(tta: TTA) -> float:
        mm = dataclasses.replace(m, tta=tta)
        predict_tta(model, images[:warm], ids[:warm], categories, mm, device, seed=0, progress=False)
        start = time.perf_counter()
        predict_tta(model, images, ids, categories, mm, device, seed=0, progress=False)
        return len(images) / (time.perf_counter() - start)

    def tta_forwards() -> None:
        with torch.no_grad():
            for _ in range(1 + m.tta.views):
                softmax(model, x, device)

    tta_pipeline = predict(m.tta)
    model.eval()
    tta_model_only = _rate(tta_forwards, m.batch_size, args)
    return dict(
        skipped=False,
        gpu=torch.cuda.get_device_name(device),
        devices=torch.cuda.device_count(),
        cuda=torch.version.cuda,
        train_images_per_s={"pipeline": round(pipeline, 1), "model_only": round(model_only, 1),
                            "pipeline_share_of_model_only": round(pipeline / model_only, 3)},
        augment_images_per_s=round(augment_only, 1),
        predict_images_per_s={"tta": round(tta_pipeline, 1), "tta_model_only": round(tta_model_only, 1),
                              "tta_share_of_model_only": round(tta_pipeline / tta_model_only, 3),
                              "plain": round(predict(TTA(views=0)), 1)},
        peak_memory_gib=round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
    )


def _rate(step: Callable[[], object], batch: int, args: argparse.Namespace) -> float:
    """Images per second of `step` (one batch) over the timed batches, after warm-up, device synchronized."""
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.batches):
        step()
    torch.cuda.synchronize()
    return batch * args.batches / (time.perf_counter() - start)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--size", type=int, default=128, help="network input, pixels")
    p.add_argument("--cache-size", type=int, default=144, help="uint8 cache resolution, pixels")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=216, help="output classes (216 occur in iWildCam 2020 train)")
    p.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches before each measurement")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
