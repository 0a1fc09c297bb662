"""Tests of mnist_tutorial.predict and the `predict` command: preprocessing, bad input, predictions, folders."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from mnist_tutorial import (
    build_model,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
)
from mnist_tutorial.cli import main
from mnist_tutorial.errors import ConfigError, ModelOutputError
from mnist_tutorial.novelty import NoveltyRule
from mnist_tutorial.predict import (
    FIELD_SIDE,
    MAX_PIXELS,
    FileResult,
    InvalidImageError,
    Prediction,
    Predictor,
    as_prediction,
    image_files,
    open_image,
    predict_folder,
    predict_image,
    predict_images,
    preprocess_image,
    resize_naively,
    write_csv,
)

SAMPLES = Path(__file__).resolve().parent.parent / "book" / "samples"
PAPER, INK = 235, 25


def seven(
    size: tuple[int, int] = (160, 120),
    box: tuple[int, int, int, int] = (50, 20, 100, 100),
    width: int = 7,
) -> Image.Image:
    """A pen '7' in grey, dark on light paper."""
    image = Image.new("L", size, PAPER)
    x0, y0, x1, y1 = box
    ImageDraw.Draw(image).line(
        [(x0, y0), (x1, y0), (x0 + (x1 - x0) * 0.35, y1)],
        fill=INK,
        width=width,
        joint="curve",
    )
    return image


def one() -> Image.Image:
    """A pen '1': a single upright stroke."""
    image = Image.new("L", (160, 120), PAPER)
    ImageDraw.Draw(image).line([(80, 20), (78, 100)], fill=INK, width=7)
    return image


def zero() -> Image.Image:
    """A pen '0': an upright ellipse."""
    image = Image.new("L", (160, 120), PAPER)
    ImageDraw.Draw(image).ellipse([(55, 15), (105, 105)], outline=INK, width=7)
    return image


def centred(image: object, **kwargs: object) -> np.ndarray:
    return preprocess_image(image, keep_steps=True, **kwargs).centred.astype(np.float64)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28x28 images, allowing the one-pixel difference that whole-pixel centring can make."""
    b = np.asarray(b, dtype=np.float64).reshape(28, 28)
    return max(
        float(np.corrcoef(np.ravel(a), np.roll(b, (dy, dx), axis=(0, 1)).ravel())[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is tiny: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def digit_of(name: str) -> int:
    return int(re.search(r"digit-(\d)", name).group(1))


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return centred(seven())


# --- preprocessing: what comes out looks like MNIST
# ---------------------------------------------


def test_output_is_a_normalised_mnist_like_batch() -> None:
    steps = preprocess_image(seven(), keep_steps=True)
    assert steps.tensor.shape == (1, 1, 28, 28) and steps.tensor.dtype == torch.float32
    assert steps.centred.dtype == np.uint8 and steps.centred.shape == (
        FIELD_SIDE,
        FIELD_SIDE,
    )
    assert (
        steps.centred.max() == 255
        and steps.centred[0].max() == 0
        and steps.centred[:, 0].max() == 0
    )
    rows = np.flatnonzero(steps.centred.any(axis=1))
    columns = np.flatnonzero(steps.centred.any(axis=0))
    assert max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1) == 20
    weights = steps.centred.astype(np.float64)
    centre = [
        (weights.sum(axis=1 - axis) * np.arange(28)).sum() / weights.sum()
        for axis in (0, 1)
    ]
    assert np.allclose(centre, 14, atol=0.5)
    mean, std = 0.1307, 0.3081
    expected = (torch.from_numpy(steps.centred).float() / 255 - mean) / std
    assert torch.allclose(steps.tensor[0, 0], expected)
    assert torch.equal(preprocess_image(seven()), steps.tensor)


def test_steps_keep_the_aspect_ratio_and_find_the_ink_polarity() -> None:
    steps = preprocess_image(seven(), keep_steps=True)
    assert steps.dark_ink
    assert steps.grey.shape == (72, 96) and steps.grey.dtype == np.uint8
    assert (
        steps.ink.shape == steps.grey.shape
        and steps.ink.max() == 255
        and steps.ink[0, 0] == 0
    )
    height, width = steps.cropped.shape
    assert (
        steps.scaled.shape[0] == 20
        and abs(steps.scaled.shape[1] - 20 * width / height) <= 1
    )
    assert not preprocess_image(ImageOps.invert(seven()), keep_steps=True).dark_ink


def test_position_size_polarity_light_noise_and_tint_do_not_change_the_result(
    reference: np.ndarray,
) -> None:
    rng = np.random.default_rng(0)
    pixels = np.asarray(seven(), dtype=np.float64)
    columns = np.arange(160)[None, :]
    uneven = np.clip(
        pixels * (0.55 + 0.45 * columns / 160) + rng.normal(0, 6, pixels.shape), 0, 255
    )
    tinted = np.dstack([pixels, pixels * 0.9, pixels * 0.7])
    assert similarity(reference, centred(seven(box=(5, 5, 55, 85)))) > 0.95
    assert similarity(reference, centred(ImageOps.invert(seven()))) > 0.95
    assert similarity(reference, centred(uneven.astype(np.uint8))) > 0.95
    assert similarity(reference, centred(tinted.astype(np.uint8))) > 0.95
    assert (
        similarity(
            reference, centred(seven((800, 600), (300, 200, 550, 600), width=35))
        )
        > 0.75
    )
    # The same comparison tells different digits, and a plain resize, apart.
    assert similarity(reference, centred(one())) < 0.5
    assert similarity(reference, centred(zero())) < 0.5
    assert similarity(reference, resize_naively(seven())[0, 0].numpy()) < 0.5


def test_preprocessing_an_mnist_style_image_again_changes_little(
    reference: np.ndarray,
) -> None:
    assert similarity(reference, centred(reference.astype(np.uint8))) > 0.9


def test_specks_far_lighter_than_the_digit_do_not_move_the_crop(
    reference: np.ndarray,
) -> None:
    speckled = seven()
    draw = ImageDraw.Draw(speckled)
    for x, y in [(5, 5), (150, 110), (150, 8)]:
        draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=INK)
    assert similarity(reference, centred(speckled)) > 0.95


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda im: im.convert("RGB"), id="RGB"),
        pytest.param(lambda im: im.convert("1", dither=Image.Dither.NONE), id="1-bit"),
        pytest.param(lambda im: im.convert("RGB").quantize(8), id="P"),
        pytest.param(lambda im: im.convert("CMYK"), id="CMYK"),
        pytest.param(
            lambda im: Image.open(
                io.BytesIO(encoded(im.convert("CMYK"), "JPEG", quality=95))
            ),
            id="CMYK-JPEG",
        ),
        pytest.param(lambda im: im.convert("LA"), id="LA"),
        pytest.param(
            lambda im: Image.fromarray(np.asarray(im).astype(np.uint16) * 257),
            id="16-bit",
        ),
        pytest.param(
            lambda im: Image.open(
                io.BytesIO(
                    encoded(Image.fromarray(np.asarray(im).astype(np.uint16) * 257))
                )
            ),
            id="16-bit-PNG",
        ),
        pytest.param(
            lambda im: Image.fromarray(np.asarray(im).astype(np.int32) * 257),
            id="32-bit-I",
        ),
        pytest.param(
            lambda im: Image.fromarray(np.asarray(im).astype(np.float32) / 255),
            id="float-F",
        ),
    ],
)
def test_every_image_mode_gives_the_same_digit(reference: np.ndarray, convert) -> None:
    assert similarity(reference, centred(convert(seven()))) > 0.9


