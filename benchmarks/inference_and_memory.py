"""Inference throughput of the shipped model on the CPU, and peak training memory.

Throughput is measured at batch 1 (one digit at a time, as in the drawing widget) and at
batch 1,000 (scoring a test set), beside the reference example's network in the same
process, so the ratio holds on a loaded machine. Peak memory is the resident set of a
child process that runs one default training epoch, read from the kernel's accounting.

    python benchmarks/inference_and_memory.py
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from mnist_tutorial import load_pretrained

TRAIN_ONE_EPOCH = """
import torch
from mnist_tutorial import TrainConfig, build_model, fit, load_mnist
fit(build_model(), load_mnist(), TrainConfig(epochs=1), progress=False, log=None)
"""


def reference_network() -> nn.Module:
    """Return the network of the reference example that train_speed.py trains.

    The same layers as its ReferenceNet, in sequence: the same work per image.
    """
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(9216, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )


@torch.inference_mode()
def images_per_second(model: nn.Module, batch_size: int, seconds: float = 3.0) -> float:
    """Return the median images per second of forward passes over random batches."""
    model.eval()
    batch = torch.randn(batch_size, 1, 28, 28)
    for _ in range(5):
        model(batch)
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 5:
        started = time.perf_counter()
        model(batch)
        rates.append(batch_size / (time.perf_counter() - started))
    return statistics.median(rates)


def peak_training_memory_mib() -> float:
    """Return the peak resident MiB of a child process that trains one default epoch."""
    subprocess.run([sys.executable, "-c", TRAIN_ONE_EPOCH], check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    ours = load_pretrained().model
    reference = reference_network()
    for batch_size in (1, 1000):
        ours_rate = images_per_second(ours, batch_size)
        reference_rate = images_per_second(reference, batch_size)
        print(
            f"batch {batch_size:>4}: ours {ours_rate:9,.0f} images/s, "
            f"reference {reference_rate:9,.0f} images/s, "
            f"ratio {ours_rate / reference_rate:.1f}x"
        )
    print(
        "peak resident memory of one training epoch: "
        f"{peak_training_memory_mib():,.0f} MiB"
    )


if __name__ == "__main__":
    main()
