"""Chapter 5's widgets: upload pictures or draw a digit and see what the model reads."""

from __future__ import annotations

import html
import io
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas
from PIL import Image, ImageDraw

from .predict import (
    InvalidImageError,
    Prediction,
    Predictor,
    default_predictor,
    open_image,
    preprocess_image,
)

#: Shown pictures fit this many pixels;
#: the 28x28 input is enlarged by PREVIEW_ZOOM without smoothing.
THUMBNAIL_SIDE = 140
PREVIEW_ZOOM = 4
#: While the pen moves, predict at most this often (seconds);
#: lifting the pen always predicts.
LIVE_INTERVAL_S = 0.15


def png_bytes(image: Image.Image) -> bytes:
    """Return the image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail_png(content: bytes) -> bytes:
    """Return a picture's file content as an upright PNG thumbnail.

    It is at most THUMBNAIL_SIDE pixels on a side.
    """
    image = open_image(content)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return png_bytes(image.convert("RGBA"))


def preview_png(centred: np.ndarray) -> bytes:
    """Return a 28x28 uint8 digit as a PNG, enlarged PREVIEW_ZOOM times (chapter 5).

    It is blocky, without smoothing, and drawn dark ink on light.
    """
    side = centred.shape[0] * PREVIEW_ZOOM
    # MNIST stores ink as 255; the book draws every digit dark on light paper.
    paper = Image.fromarray(255 - centred)
    return png_bytes(paper.resize((side, side), Image.Resampling.NEAREST))


def reading(prediction: Prediction) -> str:
    """Return the HTML line that says what the model read (chapters 5 and 8)."""
    if prediction.digit is None:
        guess = int(prediction.probabilities.argmax())
        return (
            f"the model says <b>not a digit</b> (its best guess, {guess}, at "
            f"{prediction.confidence:.1%})"
        )
    return f"the model reads <b>{prediction.digit}</b> ({prediction.confidence:.1%})"


class ProbabilityBars(widgets.VBox):
    """A bar chart of the ten probabilities, one bar per digit (chapter 5).

    The predicted digit's bar is highlighted.
    """

    def __init__(self) -> None:
        self.bars = [
            widgets.FloatProgress(
                value=0.0,
                min=0.0,
                max=1.0,
                description=f"digit {digit}",
                layout=widgets.Layout(width="260px"),
            )
            for digit in range(10)
        ]
        self.percentages = [widgets.Label("") for _ in range(10)]
        rows = [
            widgets.HBox([bar, label])
            for bar, label in zip(self.bars, self.percentages, strict=True)
        ]
        super().__init__([widgets.HTML("<b>probability of each digit</b>"), *rows])

    def show(self, prediction: Prediction | None) -> None:
        """Set the bars to a prediction's probabilities, or empty them for None."""
        probabilities = (
            prediction.probabilities if prediction is not None else np.zeros(10)
        )
        for digit, (bar, label) in enumerate(
            zip(self.bars, self.percentages, strict=True)
        ):
            bar.value = float(probabilities[digit])
            bar.bar_style = (
                "success"
                if prediction is not None and digit == prediction.digit
                else ""
            )
            label.value = (
                f"{probabilities[digit]:.1%}" if prediction is not None else ""
            )


class UploadPredictor(widgets.VBox):
    """Upload pictures and see what the model reads in each (chapter 5).

    Each is shown with its 28x28 MNIST-style form and the ten probabilities.
    """

    def __init__(self, predictor: Predictor | None = None) -> None:
        self.predictor = predictor or default_predictor()
        self.upload = widgets.FileUpload(
            accept="image/*", multiple=True, description="Upload digits"
        )
        self.results = widgets.VBox()
        super().__init__([self.upload, self.results])
        self.upload.observe(self.show_uploads, names="value")

    def show_uploads(self, change: Mapping[str, Any]) -> None:
        """Replace the results with one row per uploaded file."""
        self.results.children = [
            self.result_row(file["name"], bytes(file["content"]))
            for file in change["new"]
        ]

    def result_row(self, name: str, content: bytes) -> widgets.Widget:
        """Return one file's row of results, or of why it failed.

        The results are the picture, what the model sees and the probabilities.
        """
        title = f"<b>{html.escape(name)}</b>"
        try:
            steps = preprocess_image(
                content, self.predictor.normalization, keep_steps=True
            )
            original = thumbnail_png(content)
        except InvalidImageError as error:
            return widgets.HTML(
                f"{title}: <span style='color:#b00'>{html.escape(str(error))}</span>"
            )
        prediction = self.predictor.predict_batch(steps.tensor)[0]
        bars = ProbabilityBars()
        bars.show(prediction)
        heading = widgets.HTML(f"{title}: {reading(prediction)}")
        pictures = widgets.HBox(
            [
                widgets.VBox(
                    [
                        widgets.Label("your picture"),
                        widgets.Image(value=original, format="png"),
                    ]
                ),
                widgets.VBox(
                    [
                        widgets.Label("what the model sees (28x28)"),
                        widgets.Image(value=preview_png(steps.centred), format="png"),
                    ]
                ),
                bars,
            ]
        )
        return widgets.VBox(
            [heading, pictures], layout=widgets.Layout(margin="0 0 12px 0")
        )