@pytest.mark.parametrize(
    "ink_colour",
    [(0, 0, 0), (255, 255, 255), (30, 60, 200)],
    ids=["black", "white", "blue"],
)
def test_strokes_on_a_transparent_layer_are_found_whatever_their_colour(
    reference: np.ndarray, ink_colour
) -> None:
    coverage = (PAPER - np.asarray(seven(), dtype=np.float64)) / (PAPER - INK)
    layer = np.dstack(
        [
            np.broadcast_to(
                np.array(ink_colour, dtype=np.float64), (*coverage.shape, 3)
            ),
            coverage * 255,
        ]
    )
    assert (
        similarity(
            reference, centred(Image.fromarray(layer.round().astype(np.uint8), "RGBA"))
        )
        > 0.9
    )


def test_a_palette_image_with_a_transparent_background_is_read(
    reference: np.ndarray,
) -> None:
    palette = seven().convert("P")
    palette.info["transparency"] = PAPER
    assert (
        similarity(reference, centred(Image.open(io.BytesIO(encoded(palette))))) > 0.9
    )


def test_exif_orientation_is_honoured(reference: np.ndarray) -> None:
    # A camera that stores the picture sideways and says so in EXIF tag 274 (6: rotate
    # 90 degrees clockwise to view).
    sideways = seven().transpose(Image.Transpose.ROTATE_90)
    exif = sideways.getexif()
    exif[0x0112] = 6
    content = encoded(sideways, "JPEG", quality=95, exif=exif)
    assert similarity(reference, centred(content)) > 0.9
    assert (
        similarity(reference, centred(seven().transpose(Image.Transpose.ROTATE_90)))
        < 0.5
    )


