"""Coarse scans: MNIST's digits as scikit-learn's 8x8 digits were made (chapter 5)."""

from __future__ import annotations

import numpy as np
import torch

from mnist_tutorial import MnistData
from mnist_tutorial.coarse import (
    as_picture,
    coarse_counts,
    coarse_scans,
    digits_with_scans,
    reading_shares,
    with_coarse_scans,
)
from mnist_tutorial.predict import InvalidImageError, Prediction, preprocess_image


def square_digit() -> torch.Tensor:
    """A hollow square, 12 pixels wide with 3-pixel strokes, as a uint8 (1, 28, 28)."""
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 8:20, 8:20] = 255
    image[0, 11:17, 11:17] = 0
    return image


def test_coarse_counts_are_blocks_of_the_bitmap() -> None:
    counts = coarse_counts(square_digit())
    assert counts.shape == (1, 8, 8)
    # The square spans bitmap pixels 10 to 21: blocks 2 to 5, the corners partly.
    assert counts.sum() == (12 * 12 - 6 * 6)
    assert counts[0, 0].sum() == 0 and counts.max() <= 16
    assert counts[0, 2, 2] == 4  # bitmap rows and columns 10 and 11 of block 8-11


def test_a_coarse_picture_has_paper_round_it_and_the_upload_size() -> None:
    picture = as_picture(coarse_counts(square_digit())[0])
    assert picture.shape == (96, 96) and picture.dtype == np.uint8
    assert picture[:12].max() == 0 and picture[:, :12].max() == 0
    assert picture.max() > 100


def test_coarse_scans_are_the_scans_read_back_as_a_user_picture_is() -> None:
    blank = torch.zeros(1, 28, 28, dtype=torch.uint8)
    images = torch.cat([square_digit(), blank])
    scans = coarse_scans(images)
    assert scans.shape == images.shape and scans.dtype == torch.uint8
    expected = preprocess_image(as_picture(coarse_counts(images)[0]), keep_steps=True)
    assert torch.equal(scans[0], torch.from_numpy(expected.centred))
    assert not torch.equal(scans[0], images[0])
    # A blank scan has no ink to read: it is kept as it was.
    assert torch.equal(scans[1], blank[0])


def test_with_coarse_scans_scans_the_training_digits(
    synthetic_mnist: MnistData,
) -> None:
    scanned = with_coarse_scans(synthetic_mnist)
    coarse = scanned.train.coarse
    assert coarse is not None and coarse.shape == scanned.train.images.shape
    assert not torch.equal(coarse, scanned.train.images)
    assert scanned.validation.coarse is None and scanned.test.coarse is None


def test_digits_with_scans_adds_a_seeded_share_as_groups_of_their_own(
    synthetic_mnist: MnistData,
) -> None:
    assert digits_with_scans(synthetic_mnist, 0.3)[0] is synthetic_mnist.train.images
    scanned = with_coarse_scans(synthetic_mnist)
    train = scanned.train
    images, labels = digits_with_scans(scanned, 0.3, seed=1)
    added = round(0.3 * len(train))
    assert len(images) == len(labels) == len(train) + added
    assert torch.equal(images[: len(train)], train.images)
    assert (labels[len(train) :] >= 10).all()
    # Each added scan is the scan of a digit whose label, plus 10, it carries.
    for image, label in zip(images[len(train) :], labels[len(train) :], strict=True):
        matches = (train.coarse == image).flatten(1).all(1)
        assert (train.labels[matches] + 10 == label).any()
    assert torch.equal(digits_with_scans(scanned, 0.3, seed=1)[1], labels)
    assert not torch.equal(digits_with_scans(scanned, 0.3, seed=2)[1], labels)


def test_reading_shares_count_each_outcome_once() -> None:
    def answer(digit: int | None, guess: int) -> Prediction:
        probabilities = np.full(10, 0.05)
        probabilities[guess] = 0.55
        return Prediction(digit, float(probabilities[guess]), probabilities)

    outcomes = [
        answer(3, 3),  # read right
        answer(None, 4),  # abstained, guessed right
        answer(None, 1),  # abstained, guessed wrong
        answer(2, 2),  # read wrong: the label is 5
        InvalidImageError("no ink found"),
    ]
    shares = reading_shares(outcomes, [3, 4, 7, 5, 0])
    assert shares == {
        "read right": 0.2,
        "guessed right": 0.4,
        "abstained": 0.4,
        "refused": 0.2,
    }