class DrawingPad(widgets.VBox):
    """Draw a digit with the mouse; the prediction follows as you draw (chapter 5).

    Clear starts again.
    """

    def __init__(
        self,
        predictor: Predictor | None = None,
        *,
        side: int = 280,
        pen_width: int = 20,
    ) -> None:
        self.predictor = predictor or default_predictor()
        self.pen_width = pen_width
        box = {"width": f"{side}px", "height": f"{side}px", "border": "1px solid #999"}
        self.canvas = Canvas(
            width=side, height=side, layout=widgets.Layout(grid_area="pad", **box)
        )
        # The canvas's strokes are messages to the browser, never saved with a
        # notebook: a page built from it shows a blank canvas. Under the canvas lies a
        # picture of the drawing, kept up to date: where no kernel paints the canvas,
        # the drawing that the saved answer came from shows through (issue 16).
        # (An Image has a margin of its own: it would sit 2 px off the canvas.)
        self.picture = widgets.Image(
            format="png", layout=widgets.Layout(grid_area="pad", margin="0", **box)
        )
        pad = widgets.GridBox(
            [self.picture, self.canvas],
            layout=widgets.Layout(
                grid_template_areas='"pad"',
                grid_template_columns=f"{side + 2}px",
                grid_template_rows=f"{side + 2}px",
            ),
        )
        # The canvas's pixels live in the browser;
        # this copy of the strokes is what gets predicted.
        self.drawing = Image.new("L", (side, side), 0)
        self.pen: tuple[float, float] | None = None
        self.last_prediction_time = 0.0
        self.status = widgets.HTML()
        self.preview = widgets.Image(format="png")
        self.bars = ProbabilityBars()
        self.clear_button = widgets.Button(description="Clear", icon="eraser")
        self.clear_button.on_click(self.clear)
        self.canvas.on_mouse_down(self.pen_down)
        self.canvas.on_mouse_move(self.pen_move)
        self.canvas.on_mouse_up(self.pen_up)
        self.canvas.on_mouse_out(self.pen_up)
        self.canvas.on_client_ready(self.redraw)
        super().__init__(
            [
                widgets.HBox(
                    [
                        widgets.VBox([pad, self.clear_button]),
                        widgets.VBox(
                            [
                                self.status,
                                widgets.Label("what the model sees (28x28)"),
                                self.preview,
                            ]
                        ),
                        self.bars,
                    ]
                ),
            ]
        )
        self.clear()

    def pen_down(self, x: float, y: float) -> None:
        """Start a stroke with a dot where the pen touches."""
        self.pen = (x, y)
        self.stroke_to(x, y)

    def pen_move(self, x: float, y: float) -> None:
        """Extend the stroke while the pen is down, predicting now and then."""
        if self.pen is None:
            return
        self.stroke_to(x, y)
        if time.monotonic() - self.last_prediction_time >= LIVE_INTERVAL_S:
            self.update_prediction()

    def pen_up(self, x: float, y: float) -> None:
        """End the stroke and predict."""
        if self.pen is None:
            return
        self.stroke_to(x, y)
        self.pen = None
        self.update_prediction()

    def stroke_to(self, x: float, y: float) -> None:
        """Draw a round-ended line from the pen to (x, y), and move the pen there.

        The line is drawn on the canvas and on the copy.
        """
        start = self.pen or (x, y)
        self.canvas.stroke_line(start[0], start[1], x, y)
        radius = self.pen_width / 2
        draw = ImageDraw.Draw(self.drawing)
        draw.line([start, (x, y)], fill=255, width=self.pen_width)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
        self.pen = (x, y)

    def draw_stroke(self, points: list[tuple[float, float]]) -> None:
        """Draw one stroke through canvas points, as the mouse would.

        For demonstrations and tests.
        """
        first, *rest = points
        self.pen_down(*first)
        for point in rest:
            self.pen_move(*point)
        self.pen_up(*points[-1])

    def update_prediction(self) -> None:
        """Predict the drawing and show the digit, 28x28 input and probabilities."""
        self.last_prediction_time = time.monotonic()
        self.picture.value = self.drawing_png()
        try:
            steps = preprocess_image(
                np.asarray(self.drawing), self.predictor.normalization, keep_steps=True
            )
        except InvalidImageError:
            self.show_empty()
            return
        prediction = self.predictor.predict_batch(steps.tensor)[0]
        self.status.value = reading(prediction)
        self.preview.value = preview_png(steps.centred)
        self.bars.show(prediction)

    def show_empty(self) -> None:
        """Show the invitation to draw, an empty 28x28 input and empty bars."""
        self.status.value = "draw a digit in the box"
        self.preview.value = preview_png(np.zeros((28, 28), dtype=np.uint8))
        self.bars.show(None)

    def clear(self, _button: widgets.Button | None = None) -> None:
        """Wipe the drawing, its copy and the prediction."""
        self.drawing.paste(0, (0, 0, *self.drawing.size))
        self.pen = None
        self.redraw()
        self.picture.value = self.drawing_png()
        self.show_empty()

    def drawing_png(self) -> bytes:
        """Return the drawing as the canvas shows it, black ink on white, as a PNG."""
        return png_bytes(Image.fromarray(255 - np.asarray(self.drawing)))

    def redraw(self) -> None:
        """Paint the canvas from the copy: white paper, black ink.

        A browser that connects starts blank.
        """
        paper = 255 - np.asarray(self.drawing)
        self.canvas.put_image_data(np.dstack([paper, paper, paper]), 0, 0)
        self.canvas.stroke_style = "black"
        self.canvas.line_width = self.pen_width
        self.canvas.line_cap = "round"
