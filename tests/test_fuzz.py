"""Fuzzing preprocess_image (issue #12): whatever the bytes or the array, the outcome is a clear
InvalidImageError or a valid prediction, never another exception and never a hang."""

from __future__ import annotations

import io
import math
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from mnist_tutorial.predict import InvalidImageError, Predictor, preprocess_image

pytestmark = [
    # Hundreds of examples through preprocessing and the model: minutes, not seconds.
    pytest.mark.slow,
    # Damaged files make Pillow warn about their metadata on the way to the error:
    # expected here.
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
]
# Hypothesis caches what it learns about the code; not in the shared work tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "mnist-tutorial-hypothesis")
# Deterministic (the same examples on every run, no example database), bounded, and with
# a deadline that only a hang can reach: an example takes milliseconds.
FUZZ = settings(
    max_examples=120,
    deadline=timedelta(seconds=20),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def picture() -> Image.Image:
    image = Image.new("L", (64, 48), 235)
    ImageDraw.Draw(image).line([(20, 8), (44, 8), (28, 40)], fill=25, width=4)
    return image


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


#: Small valid files of every common format, for mutations that get past the first header checks.
FILES = [
    encoded(picture().convert(mode), fmt)
    for fmt, mode in [
        ("PNG", "L"),
        ("JPEG", "L"),
        ("GIF", "L"),
        ("BMP", "RGB"),
        ("TIFF", "L"),
        ("WEBP", "RGB"),
        ("PNG", "RGBA"),
        ("TIFF", "F"),
        ("PNG", "I;16"),
        ("ICO", "RGBA"),
        ("PPM", "RGB"),
    ]
]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(device="cpu")


def check_outcome(predictor: Predictor, source: object) -> None:
    """Preprocess and predict: only a one-line InvalidImageError or a valid prediction may come out."""
    try:
        batch = preprocess_image(source)
    except InvalidImageError as error:
        message = str(error)
        assert message and "\n" not in message and len(message) < 300, message
        return
    assert (
        batch.shape == (1, 1, 28, 28)
        and batch.dtype == torch.float32
        and torch.isfinite(batch).all()
    )
    prediction = predictor.predict_batch(batch)[0]
    # No digit only with its reason: the shipped rule abstains on what is no digit.
    assert prediction.digit is None or 0 <= prediction.digit <= 9
    assert (prediction.digit is None) == (prediction.reason is not None)
    assert 0 < prediction.confidence <= 1
    assert math.isclose(float(prediction.probabilities.sum()), 1.0, abs_tol=1e-4)


@FUZZ
@given(content=st.binary(min_size=1, max_size=2048))
def test_random_bytes(predictor: Predictor, content: bytes) -> None:
    check_outcome(predictor, content)


@FUZZ
@given(original=st.sampled_from(FILES), data=st.data())
def test_damaged_image_files(
    predictor: Predictor, original: bytes, data: st.DataObject
) -> None:
    content = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        position = data.draw(st.integers(0, len(content) - 1), label="position")
        content[position] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.integers(1, len(content)), label="length")
    check_outcome(predictor, bytes(content[:cut]))


SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48),
    st.tuples(st.integers(1, 48), st.integers(1, 48), st.sampled_from([1, 2, 3, 4, 5])),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
)
DTYPES = st.sampled_from(
    [
        np.uint8,
        np.uint16,
        np.int8,
        np.int32,
        np.int64,
        np.uint32,
        np.float16,
        np.float32,
        np.float64,
        np.bool_,
        np.complex64,
    ]
)


@FUZZ
@given(array=hnp.arrays(DTYPES, SHAPES))
def test_random_arrays(predictor: Predictor, array: np.ndarray) -> None:
    before = array.copy()
    check_outcome(predictor, array)
    assert np.array_equal(array, before, equal_nan=array.dtype.kind in "fc")


@FUZZ
@given(
    pixels=hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))),
    mode=st.sampled_from(
        ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr", "HSV"]
    ),
    scale=st.sampled_from([1.0, 1 / 255, 257.0, -1.0, math.inf]),
)
def test_random_pil_images(
    predictor: Predictor, pixels: np.ndarray, mode: str, scale: float
) -> None:
    if mode in ("I", "F"):
        with np.errstate(invalid="ignore", over="ignore"):
            values = pixels.astype(np.float32) * np.float32(scale)
        integers = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(
            np.int32
        )
        image = Image.fromarray(values if mode == "F" else integers)
    else:
        image = Image.fromarray(pixels).convert(mode)
    check_outcome(predictor, image)
