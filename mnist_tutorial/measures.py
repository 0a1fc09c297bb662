"""Measures of handwritten digits: the ink's box, its centre of mass, its area, slant.

Each function takes a batch of images, (N, 28, 28) or (N, 1, 28, 28), as a tensor or a
NumPy array, with ink as high values (uint8 0 to 255, as MNIST stores it), and returns
one value per image as a tensor. Chapter 1 measures MNIST with them; chapter 5 checks
with the same ones how MNIST was made.
"""

from __future__ import annotations

import numpy as np
import torch

ImageBatch = np.ndarray | torch.Tensor


def _as_batch(images: ImageBatch) -> torch.Tensor:
    """Return the images as a tensor (N, H, W), without a copy where it can."""
    pixels = torch.as_tensor(images)
    return pixels.reshape(-1, *pixels.shape[-2:])


def ink_box(images: ImageBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each image's ink box: heights and widths in pixels (chapters 1 and 5)."""
    has_ink = _as_batch(images) > 0
    sides = []
    for lines in (has_ink.any(dim=2), has_ink.any(dim=1)):  # rows, then columns
        index = torch.arange(lines.shape[1], device=lines.device)
        first = torch.where(lines, index, lines.shape[1]).amin(1)
        last = torch.where(lines, index, -1).amax(1)
        sides.append((last - first + 1).clamp(min=0))  # a blank image: 0 by 0
    return sides[0], sides[1]


def centre_of_mass(images: ImageBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each image's intensity-weighted mean row and column (chapters 1 and 5)."""
    weights = _as_batch(images).to(torch.float64)
    # Pixel coordinates: the top-left pixel is (0, 0), so the middle of a 28x28 field
    # is (13.5, 13.5). A blank image has no centre: NaN.
    rows, columns = (
        torch.arange(size, dtype=torch.float64, device=weights.device)
        for size in weights.shape[1:]
    )
    mass = weights.sum((1, 2))
    return (
        (weights.sum(2) * rows).sum(1) / mass,
        (weights.sum(1) * columns).sum(1) / mass,
    )


def ink_area(images: ImageBatch, threshold: int = 128) -> torch.Tensor:
    """Return each image's number of pixels at or above ``threshold`` (chapter 1)."""
    return (_as_batch(images) >= threshold).flatten(1).sum(1)


def slant(images: ImageBatch) -> torch.Tensor:
    """Return each image's slant mu11 / mu02: columns right per row up (chapter 1)."""
    weights = _as_batch(images).to(torch.float64)
    centre_row, centre_column = centre_of_mass(weights)
    rows, columns = (
        torch.arange(size, dtype=torch.float64, device=weights.device)
        for size in weights.shape[1:]
    )
    # Rows count downwards in an image; dy counts upwards, so that a digit leaning
    # right, its top further right than its bottom, has slant > 0.
    dy = centre_row.view(-1, 1, 1) - rows.view(-1, 1)
    dx = columns - centre_column.view(-1, 1, 1)
    return (weights * dx * dy).sum((1, 2)) / (weights * dy * dy).sum((1, 2))
