"""Your own digits: make any picture look like MNIST, then predict it (chapter 5).

MNIST was made from scanned forms: each digit was cropped, its longest side scaled to 20
pixels keeping the aspect ratio (anti-aliased, hence the grey edges), and it was placed
in a 28x28 field so that its centre of mass sits at the centre. A model trained on MNIST
has only ever seen that, so a picture must go through the same steps before the model
can read it.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import os
import stat
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias, cast, overload

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, ImageChops, ImageFilter, ImageOps, UnidentifiedImageError
from scipy import ndimage
from torch import nn

from .checkpoint import TEMPERATURE_RANGE, Checkpoint, load_pretrained
from .data import normalize
from .device import select_device
from .errors import (
    ConfigError,
    MnistTutorialError,
    ModelOutputError,
    describe_os_error,
    first_line,
)
from .inference import ENGINES, build_engine, fold_batch_norm
from .measures import centre_of_mass
from .novelty import NoveltyRule, digit_scores

#: The mean and standard deviation of MNIST's training pixels, the normalisation of
#: every checkpoint of the book.
MNIST_NORMALIZATION = (0.1307, 0.3081)
#: What a Predictor on the CPU runs by default (chapter 8). ONNX Runtime scores a large
#: batch fastest but takes seconds to export and open; of the engines with no setup,
#: folded and channels-last PyTorch are the fastest (within noise of each other in
#: benchmarks/inference.py), and folding also drops the BatchNorm layers' passes.
AUTO_ENGINE = "folded"
#: Pictures above this many pixels are refused before they are decoded
#: (decompression bombs).
MAX_PIXELS = 50_000_000
#: The longest side of the grey working copy in which the ink is looked for.
WORKING_SIDE = 96
#: MNIST's digits fit a 20x20 box inside a 28x28 field.
BOX_SIDE = 20
FIELD_SIDE = 28
#: Ink must differ from the background by this share of the full brightness range.
MIN_CONTRAST = 0.08
#: Pieces of ink lighter than this share of the largest piece are specks, not part of
#: the digit.
MIN_PIECE_SHARE = 0.1
#: Ink cut off by the picture's edge and thicker than this share of the picture's
#: longest side is no pen stroke but a shadow or the paper's edge (the book's samples
#: reach 0.19).
MAX_STROKE_SHARE = 0.25
#: Ink surrounded by paper may be thicker: a bold digit in a small picture, such as
#: scikit-learn's 8x8 digits enlarged (up to 0.36), is no shadow. Thicker still, it is a
#: blot, not a stroke.
MAX_INSIDE_STROKE_SHARE = 0.40
#: Float pixels this far (a share of their range) outside [0, 1] or 0-255, a resampling
#: overshoot, are clipped.
FLOAT_OVERSHOOT = 0.1
#: Characters that make a spreadsheet read a CSV cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: The 256 grey levels of an 8-bit image, for statistics read from its histogram.
LEVELS = np.arange(256, dtype=np.float64)

ImageSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray
)


class InvalidImageError(MnistTutorialError, ValueError):
    """Raised when a picture cannot be read or holds no digit.

    The message says why and what to do.
    """


@dataclass(frozen=True)
class PreprocessSteps:
    """Every stage of preprocess_image for one picture, for display (chapter 5)."""

    grey: np.ndarray
    """uint8 brightness, upright, without transparency, lightly blurred.

    Its longest side is WORKING_SIDE pixels.
    """
    dark_ink: bool
    """Whether the ink is darker than the background (pen on paper).

    False when it is lighter (chalk on a board).
    """
    ink: np.ndarray
    """uint8: how much ink each pixel of ``grey`` holds, 0 (none) to 255.

    Uneven lighting and the paper's noise are removed.
    """
    cropped: np.ndarray
    """uint8 ink map cropped to the digit's bounding box, specks removed."""
    scaled: np.ndarray
    """uint8 digit, longest side BOX_SIDE pixels, aspect ratio kept."""
    centred: np.ndarray
    """uint8 (28, 28) field with the digit's centre of mass at its centre.

    This is what MNIST looks like.
    """
    tensor: torch.Tensor
    """Normalised float32 batch of one, shape (1, 1, 28, 28), ready for the model."""


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one picture (chapter 5).

    The digit, its probability and all ten probabilities. ``digit`` is None where the
    model abstains (chapter 8): ``reason`` says why, and ``confidence`` is still the
    probability of its most likely digit.
    """

    digit: int | None
    confidence: float
    probabilities: np.ndarray
    reason: str | None = None

    def summary(self) -> str:
        """Return the answer in a few words: "7 (99.9%)", or "not a digit (...)"."""
        if self.digit is None:
            guess = int(self.probabilities.argmax())
            return f"not a digit (best guess {guess}, {self.confidence:.1%})"
        return f"{self.digit} ({self.confidence:.1%})"


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file (chapter 5).

    Its prediction, or the one-line reason it failed.
    """

    path: Path
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Return True when the file was predicted."""
        return self.prediction is not None

    def to_dict(self) -> dict[str, object]:
        """Return the result as JSON-ready values.

        The keys are path, digit, confidence, probabilities, reason (why the model
        abstained, or None) and error.
        """
        prediction = self.prediction
        return {
            "path": str(self.path),
            "digit": prediction.digit if prediction else None,
            "confidence": round(prediction.confidence, 6) if prediction else None,
            "probabilities": [round(float(p), 6) for p in prediction.probabilities]
            if prediction
            else None,
            "reason": prediction.reason if prediction else None,
            "error": self.error,
        }


def _describe(source: object) -> str:
    """Return how error messages name a picture: its path, or its kind."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return "the PIL image"
    if isinstance(source, np.ndarray):
        return "the array"
    return "the image data"


