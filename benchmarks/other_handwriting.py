"""Other handwriting at low resolution: scikit-learn's 8x8 digits, read as pictures.

    python benchmarks/other_handwriting.py [CHECKPOINT ...]  # default: the book's model

`sklearn.datasets.load_digits` holds 1,797 digits by 43 writers who are not in MNIST
(the UCI "optical recognition" set): each was written on a form, scanned to a 32x32
bitmap, and each 4x4 block counted, giving 8x8 pictures of 0-16. They are a test set
only: nothing is trained or chosen on them.

Each picture is read as a user's picture would be, through the same preprocessing and
batching as `predict_images`: scaled to 0-255, given a 2-pixel blank margin (the paper
round a written digit) and enlarged 8 times (bilinear) to 96x96
(`mnist_tutorial.coarse.as_picture`). `Predictor.outcomes`
yields a picture's error instead of stopping at it, so the preprocessing's refusals
(InvalidImageError) are counted, not raised.

For comparison, MNIST's own 10,000 test digits are reduced the same way (padded to
32x32, ink above half made a bitmap, each 4x4 block counted:
`mnist_tutorial.coarse.coarse_counts`) and read by the same path:
what resolution alone costs, with writers the model has seen the like of.

Prints, per checkpoint and set: read right (answered with the right digit), guessed
right (the best guess, abstentions included), abstained, and refused.
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_digits

from mnist_tutorial import Predictor, load_checkpoint, load_mnist, load_pretrained
from mnist_tutorial.coarse import as_picture, coarse_counts, reading_shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints",
        nargs="*",
        help="checkpoints to read with (default: the book's model)",
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
            coarse_counts(mnist_test.images),
            mnist_test.labels.numpy(),
        ),
    }
    names = args.checkpoints or ["book's model"]
    print("| model | pictures | read right | guessed right | abstained | refused |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        checkpoint = (
            load_pretrained() if not args.checkpoints else load_checkpoint(name)
        )
        predictor = Predictor(checkpoint)
        for label, (counts, targets) in sets.items():
            pictures = (as_picture(picture) for picture in counts)
            shares = reading_shares(predictor.outcomes(pictures), targets)
            print(
                f"| {name} | {label} | "
                + " | ".join(f"{share:.1%}" for share in shares.values())
                + " |"
            )


if __name__ == "__main__":
    main()