def test_every_kind_of_source_gives_the_same_result(tmp_path: Path) -> None:
    picture = seven()
    path = tmp_path / "seven.png"
    picture.save(path)
    grey = np.asarray(picture)
    expected = preprocess_image(picture)
    sources = [
        path,
        str(path),
        path.read_bytes(),
        bytearray(path.read_bytes()),
        memoryview(path.read_bytes()),
        grey,
        grey.astype(np.float32) / 255,
        grey.astype(np.float64),
        grey.astype(np.uint16) * 257,
        grey[:, :, None],
        np.dstack([grey] * 3),
        grey.astype(np.int64),
    ]
    for source in sources:
        assert torch.allclose(preprocess_image(source), expected, atol=0.05), type(
            source
        )
    assert similarity(centred(grey > 128), centred(picture)) > 0.9


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    array = np.asarray(seven()).copy()
    array_before = array.copy()
    picture = seven().convert("RGB")
    picture_before = picture.tobytes()
    sideways = seven()
    exif = sideways.getexif()
    exif[0x0112] = 6
    path = tmp_path / "seven.jpg"
    sideways.save(path, exif=exif)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for source in (array, picture, path):
        preprocess_image(source)
    assert np.array_equal(array, array_before)
    assert (
        picture.tobytes() == picture_before
        and picture.size == (160, 120)
        and picture.mode == "RGB"
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_large_jpeg_photo_is_decoded_small_and_read_like_a_small_picture(
    reference: np.ndarray,
) -> None:
    photo = seven((3000, 2000), (1100, 400, 1900, 1700), width=110).convert("RGB")
    content = encoded(photo, "JPEG", quality=90)
    # JPEG's draft mode decodes at a fraction of the size: the work the ink search
    # needs.
    assert max(open_image(content).size) <= 3000 // 4
    assert similarity(reference, centred(content)) > 0.75


def test_an_animated_image_is_read_from_its_first_frame() -> None:
    content = encoded(
        seven(),
        "GIF",
        save_all=True,
        append_images=[zero(), one()],
        duration=100,
        loop=0,
    )
    assert Image.open(io.BytesIO(content)).n_frames == 3
    first = centred(content)
    assert similarity(first, centred(seven())) > 0.99
    assert similarity(first, centred(zero())) < 0.5


# --- bad input: one InvalidImageError each, with a one-line message
# --------------------------------


def assert_invalid(source: object, *fragments: str, **kwargs: object) -> str:
    with pytest.raises(InvalidImageError) as caught:
        preprocess_image(source, **kwargs)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in message and len(message) < 200
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_missing_file(tmp_path: Path) -> None:
    assert_invalid(
        tmp_path / "nowhere.png", "nowhere.png", "no such file", "check the path"
    )


def test_a_folder(tmp_path: Path) -> None:
    assert_invalid(tmp_path, "is a folder", "predict_folder")


def test_a_pipe_is_refused_without_reading_it(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    assert_invalid(pipe, "pipe.png", "not a regular file")


def test_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.png"
    seven().save(path)
    real_open = open

    def refuse(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    assert_invalid(path, "locked.png", "permission denied", "permissions")


def test_a_zero_byte_file_and_empty_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    assert_invalid(empty, "empty.png", "is empty (0 bytes)")
    assert_invalid(b"", "empty (0 bytes)")


def test_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("a shopping list, not a picture\n")
    assert_invalid(
        notes, "notes.png", "not an image Pillow can read", "save it as PNG or JPEG"
    )


def test_truncated_files() -> None:
    png = encoded(seven())
    jpeg = encoded(seven(), "JPEG")
    assert_invalid(png[: len(png) // 2], "truncated or corrupt", "re-save")
    assert_invalid(jpeg[: len(jpeg) // 2], "truncated or corrupt", "re-save")


def test_corrupt_files() -> None:
    png = bytearray(encoded(seven()))
    start = png.index(b"IDAT") + 10
    png[start : start + 20] = bytes(b ^ 0xFF for b in png[start : start + 20])
    assert_invalid(bytes(png), "truncated or corrupt")
    header = bytearray(encoded(seven()))
    header[20] ^= 0xFF
    assert_invalid(bytes(header), "not an image Pillow can read", "damaged header")


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(lambda: np.full((120, 160), 240, np.uint8), id="white"),
        pytest.param(lambda: np.zeros((120, 160), np.uint8), id="black"),
        pytest.param(
            lambda: np.clip(
                np.random.default_rng(1).normal(220, 4, (120, 160)), 0, 255
            ).astype(np.uint8),
            id="noisy",
        ),
        pytest.param(
            lambda: np.tile(np.linspace(90, 250, 160), (120, 1)).astype(np.uint8),
            id="uneven-light",
        ),
        pytest.param(lambda: np.zeros((40, 40, 4), np.uint8), id="transparent"),
    ],
)
def test_a_blank_page_has_no_ink(page) -> None:
    assert_invalid(page(), "no ink found", "blank or too faint")


def test_a_faint_digit_is_too_faint() -> None:
    faint = np.where(np.asarray(seven()) < 128, 232, 235).astype(np.uint8)
    assert_invalid(faint, "no ink found", "contrast")


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = assert_invalid(
            png_header(10_000, 6_000),
            "10000x6000",
            "60 megapixels",
            f"{MAX_PIXELS / 1e6:g}-megapixel limit",
            "decompression bomb",
        )
        assert "shrink" in message
        # Far beyond the limit Pillow itself refuses to open it; the message still gives
        # ours.
        assert_invalid(
            png_header(100_000, 100_000),
            f"{MAX_PIXELS / 1e6:g}-megapixel limit",
            "decompression bomb",
        )
    assert_invalid(
        seven(), "0.0192 megapixels", "0.01-megapixel limit", max_pixels=10_000
    )


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((5, 5, 2), np.uint8), "shape (5, 5, 2)"),
        (np.zeros((0, 5), np.uint8), "shape (0, 5)"),
        (np.full((5, 5), np.nan), "NaN or infinite"),
        (np.full((5, 5), -3), "not pixels"),
    ],
)
def test_arrays_that_are_not_pictures(array: np.ndarray, fragment: str) -> None:
    assert_invalid(array, fragment)


def test_a_source_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(
        TypeError, match="pass a path, bytes, a PIL image or a NumPy array"
    ):
        preprocess_image(42)


# --- predictions
# ------------------------------------------------------------------------------------


def test_predict_image_reads_drawn_digits(predictor: Predictor) -> None:
    for picture, digit in [(seven(), 7), (one(), 1), (zero(), 0)]:
        prediction = predict_image(picture, predictor)
        assert isinstance(prediction, Prediction) and prediction.digit == digit
        assert prediction.probabilities.shape == (10,) and np.isclose(
            prediction.probabilities.sum(), 1, atol=1e-5
        )
        assert prediction.confidence == pytest.approx(prediction.probabilities.max())
        assert prediction.digit == int(prediction.probabilities.argmax())


def test_the_shipped_model_is_the_default() -> None:
    assert predict_image(one()).digit == 1


def test_predict_images_matches_one_by_one(predictor: Predictor) -> None:
    pictures = [seven(), one(), zero(), ImageOps.invert(seven())]
    batched = predict_images(pictures, predictor, batch_size=3)
    assert [p.digit for p in batched] == [7, 1, 0, 7]
    for picture, prediction in zip(pictures, batched, strict=True):
        assert np.allclose(
            predictor.predict(picture).probabilities,
            prediction.probabilities,
            atol=1e-5,
        )
    with pytest.raises(InvalidImageError):
        predict_images([seven(), b"junk"], predictor)


def test_a_predictor_takes_a_checkpoint_or_a_bare_model_with_its_normalisation() -> (
    None
):
    checkpoint = load_pretrained()
    from_checkpoint = Predictor(checkpoint, device="cpu")
    bare = Predictor(checkpoint.model, checkpoint.normalization)
    assert (
        from_checkpoint.normalization == checkpoint.normalization
        and from_checkpoint.device.type == "cpu"
    )
    assert bare.normalization == checkpoint.normalization
    assert predict_image(seven(), checkpoint).digit == 7
    assert bare.predict(seven()).digit == 7
    other = Predictor(checkpoint, (0.5, 0.25))
    assert other.normalization == (0.5, 0.25)  # given beats the checkpoint's own


# --- the Predictor, with a tiny model -------------------------------------------------


def tiny(seed: int = 0) -> torch.nn.Module:
    """Return a small cnn with random weights: arbitrary answers, but its own."""
    torch.manual_seed(seed)
    return build_model("cnn", widths=(4, 8, 8))


NORMALIZATION = (0.1307, 0.3081)


def test_a_bare_model_without_normalisation_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        Predictor(tiny())
    assert str(raised.value) == (
        "a bare model carries no normalisation; pass normalization=(mean, std) as it "
        "was trained with, or the Checkpoint, which carries it"
    )
    with pytest.raises(ConfigError):
        predict_image(seven(), tiny())


def test_a_predictor_leaves_the_callers_model_as_it_was() -> None:
    model = tiny()
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    storage = {name: tensor.data_ptr() for name, tensor in model.state_dict().items()}
    attributes = set(vars(model))
    predictor = Predictor(model, NORMALIZATION)
    predictor.predict_many([seven(), one(), zero()])
    assert predictor.model is not model
    assert model.training and all(module.training for module in model.modules())
    assert not predictor.model.training
    first_conv = model[0][0].weight
    assert first_conv.is_contiguous()  # not made channels-last
    assert predictor.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
        assert tensor.data_ptr() == storage[name], name  # not even copied in place
        assert tensor.device.type == "cpu", name
    assert set(vars(model)) == attributes


def test_a_predictor_on_another_device_leaves_the_model_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The meta device stands in for an accelerator: tensors without memory.
    monkeypatch.setattr(
        torch.accelerator,
        "current_accelerator",
        lambda check_available=False: torch.device("meta"),
    )
    model = tiny()
    predictor = Predictor(model, NORMALIZATION, device="auto")
    assert predictor.device == torch.device("meta")
    assert next(predictor.model.parameters()).device.type == "meta"
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_a_predictor_gives_its_models_own_probabilities() -> None:
    model = tiny().eval()
    predictor = Predictor(model, NORMALIZATION)
    pictures = [seven(), one(), zero()]
    batch = torch.cat(
        [preprocess_image(picture, NORMALIZATION) for picture in pictures]
    )
    with torch.no_grad():
        expected = model(batch).softmax(1).numpy()
    predictions = predictor.predict_many(pictures, batch_size=2)
    assert [p.digit for p in predictions] == expected.argmax(1).tolist()
    for prediction, row in zip(predictions, expected, strict=True):
        np.testing.assert_allclose(prediction.probabilities, row, atol=1e-6)
        assert prediction.confidence == pytest.approx(row.max(), abs=1e-6)
    np.testing.assert_allclose(predictor.probabilities(batch), expected, atol=1e-6)
    assert predictor.predict(one()).digit == int(expected[1].argmax())


def test_a_predictor_divides_the_logits_by_its_temperature(tmp_path: Path) -> None:
    model = tiny().eval()
    batch = preprocess_image(seven(), NORMALIZATION)
    with torch.no_grad():
        logits = model(batch)
    bare = Predictor(model, NORMALIZATION, temperature=0.5)
    np.testing.assert_allclose(
        bare.probabilities(batch), (logits / 0.5).softmax(1).numpy(), atol=1e-6
    )
    saved = save_checkpoint(
        tmp_path / "calibrated.pt", model, normalization=NORMALIZATION, temperature=2.0
    )
    from_checkpoint = Predictor(load_checkpoint(saved))
    assert from_checkpoint.temperature == 2.0
    np.testing.assert_allclose(
        from_checkpoint.probabilities(batch),
        (logits / 2.0).softmax(1).numpy(),
        atol=1e-6,
    )
    # An argument overrides the checkpoint's; a bare model's default is 1.
    assert Predictor(load_checkpoint(saved), temperature=1.0).temperature == 1.0
    assert Predictor(model, NORMALIZATION).temperature == 1.0


@pytest.mark.parametrize("temperature", [0.0, -1.0, 100.0, float("nan")])
def test_a_temperature_out_of_range_is_a_config_error(temperature: float) -> None:
    with pytest.raises(ConfigError, match=r"^temperature=.* is outside 0\.05-20"):
        Predictor(tiny(), NORMALIZATION, temperature=temperature)


def test_a_predictor_uses_its_normalisation() -> None:
    model = tiny().eval()
    own = Predictor(model, NORMALIZATION).predict(seven()).probabilities
    other = Predictor(model, (0.5, 0.25)).predict(seven()).probabilities
    assert not np.allclose(own, other, atol=1e-4)
    steps = preprocess_image(seven(), (0.5, 0.25))
    with torch.no_grad():
        expected = model(steps).softmax(1)[0].numpy()
    np.testing.assert_allclose(other, expected, atol=1e-6)


def test_outcomes_keep_the_order_and_carry_each_pictures_error() -> None:
    predictor = Predictor(tiny(), NORMALIZATION)
    pictures = [seven(), b"junk", one(), np.zeros((5, 5, 2), np.uint8), zero()]
    outcomes = list(predictor.outcomes(pictures, batch_size=2))
    assert [type(outcome) for outcome in outcomes] == [
        Prediction,
        InvalidImageError,
        Prediction,
        InvalidImageError,
        Prediction,
    ]
    alone = [predictor.predict(picture) for picture in (seven(), one(), zero())]
    for outcome, expected in zip(outcomes[::2], alone, strict=True):
        np.testing.assert_allclose(
            outcome.probabilities, expected.probabilities, atol=1e-6
        )
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        list(predictor.outcomes(pictures, batch_size=0))
    with pytest.raises(InvalidImageError, match="not an image Pillow can read"):
        predictor.predict_many(pictures)


def test_outcomes_give_a_model_output_error_per_picture() -> None:
    model = tiny()
    with torch.no_grad():
        model[-1].weight.fill_(float("nan"))
    outcomes = list(Predictor(model, NORMALIZATION).outcomes([seven(), b"junk"]))
    assert isinstance(outcomes[0], ModelOutputError) and isinstance(
        outcomes[1], InvalidImageError
    )


def test_predict_files_gives_one_result_per_file_in_order(tmp_path: Path) -> None:
    predictor = Predictor(tiny(), NORMALIZATION)
    seven().save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("not a picture")
    one().save(tmp_path / "c.png")
    paths = [
        tmp_path / "a.png",
        tmp_path / "b.png",
        tmp_path / "missing.png",
        tmp_path / "c.png",
    ]
    results = predictor.predict_files(paths, batch_size=1)
    assert [result.path for result in results] == paths
    assert [result.ok for result in results] == [True, False, False, True]
    assert "not an image Pillow can read" in results[1].error
    assert "no such file" in results[2].error
    assert results[3].prediction.digit == predictor.predict(one()).digit


def test_the_predict_command_reads_a_tiny_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny()
    checkpoint = save_checkpoint(
        tmp_path / "tiny.pt", model, normalization=NORMALIZATION
    )
    seven().save(tmp_path / "seven.png")
    expected = Predictor(model, NORMALIZATION).predict(seven())
    assert (
        main(
            [
                "predict",
                "--json",
                str(tmp_path / "seven.png"),
                "--checkpoint",
                str(checkpoint),
            ]
        )
        == 0
    )
    (result,) = json.loads(capsys.readouterr().out)
    assert result["digit"] == expected.digit and result["error"] is None
    assert result["confidence"] == pytest.approx(expected.confidence, abs=1e-6)


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.png"))


def test_the_shipped_samples_are_small_and_labelled() -> None:
    files = sample_files()
    assert len(files) >= 200
    assert sum(path.stat().st_size for path in files) < 500_000
    assert {digit_of(path.name) for path in files} == set(range(10))
    assert {path.name.split("-")[0] for path in files} == {"photo", "stroke"}


@pytest.mark.slow
def test_mnist_style_preprocessing_reads_the_samples_and_a_plain_resize_does_not(
    predictor: Predictor,
) -> None:
    files = sample_files()
    labels = np.array([digit_of(path.name) for path in files])
    results = predict_folder(SAMPLES, predictor)
    assert [result.path for result in results] == files and all(
        result.ok for result in results
    )
    mnist_style = np.mean([result.prediction.digit for result in results] == labels)
    naive = np.mean(
        [
            p.digit
            for p in predictor.predict_batch(
                torch.cat([resize_naively(f) for f in files])
            )
        ]
        == labels
    )
    assert mnist_style >= 0.97
    assert naive < 0.5


# --- folders, CSV and the command line
# --------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Three good pictures (one in a subfolder), two bad ones, and files that are not pictures."""
    seven().save(tmp_path / "a-seven.png")
    one().convert("RGB").save(tmp_path / "b-one.jpg")
    (tmp_path / "sub").mkdir()
    zero().save(tmp_path / "sub" / "c-zero.webp")
    (tmp_path / "d-broken.png").write_bytes(encoded(seven())[:300])
    Image.new("L", (50, 50), 255).save(tmp_path / "e-blank.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / ".hidden.png").write_bytes(b"")
    return tmp_path


def test_image_files_walks_the_folder_and_skips_other_files(folder: Path) -> None:
    names = [path.relative_to(folder).as_posix() for path in image_files(folder)]
    assert names == [
        "a-seven.png",
        "b-one.jpg",
        "d-broken.png",
        "e-blank.png",
        "sub/c-zero.webp",
    ]
    with pytest.raises(InvalidImageError, match="not a folder"):
        image_files(folder / "a-seven.png")


def test_predict_folder_keeps_going_past_bad_files(
    folder: Path, predictor: Predictor
) -> None:
    results = predict_folder(folder, predictor, batch_size=2)
    outcome = {
        result.path.name: result.prediction.digit if result.ok else result.error
        for result in results
    }
    assert (
        outcome["a-seven.png"] == 7
        and outcome["b-one.jpg"] == 1
        and outcome["c-zero.webp"] == 0
    )
    assert "truncated or corrupt" in outcome["d-broken.png"]
    assert "no ink found" in outcome["e-blank.png"]


def test_write_csv_writes_one_row_per_result_and_never_overwrites(
    folder: Path, predictor: Predictor, tmp_path_factory: pytest.TempPathFactory
) -> None:
    results = predict_folder(folder, predictor)
    target = tmp_path_factory.mktemp("out") / "results.csv"
    write_csv(results, target)
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [str(result.path) for result in results]
    seven_row = rows[0]
    assert seven_row["digit"] == "7" and seven_row["error"] == ""
    assert sum(float(seven_row[f"p{d}"]) for d in range(10)) == pytest.approx(
        1, abs=1e-4
    )
    assert rows[2]["digit"] == "" and "truncated or corrupt" in rows[2]["error"]
    assert seven_row["reason"] == rows[2]["reason"] == ""
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        write_csv(results[:1], target)
    assert target.read_bytes() == before


def test_an_abstention_has_no_digit_and_says_why(tmp_path: Path) -> None:
    probabilities = np.array([0.02, 0.02, 0.02, 0.02, 0.6, 0.2, 0.04, 0.04, 0.02, 0.02])
    rule = NoveltyRule("energy", threshold=1.5)
    answered = as_prediction(probabilities, 1.5, rule)
    assert answered.digit == 4 and answered.reason is None
    assert answered.summary() == "4 (60.0%)"
    refused = as_prediction(probabilities, 1.2, rule)
    assert refused.digit is None and refused.confidence == pytest.approx(0.6)
    assert refused.reason == (
        "not a digit: it looks unlike the digits the model learned (digit score 1.20, "
        "below 1.50); its best guess is 4 (60%)"
    )
    assert refused.summary() == "not a digit (best guess 4, 60.0%)"
    assert as_prediction(probabilities, float("nan"), rule).digit is None
    result = FileResult(Path("x.png"), refused)
    assert result.ok and result.to_dict()["digit"] is None
    assert result.to_dict()["reason"] == refused.reason
    target = write_csv([result], tmp_path / "refused.csv")
    with target.open(newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["digit"] == "" and row["reason"] == refused.reason and row["error"] == ""


def test_a_predictor_abstains_with_its_checkpoints_rule(tmp_path: Path) -> None:
    model = tiny().eval()
    batch = torch.cat([preprocess_image(seven(), NORMALIZATION)] * 2)
    with torch.no_grad():
        energy = torch.logsumexp(model(batch), 1)[0].item()
    path = save_checkpoint(
        tmp_path / "abstains.pt",
        model,
        normalization=NORMALIZATION,
        novelty_rule=NoveltyRule("energy", threshold=energy + 1.0),
    )
    refusing = Predictor(load_checkpoint(path))
    assert [p.digit for p in refusing.predict_batch(batch)] == [None, None]
    (outcome,) = refusing.outcomes([seven()])
    assert isinstance(outcome, Prediction) and outcome.digit is None
    assert "not a digit" in (outcome.reason or "")
    answering = Predictor(load_checkpoint(path), abstain=False)
    assert answering.predict(seven()).digit == int(
        refusing.probabilities(batch)[0].argmax()
    )


def test_file_result_to_dict() -> None:
    prediction = Prediction(3, 0.9, np.full(10, 0.1))
    assert FileResult(Path("x.png"), prediction).to_dict()["digit"] == 3
    failed = FileResult(Path("y.png"), error="no ink found").to_dict()
    assert failed == {
        "path": "y.png",
        "digit": None,
        "confidence": None,
        "probabilities": None,
        "reason": None,
        "error": "no ink found",
    }


def test_cli_prints_one_line_per_image_and_exits_1_when_any_failed(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", str(folder), str(folder / "missing.png")])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 1 and len(lines) == 6
    assert re.fullmatch(
        rf"{re.escape(str(folder / 'a-seven.png'))}: 7 \(\d+\.\d%\)", lines[0]
    ), lines[0]
    assert "missing.png: error:" in lines[-1] and "no such file" in lines[-1]
    assert err.strip() == "python -m mnist_tutorial predict: 3 of 6 files failed"


def test_cli_exits_0_when_every_file_is_read(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(folder / "a-seven.png"), str(folder / "sub")]) == 0
    assert capsys.readouterr().err == ""


def test_cli_json(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["predict", "--json", str(folder / "a-seven.png"), str(folder / "d-broken.png")]
    )
    results = json.loads(capsys.readouterr().out)
    assert code == 1 and [r["digit"] for r in results] == [7, None]
    assert len(results[0]["probabilities"]) == 10 and "truncated" in results[1]["error"]


def test_cli_csv_and_its_misuse(
    folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path_factory.mktemp("out") / "results.csv"
    assert main(["predict", str(folder / "a-seven.png"), "--csv", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 1 results to {target}"
    before = target.read_bytes()
    assert main(["predict", str(folder), "--csv", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err and target.read_bytes() == before
    assert (
        main(["predict", str(folder), "--csv", str(target.parent / "no" / "r.csv")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(folder), "--json", "--csv", str(target)])
    assert exit_info.value.code == 2
    empty = tmp_path_factory.mktemp("empty")
    assert main(["predict", str(empty)]) == 2
    assert "no image files" in capsys.readouterr().err
    assert (
        main(["predict", str(folder), "--checkpoint", str(empty / "missing.pt")]) == 2
    )
    assert "no checkpoint at" in capsys.readouterr().err
