"""How fast chapter 5's prediction is: one picture at a time, and a whole folder.

    python benchmarks/predict_speed.py [--folder book/samples] [--threads 1]

Prints the median time for one picture (read, preprocess and predict, batch of one) and
the folder throughput in images per second; exits with 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from mnist_tutorial.predict import Predictor, image_files, predict_folder

SAMPLES = Path(__file__).resolve().parent.parent / "book" / "samples"
TARGET_MS_PER_IMAGE = 10.0
TARGET_IMAGES_PER_SECOND = 500.0


def median_ms_per_image(predictor: Predictor, files: list[Path], rounds: int) -> float:
    """Return the median wall-clock milliseconds to predict one file, batch of one.

    The median is over every file and round.
    """
    times = []
    for _ in range(rounds):
        for path in files:
            started = time.perf_counter()
            predictor.predict(path)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def folder_images_per_second(predictor: Predictor, folder: Path, rounds: int) -> float:
    """Return the median over rounds of predict_folder's images per second.

    Each round walks the folder, reads, preprocesses and predicts in batches.
    """
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        results = predict_folder(folder, predictor)
        rates.append(len(results) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> int:
    """Run both measurements, print them beside their targets; return the exit code.

    The code is 1 when a target is missed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folder",
        type=Path,
        default=SAMPLES,
        help="folder of pictures (default: book/samples)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "PyTorch threads (default: 1; a 28x28 image is too small to share "
            "across cores)"
        ),
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="repetitions of each measurement (default: 5)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor()
    files = image_files(args.folder)
    predictor.predict_many(files[:20])  # warm-up: first calls allocate and load code
    per_image = median_ms_per_image(predictor, files, args.rounds)
    per_second = folder_images_per_second(predictor, args.folder, args.rounds)
    print(
        f"{len(files)} pictures in {args.folder.name}/, "
        f"{args.threads} PyTorch thread(s), torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        "one picture (read, preprocess, predict; batch of 1): "
        f"median {per_image:.2f} ms (target < {TARGET_MS_PER_IMAGE:g} ms)"
    )
    print(
        f"whole folder (predict_folder): {per_second:.0f} images/s "
        f"(target > {TARGET_IMAGES_PER_SECOND:g} images/s)"
    )
    return (
        0
        if per_image < TARGET_MS_PER_IMAGE and per_second > TARGET_IMAGES_PER_SECOND
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
