"""Not a digit: pictures that are no digit, and a rule that refuses them (chapter 8).

A model trained on MNIST answers a digit for any picture, a letter or a doodle alike.
This module makes such pictures, of several kinds, offline and seeded; it scores how
digit-like the model finds a picture; and it fits a rule that abstains below a
threshold, chosen so that a set share of the validation digits is still answered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch import nn

from .model import conv_blocks_and_head

#: Letters that are digits in disguise, left out of the ``letters`` kind: once cropped,
#: scaled and centred as MNIST, they are written like a digit and a reader would accept
#: the model's digit. O o Q D look like 0; I l i j J like 1 (the dots of i and j are
#: removed as specks); Z z like 2; S s like 5; b G like 6; B like 8; g q like 9.
DIGIT_LOOKALIKES = "OoQDIlijJZzSsbGBgq"
#: The letters drawn by the ``letters`` kind, both cases.
LETTERS = "".join(
    letter
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    if letter not in DIGIT_LOOKALIKES
)
#: The kinds of non-digit picture that ``non_digit_pictures`` draws.
NON_DIGIT_KINDS = ("letters", "scribbles", "shapes", "noise", "faint")
#: The share of validation digits a rule answers unless told otherwise. At 0.99 the cnn
#: shipped before the book's model answered 98.9 % of MNIST's test digits (their
#: writers are not the validation split's); 0.995 answers 99.4 % with the book's model
#: (chapter 8), and rejects fewer non-digits than 0.99 (benchmarks/README.md).
DEFAULT_KEEP = 0.995
#: The scores a rule may threshold (chapter 8), each higher for a more digit-like
#: picture: the largest softmax probability; the log-sum-exp of the logits (minus the
#: energy); minus the Mahalanobis distance of the conv blocks' channel means to the
#: nearest digit's; and ``combined``, the sum of the last two, each standardised.
METHODS = ("max_softmax", "energy", "mahalanobis", "combined")
#: The method of the book's rule: chosen in benchmarks/novelty.py (chapter 8).
DEFAULT_METHOD = "combined"
#: The conv blocks, counted from 0, whose channel means the Mahalanobis distance
#: measures: None, all of them, the choice of benchmarks/novelty.py for the cnn, for
#: cnn_large and for the shipped model (benchmarks/README.md, "Not a digit").
DEFAULT_BLOCKS: Sequence[int] | None = None
#: Added to the covariance's diagonal, a share of its mean, so that channels that
#: hardly vary cannot blow up the distance.
COVARIANCE_RIDGE = 1e-3


# --- pictures that are no digit ------------------------------------------------------


def font_files() -> list[Path]:
    """Return the text fonts matplotlib ships, which every install has (chapter 8)."""
    # Imported here: reading a checkpoint needs this module, not matplotlib.
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    # The STIX size variants and cmex/cmsy hold symbols, and LastResort draws boxes.
    return sorted(
        path
        for path in folder.glob("*.ttf")
        if not path.name.startswith(("STIXSiz", "STIXNonUni", "cmex", "cmsy", "Last"))
        and "Display" not in path.name
    )


def _canvas(rng: np.random.Generator) -> tuple[Image.Image, int, int]:
    """Return a blank picture of a random size and paper, its paper and its ink level.

    Dark ink on light paper three times in four, else chalk on a board.
    """
    width, height = (int(side) for side in rng.integers(64, 201, size=2))
    paper, ink = int(rng.integers(200, 256)), int(rng.integers(0, 70))
    if rng.random() < 0.25:
        paper, ink = 255 - paper, 255 - ink
    return Image.new("L", (width, height), paper), paper, ink


def _character(
    rng: np.random.Generator, fonts: Sequence[Path], alphabet: str
) -> Image.Image:
    """Return one character of the alphabet in a random font, size, weight and angle."""
    image, _, ink = _canvas(rng)
    side = min(image.size)
    letter = str(rng.choice(list(alphabet)))
    font = ImageFont.truetype(
        str(fonts[int(rng.integers(len(fonts)))]),
        size=int(side * rng.uniform(0.4, 0.85)),
    )
    stroke = int(rng.integers(0, max(1, side // 25) + 1))
    glyph = Image.new("L", image.size, 0)
    ImageDraw.Draw(glyph).text(
        (image.width / 2, image.height / 2),
        letter,
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    glyph = glyph.rotate(
        float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR
    )
    return Image.composite(Image.new("L", image.size, ink), image, glyph)


def _scribble(rng: np.random.Generator) -> Image.Image:
    """Return one to three random pen strokes, each a smooth random curve."""
    image, _, ink = _canvas(rng)
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(int(rng.integers(1, 4))):
        # A Bezier curve through random control points: as smooth as a pen.
        # Four control points at least: three draw an arc, which reads as a 1.
        controls = rng.uniform(0.1, 0.9, size=(int(rng.integers(4, 8)), 2)) * [
            width,
            height,
        ]
        points = _bezier(controls, 64)
        draw.line(
            [tuple(point) for point in points.tolist()],
            fill=ink,
            width=max(2, int(min(width, height) * rng.uniform(0.03, 0.1))),
            joint="curve",
        )
    return image


def _bezier(controls: np.ndarray, steps: int) -> np.ndarray:
    """Return ``steps`` points of the Bezier curve of the control points (k, 2)."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    degree = len(controls) - 1
    weights = np.stack(
        [
            math.comb(degree, k) * t[:, 0] ** k * (1 - t[:, 0]) ** (degree - k)
            for k in range(degree + 1)
        ],
        axis=1,
    )
    points: np.ndarray = weights @ controls
    return points


