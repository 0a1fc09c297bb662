"""Other handwriting at low resolution: scikit-learn's 8x8 digits, read as pictures.

    python benchmarks/other_handwriting.py [CHECKPOINT ...]   # default: the shipped cnn

`sklearn.datasets.load_digits` holds 1,797 digits by 43 writers who are not in MNIST
(the UCI "optical recognition" set): each was written on a form, scanned to a 32x32
bitmap, and each 4x4 block counted, giving 8x8 pictures of 0-16. They are a test set
only: nothing is trained or chosen on them.

Each picture is read as a user's picture would be, through the same preprocessing and
batching as `predict_images`: scaled to 0-255, given a 2-pixel blank margin (the paper
round a written digit) and enlarged 8 times (bilinear) to 96x96. `Predictor.outcomes`
yields a picture's error instead of stopping at it, so the preprocessing's refusals
(InvalidImageError, mostly "far thicker than a pen stroke") are counted, not raised.

For comparison, MNIST's own 10,000 test digits are reduced the same way (padded to
32x32, ink above half made a bitmap, each 4x4 block counted) and read by the same path:
what resolution alone costs, with writers the model has seen the like of.

Prints, per checkpoint and set: read right (answered with the right digit), guessed
right (the best guess, abstentions included), abstained, and refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from mnist_tutorial import (
    InvalidImageError,
    Prediction,
    Predictor,
    load_checkpoint,
    load_mnist,
    load_pretrained,
)

MARGIN = 2
ENLARGE = 8


def as_user_picture(counts: np.ndarray) -> np.ndarray:
    """Return an 8x8 picture of 0-16 counts as a 96x96 uint8 picture with a margin."""
    pixels = np.pad((counts * (255 / 16)).round().astype(np.uint8), MARGIN)
    side = pixels.shape[0] * ENLARGE
    return np.asarray(
        Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR)
    )


def uci_counts(images: torch.Tensor) -> np.ndarray:
    """Return MNIST digits (N, 28, 28) as UCI-style 8x8 counts of a 32x32 bitmap."""
    bitmap = (F.pad(images, (2, 2, 2, 2)) > 127).float()
    return (F.avg_pool2d(bitmap[:, None], 4)[:, 0] * 16).round().numpy()


def score(
    outcomes: Iterator[Prediction | Exception], labels: np.ndarray
) -> dict[str, float]:
    """Return the shares read right, guessed right, abstained and refused."""
    right = guessed = abstained = refused = 0
    for outcome, label in zip(outcomes, labels, strict=True):
        if isinstance(outcome, InvalidImageError):
            refused += 1
            continue
        assert isinstance(outcome, Prediction), outcome
        guessed += int(outcome.probabilities.argmax()) == label
        right += outcome.digit == label
        abstained += outcome.digit is None
    count = len(labels)
    return {
        "read right": right / count,
        "guessed right": guessed / count,
        "abstained": abstained / count,
        "refused": refused / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints", nargs="*", help="checkpoints to read with (default: shipped cnn)"
    )
    args = parser.parse_args()
    digits = load_digits()
    mnist_test = load_mnist().test
    sets = {
        f"scikit-learn digits ({len(digits.target):,})": (
            digits.images,
            digits.target,
        ),
        f"MNIST test, reduced the UCI way ({len(mnist_test):,})": (
            uci_counts(mnist_test.images),
            mnist_test.labels.numpy(),
        ),
    }
    names = args.checkpoints or ["shipped cnn"]
    print("| model | pictures | read right | guessed right | abstained | refused |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        checkpoint = (
            load_pretrained() if not args.checkpoints else load_checkpoint(name)
        )
        predictor = Predictor(checkpoint)
        for label, (counts, targets) in sets.items():
            pictures = (as_user_picture(picture) for picture in counts)
            shares = score(predictor.outcomes(pictures), targets)
            print(
                f"| {name} | {label} | "
                + " | ".join(f"{share:.1%}" for share in shares.values())
                + " |"
            )


if __name__ == "__main__":
    main()