def _readable_path(source: str | os.PathLike[str]) -> Path:
    """Return the path when it is a non-empty regular file.

    Otherwise raise InvalidImageError saying what it is.
    """
    path = Path(source)
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InvalidImageError(f"{path}: no such file; check the path") from None
    except OSError as error:
        raise InvalidImageError(
            f"{path} cannot be reached ({describe_os_error(error)}); "
            "check the path and the permissions of its folders"
        ) from None
    if stat.S_ISDIR(status.st_mode):
        raise InvalidImageError(
            f"{path} is a folder, not an image; "
            "pass the image files or use predict_folder"
        )
    # A pipe or a device would block the read forever.
    if not stat.S_ISREG(status.st_mode):
        raise InvalidImageError(f"{path} is not a regular file; pass an image file")
    if status.st_size == 0:
        raise InvalidImageError(
            f"{path} is empty (0 bytes); re-save or re-export the picture"
        )
    return path


def array_to_image(array: np.ndarray) -> Image.Image:
    """Return a PIL image of an (H, W), (H, W, 3) or (H, W, 4) array of pixels.

    The pixels may be uint8, uint16, bool or floats (0-1 or 0-255).
    """
    if (
        array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (1, 3, 4))
        or 0 in array.shape
    ):
        raise InvalidImageError(
            f"the array has shape {array.shape}; pass (height, width) for grey "
            "or (height, width, 3 or 4) for colour"
        )
    if array.dtype.kind not in "buif":
        raise InvalidImageError(
            f"the array's dtype {array.dtype} holds no pixels; "
            "pass uint8 (0-255), uint16, bool or floats in [0, 1]"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    # uint16 holding only 0-255 is 8-bit data in a wider type, not a black
    # 16-bit picture.
    if array.dtype == np.uint16 and array.ndim == 2 and array.max() > 255:
        return Image.fromarray(np.ascontiguousarray(array))
    if array.dtype == np.uint16 and array.max() > 255:
        return Image.fromarray((array >> 8).astype(np.uint8))
    if array.dtype == np.bool_:
        return Image.fromarray(array.astype(np.uint8) * 255)
    if array.dtype.kind == "f":
        return Image.fromarray(
            np.clip(array * float_scale(array), 0, 255).round().astype(np.uint8)
        )
    if array.min() >= 0 and array.max() <= 255:
        return Image.fromarray(array.astype(np.uint8))
    raise InvalidImageError(
        f"the array's {array.dtype} values (from {array.min()} to {array.max()}) "
        "are not pixels; pass uint8 (0-255), uint16, bool or floats in [0, 1]"
    )


def float_scale(values: np.ndarray) -> float:
    """Return the factor that takes float pixels to 0-255: 255 for [0, 1], 1 for 0-255.

    Other values raise InvalidImageError.
    """
    if not np.isfinite(values).all():
        raise InvalidImageError(
            "the picture holds NaN or infinite values; replace them before predicting"
        )
    low, high = float(values.min()), float(values.max())
    for full in (1.0, 255.0):
        if -FLOAT_OVERSHOOT * full <= low and high <= (1 + FLOAT_OVERSHOOT) * full:
            return 255.0 / full
    raise InvalidImageError(
        f"the float pixels run from {low:g} to {high:g}, neither [0, 1] nor 0-255; "
        "rescale them to one of those ranges"
    )


def open_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return the picture decoded and upright (chapter 5).

    The EXIF orientation is applied; of an animation, the first frame is returned.
    """
    label = _describe(source)
    if isinstance(source, np.ndarray):
        source = array_to_image(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, label, max_pixels)
        return ImageOps.exif_transpose(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidImageError(
                "the image data is empty (0 bytes); pass the content of an image file"
            )
        stream: Path | io.BytesIO = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        stream = _readable_path(source)
    else:
        raise TypeError(
            f"cannot read a picture from {type(source).__name__}; "
            "pass a path, bytes, a PIL image or a NumPy array"
        )
    try:
        # Pillow's own bomb check only warns below twice its global limit;
        # ours is the one that counts.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                _check_size(image.size, label, max_pixels)
                # JPEG can decode at 1/2, 1/4 or 1/8 size directly, far faster than
                # decoding then shrinking.
                image.draft(None, (2 * WORKING_SIDE, 2 * WORKING_SIDE))
                image.load()
                ImageOps.exif_transpose(image, in_place=True)
                return image
    except Image.DecompressionBombError:
        raise InvalidImageError(
            f"{label} is far over the {max_pixels / 1e6:g}-megapixel limit "
            "(a decompression bomb?); shrink it first"
        ) from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"{label} is not an image Pillow can read "
            "(unknown format or damaged header); save it as PNG or JPEG"
        ) from None
    except PermissionError:
        raise InvalidImageError(
            f"{label} cannot be read (permission denied); check the file's permissions"
        ) from None
    except InvalidImageError:
        raise
    # Damaged files make decoders fail in many ways
    # (OSError, SyntaxError, zlib, struct, index errors...).
    except Exception as error:
        raise InvalidImageError(
            f"{label} is truncated or corrupt ({first_line(error)}); "
            "re-save or re-export it"
        ) from None


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    """Raise InvalidImageError when a width x height is over the pixel limit."""
    width, height = size
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{label} is {width}x{height} = {width * height / 1e6:g} megapixels, "
            f"over the {max_pixels / 1e6:g}-megapixel limit (a decompression bomb?); "
            "shrink it first"
        )
    if width == 0 or height == 0:
        raise InvalidImageError(
            f"{label} is {width}x{height} pixels: it has no pixels; pass a real picture"
        )


def flatten_transparency(image: Image.Image) -> Image.Image:
    """Return the picture without transparency (chapter 5).

    See-through pixels are set to contrast with the visible ones.
    """
    # Strokes drawn on a transparent layer are often black on transparent black:
    # laying them on the opposite of their own brightness keeps them visible
    # whatever their colour.
    if (
        "A" not in image.getbands()
        and "a" not in image.getbands()
        and "transparency" not in image.info
    ):
        return image
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
    if alpha.min() == 255:
        return rgba.convert("RGB")
    brightness = np.asarray(rgba.convert("L"), dtype=np.float32)
    visible_brightness = (brightness * alpha).sum() / max(alpha.sum(), 1.0)
    background = 255 if visible_brightness < 128 else 0
    return Image.alpha_composite(
        Image.new("RGBA", rgba.size, (background, background, background, 255)), rgba
    )


def to_eight_bits(image: Image.Image) -> Image.Image:
    """Return a 16-bit, 32-bit or floating-point grey picture as 8-bit grey.

    The values are scaled by their full range.
    """
    # Pillow's own conversion clips: every 16-bit value above 255 would come out white.
    # Integers that all fit in 0-255 are 8-bit data in a wider type.
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        scale = float_scale(values)
    else:
        scale = 255.0 / 65535.0 if values.max() > 255 else 1.0
    return Image.fromarray(np.clip(values * scale, 0.0, 255.0).round().astype(np.uint8))


def grey_image(image: Image.Image, side: int = WORKING_SIDE) -> Image.Image:
    """Return the picture as 8-bit grey, lightly blurred (chapter 5).

    It is resized so that its longest side is ``side`` pixels.
    """
    image = flatten_transparency(image)
    grey = (
        to_eight_bits(image)
        if image.mode.startswith("I") or image.mode == "F"
        else image.convert("L")
    )
    scale = side / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    # A 3x3 blur, so that single noisy pixels cannot pass for ink.
    return grey.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0).filter(
        ImageFilter.BoxBlur(1)
    )


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """Return the median of a histogram: ``values`` each repeated ``counts`` times."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(counts[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def ink_is_dark(grey: Image.Image) -> bool:
    """Return True when the ink is darker than the background.

    Most pixels are background; the ink is the far extreme.
    """
    typical = weighted_median(LEVELS, np.array(grey.histogram()))
    # A one-band picture has one (darkest, brightest) pair, not a pair per band.
    darkest, brightest = cast(tuple[int, int], grey.getextrema())
    return typical - darkest >= brightest - typical


def background(signed: Image.Image) -> NDArray[np.float64]:
    """Return the paper's level under the ink, which is bright in ``signed``.

    The level is a smooth surface, fitted around the strokes.
    """
    # Light on paper changes slowly (a gradient, a vignette), so a quadratic surface
    # describes it, and a quarter of the resolution is enough to fit it. Ink stands
    # above the paper, so a second fit leaves out the pixels well above the first.
    coarse = np.asarray(signed.reduce(4), dtype=np.float64)
    scale = max(signed.size)
    # Coarse pixel i averages full-size pixels 4i to 4i + 3, so it sits at 4i + 1.5.
    rows = (np.arange(coarse.shape[0]) * 4 + 1.5) / scale
    columns = (np.arange(coarse.shape[1]) * 4 + 1.5) / scale
    terms = quadratic_terms(np.repeat(rows, len(columns)), np.tile(columns, len(rows)))
    values = coarse.ravel()
    residual = values - terms @ least_squares(terms, values)
    typical = np.median(residual)
    paper = residual <= typical + max(
        3 * 1.4826 * np.median(np.abs(residual - typical)), 2.0
    )
    coefficients = least_squares(terms[paper], values[paper])
    constant, x, y, xx, xy, yy = map(float, coefficients)
    rows = np.arange(signed.height)[:, None] / scale
    columns = np.arange(signed.width)[None, :] / scale
    return (
        (constant + y * rows + yy * rows**2)
        + (x + xy * rows) * columns
        + xx * columns**2
    )


def least_squares(terms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return the coefficients that make ``terms @ coefficients`` closest to ``values``.

    Closest in the least-squares sense.
    """
    # The normal equations of six unknowns: far cheaper than a general solver
    # for so small a system.
    return np.linalg.solve(
        terms.T @ terms + 1e-9 * np.eye(terms.shape[1]), terms.T @ values
    )


def quadratic_terms(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Return one row of 1, x, y, x², xy and y² per point.

    The points are at rows ``y`` and columns ``x``.
    """
    return np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y])


