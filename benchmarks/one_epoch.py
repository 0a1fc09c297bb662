"""One epoch of the default model on this machine: training seconds and test accuracy.

The target (issue: foundation) is at least 98.8% test accuracy in under 30 s of training
on a 2-core CPU. The script also times a fixed reference workload in the same process
(one epoch of the classic LeNet-5 with the same loop), so a loaded machine shows up as a
ratio, not a false figure.

    python benchmarks/one_epoch.py
"""

from __future__ import annotations

import time

import torch

from mnist_tutorial import TrainConfig, build_model, fit, load_mnist
from mnist_tutorial.evaluate import accuracy, predict_split


def timed_epoch(name: str) -> tuple[float, float]:
    """Return (training seconds, test accuracy) of one default epoch of a model.

    ``name`` is a registered model's.
    """
    data = load_mnist()
    torch.manual_seed(0)
    model = build_model(name)
    started = time.perf_counter()
    fit(model, data, TrainConfig(epochs=1), progress=False, log=None)
    seconds = time.perf_counter() - started
    return seconds, accuracy(predict_split(model, data.test, data.normalization))


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    baseline_seconds, baseline_accuracy = timed_epoch("lenet5")
    seconds, test_accuracy = timed_epoch("cnn")
    print(
        f"lenet5 (baseline workload): {baseline_seconds:5.1f} s, "
        f"test accuracy {baseline_accuracy:.2%}"
    )
    print(
        f"cnn (default):              {seconds:5.1f} s, "
        f"test accuracy {test_accuracy:.2%}"
    )
    print(f"cnn / lenet5 time ratio: {seconds / baseline_seconds:.2f}")
    verdict = "meets" if seconds < 30 and test_accuracy >= 0.988 else "MISSES"
    print(f"{verdict} the target: >= 98.80% in < 30 s")


if __name__ == "__main__":
    main()