def _shape(rng: np.random.Generator) -> Image.Image:
    """Return a square, triangle, cross, star or disc, outlined or filled.

    Outlined circles are left out: they are a 0.
    """
    image, _, ink = _canvas(rng)
    draw = ImageDraw.Draw(image)
    side = min(image.size)
    radius = side * rng.uniform(0.15, 0.45)
    cx, cy = image.width / 2, image.height / 2
    pen = max(2, int(side * rng.uniform(0.03, 0.1)))
    filled = bool(rng.random() < 0.5)
    angle = float(rng.uniform(0, 2 * math.pi))
    kind = str(rng.choice(["square", "triangle", "cross", "star", "disc"]))
    if kind == "disc":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=ink)
        return image
    if kind == "cross":
        for turn in (0.0, math.pi / 2):
            dx, dy = radius * math.cos(angle + turn), radius * math.sin(angle + turn)
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=ink, width=pen)
        return image
    corners = {"square": 4, "triangle": 3, "star": 10}[kind]
    radii = [
        radius * (0.45 if kind == "star" and k % 2 else 1.0) for k in range(corners)
    ]
    points = [
        (
            cx + r * math.cos(angle + 2 * math.pi * k / corners),
            cy + r * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k, r in enumerate(radii)
    ]
    if filled:
        draw.polygon(points, fill=ink)
    else:
        draw.line([*points, points[0]], fill=ink, width=pen, joint="curve")
    return image


def _noise(rng: np.random.Generator) -> Image.Image:
    """Return random pixels, or random blobs: smoothed noise cut at a level."""
    image, paper, ink = _canvas(rng)
    shape = (image.height, image.width)
    if rng.random() < 0.5:
        share = rng.uniform(0.02, 0.5)
        pixels = np.where(rng.random(shape) < share, ink, paper)
        return Image.fromarray(pixels.astype(np.uint8))
    field_ = Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(2, 8)))
    )
    values = np.asarray(field_, dtype=np.float64)
    cut = np.quantile(values, rng.uniform(0.7, 0.95))
    return Image.fromarray(np.where(values > cut, ink, paper).astype(np.uint8))


def _faint(rng: np.random.Generator) -> Image.Image:
    """Return a nearly blank page: a speck, or a faint smudge, on uneven paper."""
    image, paper, ink = _canvas(rng)
    width, height = image.size
    rows, columns = np.mgrid[0:height, 0:width]
    # Paper is never flat: a gentle slope of light and a little grain.
    slope = rng.uniform(-8, 8, size=2)
    pixels = (
        paper
        + slope[0] * rows / height
        + slope[1] * columns / width
        + rng.normal(0, 2, size=(height, width))
    )
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    if rng.random() < 0.5:
        radius = min(width, height) * rng.uniform(0.01, 0.04)
        strength = 1.0
    else:
        radius = min(width, height) * rng.uniform(0.1, 0.3)
        strength = rng.uniform(0.05, 0.2)
    mark = np.exp(-((rows - cy) ** 2 + (columns - cx) ** 2) / (2 * radius**2))
    pixels += (ink - paper) * strength * mark
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def non_digit_pictures(kind: str, count: int, seed: int = 0) -> list[Image.Image]:
    """Return ``count`` grey pictures of a kind of non-digit, the same for a seed.

    The kinds are NON_DIGIT_KINDS (chapter 8).
    """
    fonts = font_files() if kind == "letters" else []
    draw: dict[str, Callable[[np.random.Generator], Image.Image]] = {
        "letters": lambda rng: _character(rng, fonts, LETTERS),
        "scribbles": _scribble,
        "shapes": _shape,
        "noise": _noise,
        "faint": _faint,
    }
    if kind not in draw:
        raise ValueError(
            f"unknown kind {kind!r}; choose one of: {', '.join(NON_DIGIT_KINDS)}"
        )
    # One stream per kind and seed, so that one kind's pictures do not depend on
    # which other kinds were drawn.
    rng = np.random.default_rng([seed, NON_DIGIT_KINDS.index(kind)])
    return [draw[kind](rng) for _ in range(count)]