def ink_map(grey: Image.Image, dark_ink: bool) -> NDArray[np.uint8]:
    """Return each pixel's ink, uint8 0 to 255 (chapter 5).

    Uneven light and the paper's noise are removed.
    """
    signed = ImageChops.invert(grey) if dark_ink else grey
    ink = (
        np.clip(np.asarray(signed) - background(signed), 0, 255)
        .round()
        .astype(np.uint8)
    )
    # Most pixels hold no ink, so the median and the median deviation of the ink
    # measure the paper's noise.
    counts = np.bincount(ink.ravel(), minlength=256)
    typical = weighted_median(LEVELS, counts)
    noise = typical + 4 * 1.4826 * weighted_median(np.abs(LEVELS - typical), counts)
    strongest = int(ink.max())
    if strongest < MIN_CONTRAST * 255 or strongest < 2 * noise:
        raise InvalidImageError(
            "no ink found: the picture is blank or too faint "
            f"(contrast {strongest / 255:.0%}); "
            "write the digit darker or photograph it in better light"
        )
    floor = max(noise, 0.2 * strongest)
    stretch = (
        (np.clip((LEVELS - floor) / (strongest - floor), 0.0, 1.0) * 255)
        .round()
        .astype(np.uint8)
    )
    return stretch[ink]


