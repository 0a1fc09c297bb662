"""Tests of chapter 5's widgets, driven as a browser would: set the upload's value, send mouse events, click."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_tutorial.predict import Prediction, Predictor
from mnist_tutorial.widgets import (
    PREVIEW_ZOOM,
    THUMBNAIL_SIDE,
    DrawingPad,
    ProbabilityBars,
    UploadPredictor,
)

SAMPLES = Path(__file__).resolve().parent.parent / "book" / "samples"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def uploaded(name: str, content: bytes) -> dict:
    """One entry of FileUpload.value, as ipywidgets 8 fills it from the browser."""
    return {
        "name": name,
        "type": "image/png",
        "size": len(content),
        "content": memoryview(content),
        "last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    }


def png_size(content: bytes) -> tuple[int, int]:
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(content)).size


def bar_values(bars: ProbabilityBars) -> np.ndarray:
    return np.array([bar.value for bar in bars.bars])


def test_probability_bars_show_and_empty() -> None:
    bars = ProbabilityBars()
    probabilities = np.linspace(1, 10, 10) / 55
    bars.show(Prediction(9, float(probabilities[9]), probabilities))
    assert np.allclose(bar_values(bars), probabilities)
    assert [bar.bar_style for bar in bars.bars] == [""] * 9 + ["success"]
    assert bars.percentages[9].value == "18.2%"
    bars.show(None)
    assert bar_values(bars).sum() == 0 and {
        label.value for label in bars.percentages
    } == {""}


def test_upload_shows_each_picture_its_28x28_form_and_the_probabilities(
    predictor: Predictor,
) -> None:
    widget = UploadPredictor(predictor)
    names = ["photo-007-digit-7.png", "stroke-003-digit-3.png"]
    widget.upload.value = tuple(
        uploaded(name, (SAMPLES / name).read_bytes()) for name in names
    )
    assert len(widget.results.children) == 2
    for name, row in zip(names, widget.results.children, strict=True):
        heading, (original, preview, bars) = row.children[0], row.children[1].children
        digit = int(name[-5])
        assert name in heading.value and f"reads <b>{digit}</b>" in heading.value
        assert max(png_size(original.children[1].value)) <= THUMBNAIL_SIDE
        assert png_size(preview.children[1].value) == (
            28 * PREVIEW_ZOOM,
            28 * PREVIEW_ZOOM,
        )
        assert bar_values(bars).sum() == pytest.approx(1, abs=1e-4)
        assert (
            int(bar_values(bars).argmax()) == digit
            and bars.bars[digit].bar_style == "success"
        )


def test_upload_reports_a_bad_file_and_shows_the_others(predictor: Predictor) -> None:
    widget = UploadPredictor(predictor)
    good = (SAMPLES / "stroke-001-digit-1.png").read_bytes()
    widget.upload.value = (
        uploaded("notes.png", b"not a picture"),
        uploaded("one.png", good),
        uploaded("<blank>.png", b"\x89PNG"),
    )
    bad, read, truncated = widget.results.children
    assert "notes.png" in bad.value and "not an image Pillow can read" in bad.value
    assert "reads <b>1</b>" in read.children[0].value
    assert "&lt;blank&gt;.png" in truncated.value and "<blank>" not in truncated.value
    widget.upload.value = (uploaded("one.png", good),)
    assert len(widget.results.children) == 1


def send(pad: DrawingPad, event: str, x: float, y: float) -> None:
    """Deliver a mouse event to the canvas the way the browser's message does."""
    pad.canvas._handle_frontend_event(None, {"event": event, "x": x, "y": y}, [])


def draw(
    pad: DrawingPad, points: list[tuple[float, float]], end: str = "mouse_up"
) -> None:
    send(pad, "mouse_down", *points[0])
    for point in points[1:]:
        send(pad, "mouse_move", *point)
    send(pad, end, *points[-1])