def printed_digit_pictures(count: int, seed: int = 0) -> list[Image.Image]:
    """Return ``count`` digits drawn as the ``letters`` kind draws letters (chapter 8).

    They are digits, so a good rule answers them: the control that shows a rule tells
    letters from digits, not fonts from handwriting.
    """
    fonts = font_files()
    rng = np.random.default_rng([seed, len(NON_DIGIT_KINDS)])
    return [_character(rng, fonts, "0123456789") for _ in range(count)]


# --- how digit-like the model finds a picture ----------------------------------------


class Features(NamedTuple):
    """What the scores read from a normalised batch (chapter 8).

    The logits (N, 10) and the mean of each channel of each conv block (N, channels).
    """

    logits: torch.Tensor
    channel_means: torch.Tensor


@torch.no_grad()
def digit_features(
    model: nn.Module, images: torch.Tensor, batch_size: int = 1000
) -> Features:
    """Return the Features of a normalised batch (N, 1, 28, 28), model in eval mode.

    The model must be laid out as the cnn or cnn_large architecture (chapter 8).
    """
    blocks, head = conv_blocks_and_head(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, means = [], []
    try:
        for start in range(0, len(images), batch_size):
            maps = images[start : start + batch_size].to(device)
            pooled = []
            for block in blocks:
                maps = block(maps)
                pooled.append(maps.mean((2, 3)))
            logits.append(head(maps.flatten(1)).float().cpu())
            means.append(torch.cat(pooled, 1).float().cpu())
    finally:
        model.train(was_training)
    return Features(torch.cat(logits), torch.cat(means))


def _block_slices(model_widths: Sequence[int], blocks: Sequence[int]) -> torch.Tensor:
    """Return the column indices of the chosen blocks in Features.channel_means."""
    starts = [sum(model_widths[:block]) for block in range(len(model_widths))]
    return torch.cat(
        [torch.arange(starts[b], starts[b] + model_widths[b]) for b in blocks]
    )


def block_widths(model: nn.Module) -> list[int]:
    """Return the number of channels each conv block of a cnn-like model puts out."""
    blocks, _ = conv_blocks_and_head(model)
    return [
        [part for part in block.modules() if isinstance(part, nn.Conv2d)][
            -1
        ].out_channels
        for block in blocks
    ]


def score_features(
    method: str, parameters: Mapping[str, torch.Tensor], features: Features
) -> torch.Tensor:
    """Return each picture's score, higher for a more digit-like one (chapter 8).

    Plain tensor operations, so that the score can be exported with the model.
    """
    logits = features.logits.float()
    if method == "max_softmax":
        return logits.softmax(1).amax(1)
    if method == "energy":
        return torch.logsumexp(logits, 1)
    if method not in ("mahalanobis", "combined"):
        raise ValueError(
            f"unknown method {method!r}; choose one of: {', '.join(METHODS)}"
        )
    x = features.channel_means.float()[:, parameters["columns"]]
    means, precision = parameters["means"], parameters["precision"]
    # (x - m)ᵀP(x - m) expanded: one matrix product for all ten digits.
    projected = x @ precision
    distances = (
        (projected * x).sum(1, keepdim=True)
        - 2 * projected @ means.T
        + ((means @ precision) * means).sum(1)
    )
    closeness = -distances.amin(1)
    if method == "mahalanobis":
        return closeness
    centre, spread = parameters["standardisation"].unbind(1)
    return (torch.logsumexp(logits, 1) - centre[0]) / spread[0] + (
        closeness - centre[1]
    ) / spread[1]


def fit_gaussians(
    channel_means: torch.Tensor, labels: torch.Tensor, columns: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Return each label's mean and the shared precision of the chosen channel means.

    They are the parameters of the Mahalanobis distance (chapter 8). The labels are
    0 to 9, or more where a kind of digit is its own group (coarse scans: 10 to 19).
    """
    x = channel_means[:, columns].double()
    groups, group_of = torch.unique(labels, return_inverse=True)
    means = torch.stack([x[group_of == group].mean(0) for group in range(len(groups))])
    centred = x - means[group_of]
    covariance = centred.T @ centred / len(x)
    covariance += COVARIANCE_RIDGE * covariance.diagonal().mean() * torch.eye(len(x.T))
    precision = torch.linalg.inv(covariance)
    # Rounding leaves the inverse a hair off symmetric; the distance assumes it is.
    precision = (precision + precision.T) / 2
    return {"columns": columns, "means": means.float(), "precision": precision.float()}


def threshold_for(scores: torch.Tensor, keep: float = DEFAULT_KEEP) -> float:
    """Return the score at or above which at least ``keep`` of the pictures lie."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a share in (0, 1], got {keep}")
    # "lower" never rounds the quantile up, so ties and rounding only answer more.
    return float(
        torch.quantile(scores.double(), 1.0 - keep, interpolation="lower").item()
    )


@dataclass
class NoveltyRule:
    """When to abstain: a score, its threshold and what it needs (chapter 8).

    A picture whose score is below the threshold is no digit the model can read.
    """

    method: str
    threshold: float
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return the rule as plain values that torch.load(weights_only=True) reads."""
        return {
            "method": self.method,
            "threshold": float(self.threshold),
            "parameters": {
                name: tensor.detach().cpu().clone()
                for name, tensor in self.parameters.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> NoveltyRule:
        """Return the rule that to_dict wrote; a malformed one raises ValueError."""
        method, threshold = data.get("method"), data.get("threshold")
        parameters = data.get("parameters", {})
        needed = {
            "max_softmax": set(),
            "energy": set(),
            "mahalanobis": {"columns", "means", "precision"},
            "combined": {"columns", "means", "precision", "standardisation"},
        }
        if (
            method not in needed
            or not isinstance(threshold, (int, float))
            or not math.isfinite(threshold)
            or not isinstance(parameters, Mapping)
            or not all(isinstance(value, torch.Tensor) for value in parameters.values())
            or not needed[str(method)] <= set(parameters)
        ):
            raise ValueError(
                "not a novelty rule: it needs a method of "
                f"{', '.join(METHODS)}, a finite threshold and that method's tensors"
            )
        return cls(str(method), float(threshold), dict(parameters))

    def size_bytes(self) -> int:
        """Return the bytes its parameters take."""
        return sum(
            tensor.numel() * tensor.element_size()
            for tensor in self.parameters.values()
        )


def fit_novelty_rule(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    validation_images: torch.Tensor,
    *,
    method: str = DEFAULT_METHOD,
    blocks: Sequence[int] | None = DEFAULT_BLOCKS,
    keep: float = DEFAULT_KEEP,
) -> NoveltyRule:
    """Return a rule that answers ``keep`` of the validation digits (chapter 8).

    Its parameters come from the training digits only. The images are normalised
    batches (N, 1, 28, 28); ``blocks`` None reads every conv block.
    """
    train = digit_features(model, train_images)
    validation = digit_features(model, validation_images)
    return fit_rule_on_features(
        method,
        train,
        train_labels,
        validation,
        block_widths(model),
        blocks=blocks,
        keep=keep,
    )


def fit_rule_on_features(
    method: str,
    train: Features,
    train_labels: torch.Tensor,
    validation: Features,
    widths: Sequence[int],
    *,
    blocks: Sequence[int] | None = DEFAULT_BLOCKS,
    keep: float = DEFAULT_KEEP,
) -> NoveltyRule:
    """Return fit_novelty_rule's rule from Features already computed (chapter 8)."""
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of: {', '.join(METHODS)}"
        )
    parameters: dict[str, torch.Tensor] = {}
    if blocks is None:
        blocks = range(len(widths))
    if method in ("mahalanobis", "combined"):
        if not blocks or not all(0 <= block < len(widths) for block in blocks):
            raise ValueError(
                f"blocks must be among 0 to {len(widths) - 1}, got {list(blocks)}"
            )
        parameters = fit_gaussians(
            train.channel_means, train_labels, _block_slices(widths, blocks)
        )
    if method == "combined":
        # Each score's mean and spread over the training digits, so that the two
        # weigh the same in the sum.
        parts = torch.stack(
            [
                score_features("energy", {}, train),
                score_features("mahalanobis", parameters, train),
            ]
        )
        parameters["standardisation"] = torch.stack([parts.mean(1), parts.std(1)], 1)
    scores = score_features(method, parameters, validation)
    return NoveltyRule(method, threshold_for(scores, keep), parameters)


def digit_scores(
    rule: NoveltyRule, model: nn.Module, images: torch.Tensor
) -> torch.Tensor:
    """Return the rule's score of each picture of a normalised batch (chapter 8).

    Higher is more digit-like; the rule answers from its threshold up.
    """
    return score_features(rule.method, rule.parameters, digit_features(model, images))