def crop_to_ink(ink: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Return the ink map cropped to the digit's box (chapter 5).

    Specks much lighter than the digit are left out.
    """
    pieces, _ = ndimage.label(ink > 0, structure=np.ones((3, 3)))
    masses = np.bincount(pieces.ravel(), weights=ink.ravel())
    masses[0] = 0.0
    digit = ink * (masses >= MIN_PIECE_SHARE * float(masses.max()))[pieces]
    check_strokes(digit)
    rows = np.flatnonzero(digit.any(axis=1))
    columns = np.flatnonzero(digit.any(axis=0))
    return digit[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def check_strokes(digit: np.ndarray) -> None:
    """Raise InvalidImageError when the ink holds an area far thicker than a pen stroke.

    Cut off by the picture's edge, such an area is a shadow or the paper's edge.
    """
    ink = digit > 0
    # The picture's edge counts as ink, so that a dark area it cuts off is
    # measured whole.
    depth = ndimage.distance_transform_edt(np.pad(ink, 1, constant_values=True))[
        1:-1, 1:-1
    ]
    pieces, _ = ndimage.label(ink, structure=np.ones((3, 3)))
    rim = np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]])
    at_edge = np.isin(pieces, rim[rim > 0])
    side = max(digit.shape)
    edge_thickness = 2 * float(depth[at_edge].max(initial=0.0)) / side
    inside_thickness = 2 * float(depth[ink & ~at_edge].max(initial=0.0)) / side
    if edge_thickness > MAX_STROKE_SHARE:
        raise InvalidImageError(
            f"a dark area {edge_thickness:.0%} of the picture thick at its edge, "
            "far thicker than a pen stroke, looks like a shadow or the paper's edge; "
            "crop to the digit or light it evenly"
        )
    if inside_thickness > MAX_INSIDE_STROKE_SHARE:
        raise InvalidImageError(
            f"a dark blot {inside_thickness:.0%} of the picture thick is far thicker "
            "than a pen stroke; write the digit with a thinner pen or leave more "
            "paper around it"
        )


def scale_to_box(cropped: np.ndarray, box: int = BOX_SIDE) -> np.ndarray:
    """Return the digit (uint8) with its longest side ``box`` pixels (chapter 5).

    The aspect ratio is kept, and the brightest pixel is 255.
    """
    height, width = cropped.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled = np.asarray(
        Image.fromarray(cropped).resize(size, Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    # Shrinking a thin stroke greys it; MNIST's strokes reach full white,
    # so restore the contrast.
    return (scaled * (255 / max(float(scaled.max()), 1.0))).round().astype(np.uint8)


def centre_by_mass(scaled: np.ndarray, field: int = FIELD_SIDE) -> np.ndarray:
    """Return a square uint8 field holding the digit, as in MNIST (chapter 5).

    The digit's centre of mass is at the field's centre pixel.
    """
    height, width = scaled.shape
    rows, columns = centre_of_mass(scaled[None])
    centre_row, centre_column = float(rows[0]), float(columns[0])
    # Shift by whole pixels, as MNIST did, and never push the digit out of the field.
    top = int(np.clip(round(field / 2 - centre_row), 0, field - height))
    left = int(np.clip(round(field / 2 - centre_column), 0, field - width))
    centred = np.zeros((field, field), dtype=np.uint8)
    centred[top : top + height, left : left + width] = scaled
    return centred


@overload
def preprocess_image(
    image: ImageSource,
    normalization: tuple[float, float] = ...,
    *,
    keep_steps: Literal[False] = ...,
    max_pixels: int = ...,
) -> torch.Tensor: ...
@overload
def preprocess_image(
    image: ImageSource,
    normalization: tuple[float, float] = ...,
    *,
    keep_steps: Literal[True],
    max_pixels: int = ...,
) -> PreprocessSteps: ...
def preprocess_image(
    image: ImageSource,
    normalization: tuple[float, float] = MNIST_NORMALIZATION,
    *,
    keep_steps: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> torch.Tensor | PreprocessSteps:
    """Return the picture made to look like MNIST (chapter 5).

    The result is a normalised (1, 1, 28, 28) batch, or every step with ``keep_steps``.
    """
    grey = grey_image(open_image(image, max_pixels=max_pixels))
    dark_ink = ink_is_dark(grey)
    ink = ink_map(grey, dark_ink)
    cropped = crop_to_ink(ink)
    scaled = scale_to_box(cropped)
    centred = centre_by_mass(scaled)
    tensor = normalize(torch.from_numpy(centred)[None], *normalization)
    if not keep_steps:
        return tensor
    return PreprocessSteps(
        np.asarray(grey), dark_ink, ink, cropped, scaled, centred, tensor
    )


def resize_naively(
    image: ImageSource, normalization: tuple[float, float] = MNIST_NORMALIZATION
) -> torch.Tensor:
    """Return the picture squashed to 28x28 grey and normalised (chapter 5).

    None of MNIST's steps are taken: this is the baseline.
    """
    grey = (
        open_image(image)
        .convert("L")
        .resize((FIELD_SIDE, FIELD_SIDE), Image.Resampling.BILINEAR)
    )
    return normalize(torch.from_numpy(np.asarray(grey).copy())[None], *normalization)


class Predictor:
    """A model with its normalisation on a device, ready to read pictures (chapter 5).

    It works on its own copy of the model, in eval mode, so the model passed in is left
    as it was. A Checkpoint brings its normalisation and its calibration temperature
    (chapter 8); a bare model needs ``normalization``, the (mean, std) it was trained
    with, and uses its logits as they are unless given a ``temperature``. None means
    the shipped pretrained model.
    """

    def __init__(
        self,
        model: nn.Module | Checkpoint | None = None,
        normalization: tuple[float, float] | None = None,
        device: str | torch.device = "cpu",
        temperature: float | None = None,
        engine: str = "auto",
        calibration: torch.Tensor | None = None,
        abstain: bool = True,
    ) -> None:
        checkpoint = load_pretrained() if model is None else model
        self.novelty_rule: NoveltyRule | None = None
        if isinstance(checkpoint, Checkpoint):
            if abstain:
                self.novelty_rule = checkpoint.novelty_rule
            network: nn.Module = checkpoint.model
            normalization = normalization or checkpoint.normalization
            if temperature is None:
                temperature = checkpoint.temperature
        elif normalization is None:
            raise ConfigError(
                "a bare model carries no normalisation; pass normalization=(mean, std) "
                "as it was trained with, or the Checkpoint, which carries it"
            )
        else:
            network = checkpoint
        self.normalization: tuple[float, float] = normalization
        low, high = TEMPERATURE_RANGE
        if temperature is not None and not low <= temperature <= high:
            raise ConfigError(
                f"temperature={temperature} is outside {low}-{high}; fit one on the "
                "validation split with mnist_tutorial.fit_temperature"
            )
        self.temperature = 1.0 if temperature is None else temperature
        self.device = select_device(device)
        # Convolutions run about twice as fast on a CPU with the channels stored last.
        self.model = (
            copy.deepcopy(network).to(self.device).to(memory_format=torch.channels_last)
        )
        self.model.eval()
        self.engine = choose_engine(self.model, self.device, engine)
        self._logits = (
            build_engine(self.model, self.engine, calibration=calibration)
            if self.device.type == "cpu"
            else self.model
        )

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Return the (N, 10) calibrated probabilities of a normalised batch.

        The batch has shape (N, 1, 28, 28); the logits are divided by the temperature.
        """
        logits = self._logits(batch.to(self.device)).float() / self.temperature
        probabilities: np.ndarray = logits.softmax(1).cpu().numpy()
        return probabilities

    @torch.no_grad()
    def digit_scores(self, batch: torch.Tensor) -> np.ndarray | None:
        """Return how digit-like each picture of a normalised batch is (chapter 8).

        None when the Predictor has no novelty rule and so never abstains.
        """
        if self.novelty_rule is None:
            return None
        scores: np.ndarray = digit_scores(
            self.novelty_rule, self.model, batch.to(self.device)
        ).numpy()
        return scores

    def predict_batch(self, batch: torch.Tensor) -> list[Prediction]:
        """Return a Prediction per image of a normalised batch (N, 1, 28, 28).

        NaN outputs raise ModelOutputError.
        """
        scores = self.digit_scores(batch)
        rule = self.novelty_rule
        return [
            as_prediction(row, None if scores is None else scores[index], rule)
            for index, row in enumerate(self.probabilities(batch))
        ]

    def preprocess(self, image: ImageSource) -> torch.Tensor:
        """Return the picture made MNIST-like, a (1, 1, 28, 28) batch.

        It is normalised with this model's normalisation.
        """
        return preprocess_image(image, self.normalization)

    def predict(self, image: ImageSource) -> Prediction:
        """Return the prediction for one picture."""
        return self.predict_batch(self.preprocess(image))[0]

    def predict_many(
        self, images: Iterable[ImageSource], batch_size: int = 256
    ) -> list[Prediction]:
        """Return the predictions for many pictures, in batches.

        A bad picture raises its error.
        """
        predictions = []
        for outcome in self.outcomes(images, batch_size):
            if isinstance(outcome, MnistTutorialError):
                raise outcome
            predictions.append(outcome)
        return predictions

    def predict_files(
        self, paths: Iterable[str | os.PathLike[str]], batch_size: int = 256
    ) -> list[FileResult]:
        """Return a FileResult per file, in order.

        A file that fails carries its error; the others go on.
        """
        files = [Path(path) for path in paths]
        return [
            FileResult(path, outcome)
            if isinstance(outcome, Prediction)
            else FileResult(path, error=_file_error(path, outcome))
            for path, outcome in zip(
                files, self.outcomes(files, batch_size), strict=True
            )
        ]

    def outcomes(
        self, images: Iterable[ImageSource], batch_size: int = 256
    ) -> Iterator[Prediction | InvalidImageError | ModelOutputError]:
        """Yield each picture's Prediction, or the error that stopped it, in order.

        The pictures that could be read go through the model in batches of
        ``batch_size``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pending: list[torch.Tensor | InvalidImageError] = []
        for image in images:
            try:
                pending.append(self.preprocess(image))
            except InvalidImageError as error:
                pending.append(error)
            if len(pending) == batch_size:
                yield from self._answer(pending)
                pending = []
        yield from self._answer(pending)

    def _answer(
        self, pending: list[torch.Tensor | InvalidImageError]
    ) -> Iterator[Prediction | InvalidImageError | ModelOutputError]:
        """Yield the outcome of each pending picture: one model call for all tensors."""
        tensors = [item for item in pending if isinstance(item, torch.Tensor)]
        batch = torch.cat(tensors) if tensors else None
        rows = iter(self.probabilities(batch) if batch is not None else ())
        scores = self.digit_scores(batch) if batch is not None else None
        answered = 0
        for item in pending:
            if isinstance(item, InvalidImageError):
                yield item
                continue
            score = None if scores is None else scores[answered]
            answered += 1
            try:
                yield as_prediction(next(rows), score, self.novelty_rule)
            except ModelOutputError as error:
                yield error


def choose_engine(network: nn.Module, device: torch.device, engine: str) -> str:
    """Return the inference engine a Predictor uses: ``auto`` resolved (chapter 8).

    Off the CPU only PyTorch runs the model; on it, ``auto`` is AUTO_ENGINE where the
    network's BatchNorms fold, and channels-last PyTorch where they do not.
    """
    if engine not in ("auto", *ENGINES):
        raise ConfigError(
            f"engine={engine!r} is not one of auto, {', '.join(ENGINES)}; choose one"
        )
    if device.type != "cpu":
        if engine not in ("auto", "eager", "channels_last"):
            raise ConfigError(
                f"engine={engine!r} runs on the CPU only; use device='cpu' or "
                "engine='auto'"
            )
        return "channels_last"
    if engine != "auto":
        return engine
    try:
        fold_batch_norm(network)
    except ValueError:
        return "channels_last"
    return AUTO_ENGINE


def _file_error(path: Path, error: MnistTutorialError) -> str:
    """Return a file's one-line error; messages about the model gain the file's path."""
    return str(error) if isinstance(error, InvalidImageError) else f"{path}: {error}"


def as_prediction(
    probabilities: np.ndarray,
    score: float | None = None,
    rule: NoveltyRule | None = None,
) -> Prediction:
    """Return the Prediction of ten probabilities; below the rule, none (chapter 8).

    NaN or infinite probabilities raise ModelOutputError: they are no answer. A
    ``score`` below the ``rule``'s threshold gives no digit, and the reason.
    """
    if not np.isfinite(probabilities).all():
        raise ModelOutputError(
            "the model gave NaN or infinite outputs, so no digit; "
            "its weights or normalisation are broken, re-train it"
        )
    likeliest, confidence = int(probabilities.argmax()), float(probabilities.max())
    if rule is not None and score is not None and not score >= rule.threshold:
        return Prediction(
            None,
            confidence,
            probabilities,
            reason=f"not a digit: it looks unlike the digits the model learned "
            f"(digit score {score:.2f}, below {rule.threshold:.2f}); its best guess is "
            f"{likeliest} ({confidence:.0%})",
        )
    return Prediction(likeliest, confidence, probabilities)


@functools.lru_cache(maxsize=1)
def default_predictor() -> Predictor:
    """Return the Predictor of the shipped pretrained model, loaded once (chapter 5)."""
    return Predictor()


def as_predictor(model: Predictor | Checkpoint | nn.Module | None) -> Predictor:
    """Return a Predictor for a model, a checkpoint, a Predictor, or None.

    None means the shipped pretrained model.
    """
    if model is None:
        return default_predictor()
    if isinstance(model, Predictor):
        return model
    return Predictor(model)


def predict_image(
    image: ImageSource, model: Predictor | Checkpoint | nn.Module | None = None
) -> Prediction:
    """Return the prediction for one picture (chapter 5).

    It holds the predicted digit, its confidence and the ten probabilities.
    """
    return as_predictor(model).predict(image)


def predict_images(
    images: Iterable[ImageSource],
    model: Predictor | Checkpoint | nn.Module | None = None,
    *,
    batch_size: int = 256,
) -> list[Prediction]:
    """Return the predictions for many pictures, batched through the model (chapter 5).

    A bad picture raises its error.
    """
    return as_predictor(model).predict_many(images, batch_size)


def image_extensions() -> frozenset[str]:
    """Return the file extensions of the formats Pillow can open.

    They are in lower case, with the dot.
    """
    Image.init()
    return frozenset(
        extension
        for extension, format_name in Image.registered_extensions().items()
        if format_name in Image.OPEN
    )


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Return the image files under a folder and its subfolders, sorted (chapter 5).

    Hidden files are skipped. Subfolders that cannot be listed are left out;
    ``find_image_files`` reports them.
    """
    return find_image_files(folder)[0]


def find_image_files(
    folder: str | os.PathLike[str],
) -> tuple[list[Path], list[FileResult]]:
    """Return a folder's image files and a failed result per unlistable subfolder.

    The files are sorted; hidden ones are skipped.
    """
    root = Path(folder)
    if not _is_folder(root):
        raise InvalidImageError(f"{root} is not a folder; pass a folder of pictures")
    extensions = image_extensions()
    files: list[Path] = []
    unlisted: list[OSError] = []
    for top, folders, names in os.walk(root, onerror=unlisted.append):
        folders[:] = [name for name in folders if not name.startswith(".")]
        files += [
            Path(top, name)
            for name in names
            if not name.startswith(".")
            and Path(name).suffix.lower() in extensions
            and Path(top, name).is_file()
        ]
    failed = [
        FileResult(
            Path(error.filename),
            error=f"{error.filename}: the folder cannot be listed "
            f"({describe_os_error(error)}); check its permissions",
        )
        for error in unlisted
    ]
    return sorted(files), failed


def _is_folder(path: Path) -> bool:
    """Return True when the path is a folder.

    A path that cannot be reached is not one (its use reports why).
    """
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def expand_paths(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], list[FileResult]]:
    """Return the files to read, and a failed result per folder that cannot be listed.

    The paths are of files and of folders, which are walked.
    """
    files: list[Path] = []
    failed: list[FileResult] = []
    for path in map(Path, paths):
        if _is_folder(path):
            found, unlisted = find_image_files(path)
            files += found
            failed += unlisted
        else:
            files.append(path)
    return files, failed


