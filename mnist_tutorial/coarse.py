"""Coarse scans: MNIST's digits as scikit-learn's 8x8 digits were made (chapter 5).

scikit-learn's ``load_digits`` holds digits written on forms, scanned to a 32x32
bitmap and counted in 4x4 blocks. Enlarged and read as a user's picture, their strokes
are a quarter of the picture thick and their edges soft: a kind of picture MNIST never
had. Training on MNIST's own digits scanned the same way teaches the model to read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .data import MnistData
from .predict import InvalidImageError, Prediction, preprocess_image

#: A scanned form's bitmap is 32x32, counted in blocks of 4x4 pixels.
BITMAP_SIDE = 32
BLOCK_SIDE = 4
#: Blank paper round a scanned digit, in coarse pixels, as a user's picture has.
MARGIN = 2
#: How much a coarse picture is enlarged before it is read, as an upload would be.
ENLARGE = 8


def coarse_counts(images: torch.Tensor) -> np.ndarray:
    """Return (N, 8, 8) float counts 0-16 of uint8 digits (N, 28, 28), UCI style."""
    pad = (BITMAP_SIDE - images.shape[-1]) // 2
    bitmap = (F.pad(images, (pad, pad, pad, pad)) > 127).float()
    return (
        (F.avg_pool2d(bitmap[:, None], BLOCK_SIDE)[:, 0] * BLOCK_SIDE**2)
        .round()
        .numpy()
    )


def as_picture(counts: np.ndarray) -> np.ndarray:
    """Return 8x8 counts of 0-16 as a uint8 picture, given paper round and enlarged."""
    pixels = np.pad((counts * (255 / BLOCK_SIDE**2)).round().astype(np.uint8), MARGIN)
    side = pixels.shape[0] * ENLARGE
    return np.asarray(
        Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR)
    )


def coarse_scans(images: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
    """Return uint8 digits (N, 28, 28) coarsely scanned and read back (chapter 5).

    Each goes through ``preprocess_image``, as a user's picture would; one it refuses
    stays as it was.
    """
    scans = images.clone()
    counts = coarse_counts(images)
    for index in tqdm(range(len(counts)), disable=not progress, desc="coarse scans"):
        try:
            steps = preprocess_image(as_picture(counts[index]), keep_steps=True)
        except InvalidImageError:
            continue
        scans[index] = torch.from_numpy(steps.centred)
    return scans


def with_coarse_scans(data: MnistData, *, progress: bool = False) -> MnistData:
    """Return the data with coarse scans of its training digits (chapter 5)."""
    scans = coarse_scans(data.train.images, progress=progress)
    return replace(data, train=replace(data.train, coarse=scans))


def digits_with_scans(
    data: MnistData, share: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the training digits plus ``share`` of their scans, and labels (chapter 8).

    The scans are drawn with ``seed``; each digit's scans are labelled 10 to 19, a group
    of their own. Without scans (or at share 0) the digits are returned as they are.
    """
    train = data.train
    if train.coarse is None or share <= 0:
        return train.images, train.labels
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(train), generator=generator)[
        : round(share * len(train))
    ]
    return (
        torch.cat([train.images, train.coarse[chosen]]),
        torch.cat([train.labels, train.labels[chosen] + 10]),
    )


def reading_shares(
    outcomes: Iterable[Prediction | Exception], labels: Sequence[int] | np.ndarray
) -> dict[str, float]:
    """Return the shares of pictures read right, guessed right, abstained on, refused.

    ``outcomes`` are ``Predictor.outcomes``; a guess is the most probable digit, also
    where the model abstains (chapter 5).
    """
    right = guessed = abstained = refused = 0
    for outcome, label in zip(outcomes, labels, strict=True):
        if not isinstance(outcome, Prediction):
            refused += 1
            continue
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
