"""How fast the shipped model reads the test set, by each inference engine (chapter 8).

    python benchmarks/inference.py [--rounds 5] [--threads 2] [--profile]

For each engine of ``mnist_tutorial.inference.ENGINES``: the seconds to build it, the
10,000 test images at batch 1000 and at batch 1 (images per second), one picture end
to end (read, preprocess, predict), and the test accuracy. The engines are timed in
turn within each round and each figure is the median over rounds, so load on the
machine slows them alike; ratios are against eager PyTorch. ``--profile`` adds the
fastest engine's time per operator (ONNX Runtime's or PyTorch's profiler), and the
floors that this CPU's float32 and bfloat16 matrix products set: the network's
multiply-adds at the rate ``torch.mm`` reaches on large matrices. The last line names
the fastest engine that keeps the accuracy within 0.05 points of eager.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from mnist_tutorial import load_mnist, load_pretrained
from mnist_tutorial.data import normalize
from mnist_tutorial.inference import (
    ENGINES,
    Engine,
    build_engine,
    export_logits,
    fold_batch_norm,
    onnx_operator_shares,
    quantize,
)
from mnist_tutorial.model import summarize
from mnist_tutorial.predict import Predictor

#: A photographed 7 from the book's samples: one picture, end to end.
SAMPLE = Path(__file__).resolve().parent.parent / "book/samples/photo-007-digit-7.png"
#: Accuracy an engine may lose against eager and still count as fast-and-right.
TOLERANCE_POINTS = 0.05
TARGET_SECONDS = 0.25


def whole_set(engine: Engine, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Return the engine's logits for all images, in batches of ``batch_size``."""
    return torch.cat([engine(batch) for batch in images.split(batch_size)])


def matrix_product_rate(
    dtype: torch.dtype = torch.float32, side: int = 2048, repeats: int = 5
) -> float:
    """Return multiply-adds per second of a large torch.mm in dtype, best of repeats."""
    first, second = (torch.randn(side, side, dtype=dtype) for _ in range(2))
    first @ second  # warm the threads and the caches
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        first @ second
        fastest = min(fastest, time.perf_counter() - started)
    return side**3 / fastest


def pytorch_operator_shares(engine: Engine, images: torch.Tensor) -> dict[str, float]:
    """Return each PyTorch operator's share of the engine's own time on the images."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
    ) as run:
        whole_set(engine, images, 1000)
    totals = {
        event.key: event.self_cpu_time_total
        for event in run.key_averages()
        if event.self_cpu_time_total > 0
    }
    whole = sum(totals.values())
    return {
        name: time / whole
        for name, time in sorted(totals.items(), key=lambda item: -item[1])
    }


def main() -> int:
    """Time every engine, print the table and the fastest; return 1 if over target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    checkpoint = load_pretrained()
    data = load_mnist()
    images = normalize(data.test.images, *checkpoint.normalization).contiguous()
    labels = data.test.labels
    # A seeded sample of the training split: the test set never tunes the int8 model.
    order = torch.randperm(
        len(data.train.labels), generator=torch.Generator().manual_seed(0)
    )
    calibration = normalize(data.train.images[order[:1000]], *checkpoint.normalization)

    engines: dict[str, Engine] = {}
    setup: dict[str, float] = {}
    for name in args.engines:
        started = time.perf_counter()
        engines[name] = build_engine(
            checkpoint.model, name, calibration=calibration, threads=args.threads
        )
        engines[name](images[:1000])  # the first call compiles or warms caches
        setup[name] = time.perf_counter() - started

    batched: dict[str, list[float]] = defaultdict(list)
    single: dict[str, list[float]] = defaultdict(list)
    picture: dict[str, list[float]] = defaultdict(list)
    accuracy: dict[str, float] = {}
    predictors = {
        name: Predictor(checkpoint, engine=name, calibration=calibration)
        for name in args.engines
    }
    for _ in range(args.rounds):
        for name, engine in engines.items():
            started = time.perf_counter()
            logits = whole_set(engine, images, 1000)
            batched[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            whole_set(engine, images[:500], 1)
            single[name].append((time.perf_counter() - started) / 500)
            started = time.perf_counter()
            predictors[name].predict(SAMPLE)
            picture[name].append(time.perf_counter() - started)
            accuracy[name] = float((logits.argmax(1) == labels).double().mean()) * 100

    eager = statistics.median(batched["eager"])
    print(
        f"{len(labels):,} test images, {args.threads} threads, {args.rounds} rounds "
        "(medians); ratios against eager"
    )
    print(
        f"{'engine':<14}{'setup s':>8}{'10k s':>8}{'ratio':>7}{'img/s b1000':>13}"
        f"{'img/s b1':>10}{'1 picture ms':>14}{'accuracy':>10}"
    )
    for name in engines:
        whole, one = statistics.median(batched[name]), statistics.median(single[name])
        print(
            f"{name:<14}{setup[name]:>8.2f}{whole:>8.3f}{eager / whole:>6.2f}x"
            f"{len(labels) / whole:>13,.0f}{1 / one:>10,.0f}"
            f"{1000 * statistics.median(picture[name]):>14.2f}{accuracy[name]:>9.2f}%"
        )
    kept = [
        name
        for name in engines
        if accuracy[name] >= accuracy["eager"] - TOLERANCE_POINTS
    ]
    fastest = min(kept, key=lambda name: statistics.median(batched[name]))
    if args.profile:
        if fastest in ("onnx", "int8"):
            onnx_model = export_logits(fold_batch_norm(checkpoint.model))
            if fastest == "int8":
                onnx_model = quantize(onnx_model, calibration)
            print(f"ONNX Runtime, {fastest}, time per operator:")
            shares = onnx_operator_shares(onnx_model, images, args.threads)
        else:
            print(f"PyTorch, {fastest}, time per operator:")
            shares = pytorch_operator_shares(engines[fastest], images)
        for operator, share in shares.items():
            if share >= 0.005:
                print(f"  {operator:<28}{share:>7.1%}")
        per_image = sum(row.multiply_adds for row in summarize(checkpoint.model))
        work = len(labels) * per_image
        for dtype in (torch.float32, torch.bfloat16):
            rate = matrix_product_rate(dtype)
            print(
                f"{str(dtype).removeprefix('torch.')} matrix product on {args.threads} "
                f"threads: {rate / 1e9:.1f} G multiply-adds/s; the test set's "
                f"{work / 1e9:.1f} G multiply-adds need {work / rate:.3f} s at that "
                "rate"
            )
        print(f"{TARGET_SECONDS} s needs {work / TARGET_SECONDS / 1e9:.0f} G/s")
    best = statistics.median(batched[fastest])
    print(
        f"fastest: {fastest} scores the {len(labels):,} test images in {best:.3f} s "
        f"({eager / best:.2f}x eager), accuracy {accuracy[fastest]:.2f}%"
    )
    return 0 if best <= TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