def predict_folder(
    folder: str | os.PathLike[str],
    model: Predictor | Checkpoint | nn.Module | None = None,
    *,
    batch_size: int = 256,
) -> list[FileResult]:
    """Return one FileResult per image file under the folder (chapter 5).

    They are followed by one per subfolder that cannot be listed.
    """
    files, failed = find_image_files(folder)
    return as_predictor(model).predict_files(files, batch_size) + failed


CSV_COLUMNS = [
    "path",
    "digit",
    "confidence",
    *(f"p{digit}" for digit in range(10)),
    "reason",
    "error",
]


def write_csv(results: Sequence[FileResult], path: str | os.PathLike[str]) -> Path:
    """Return the path of a new CSV file with one row per result (chapter 5).

    An existing file is never written over. A text cell that a spreadsheet would run as
    a formula (it starts with =, +, -, @, a tab or a carriage return) is written with a
    leading apostrophe.
    """
    path = Path(path)
    try:
        handle = path.open("x", newline="", encoding="utf-8")
    except FileExistsError:
        raise FileExistsError(
            f"{path} already exists; choose another name or delete it first"
        ) from None
    with handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            prediction = result.prediction
            if prediction is None:
                writer.writerow(
                    [
                        inert_cell(str(result.path)),
                        "",
                        "",
                        *[""] * 10,
                        "",
                        inert_cell(result.error or ""),
                    ]
                )
            else:
                writer.writerow(
                    [
                        inert_cell(str(result.path)),
                        "" if prediction.digit is None else prediction.digit,
                        f"{prediction.confidence:.6f}",
                        *(f"{p:.6f}" for p in prediction.probabilities),
                        prediction.reason or "",
                        "",
                    ]
                )
    return path


def inert_cell(text: str) -> str:
    """Return a CSV cell's text, safe to open in a spreadsheet.

    A leading apostrophe is added when a spreadsheet would read it as a formula.
    """
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text