def test_drawing_pad_starts_empty(predictor: Predictor) -> None:
    pad = DrawingPad(predictor)
    assert "draw a digit" in pad.status.value
    assert bar_values(pad.bars).sum() == 0
    assert png_size(pad.preview.value) == (28 * PREVIEW_ZOOM, 28 * PREVIEW_ZOOM)


def test_drawing_with_the_mouse_predicts_the_digit(predictor: Predictor) -> None:
    pad = DrawingPad(predictor)
    draw(pad, [(140, 40), (139, 140), (138, 240)])
    assert "reads <b>1</b>" in pad.status.value
    assert (
        bar_values(pad.bars).sum() == pytest.approx(1, abs=1e-4)
        and pad.bars.bars[1].bar_style == "success"
    )
    preview = np.asarray(Image.open(io.BytesIO(pad.preview.value)))
    # Dark ink on light paper: the stroke is black, the margin white.
    assert preview.min() == 0 and preview[:, :PREVIEW_ZOOM].min() == 255
    drawing = np.asarray(pad.drawing)
    assert drawing[140, 139] == 255 and drawing[140, 40] == 0


def test_the_prediction_follows_the_pen_while_it_moves(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mnist_tutorial.widgets.LIVE_INTERVAL_S", 0.0)
    pad = DrawingPad(predictor)
    send(pad, "mouse_down", 80, 60)
    send(pad, "mouse_move", 200, 60)
    send(pad, "mouse_move", 120, 250)
    assert "reads <b>7</b>" in pad.status.value
    assert pad.pen == (120, 250)


def test_moving_without_pressing_draws_nothing(predictor: Predictor) -> None:
    pad = DrawingPad(predictor)
    send(pad, "mouse_move", 100, 100)
    send(pad, "mouse_move", 200, 200)
    send(pad, "mouse_up", 200, 200)
    assert np.asarray(pad.drawing).max() == 0 and "draw a digit" in pad.status.value


def test_leaving_the_canvas_ends_the_stroke(predictor: Predictor) -> None:
    pad = DrawingPad(predictor)
    draw(pad, [(140, 40), (140, 240)], end="mouse_out")
    assert pad.pen is None and "reads <b>1</b>" in pad.status.value
    send(pad, "mouse_move", 20, 20)
    assert np.asarray(pad.drawing)[20, 20] == 0


def test_clear_wipes_the_drawing_and_the_prediction(predictor: Predictor) -> None:
    pad = DrawingPad(predictor)
    pad.draw_stroke([(140, 40), (140, 240)])
    assert "reads <b>1</b>" in pad.status.value
    pad.clear_button.click()
    assert np.asarray(pad.drawing).max() == 0
    assert "draw a digit" in pad.status.value and bar_values(pad.bars).sum() == 0
    angles = np.linspace(0, 2 * np.pi, 40)
    pad.draw_stroke([(140 + 55 * np.sin(a), 140 - 90 * np.cos(a)) for a in angles])
    assert "reads <b>0</b>" in pad.status.value


def test_a_picture_of_the_drawing_lies_under_the_canvas(predictor: Predictor) -> None:
    """The canvas's strokes are never saved with the notebook; the picture under it is,
    so the static page shows the drawing that the saved answer came from."""
    pad = DrawingPad(predictor)
    blank = np.asarray(Image.open(io.BytesIO(pad.picture.value)))
    assert blank.shape == (280, 280) and blank.min() == 255  # white paper
    pad.draw_stroke([(140, 40), (140, 240)])
    picture = np.asarray(Image.open(io.BytesIO(pad.picture.value)))
    assert (picture == 255 - np.asarray(pad.drawing)).all()  # black ink on white
    assert picture[140, 140] == 0 and "reads <b>1</b>" in pad.status.value
    # The picture and the canvas share one grid cell, the canvas on top.
    grid = pad.children[0].children[0].children[0]
    assert list(grid.children) == [pad.picture, pad.canvas]
    assert pad.picture.layout.grid_area == pad.canvas.layout.grid_area == "pad"
    pad.clear_button.click()
    assert np.asarray(Image.open(io.BytesIO(pad.picture.value))).min() == 255
