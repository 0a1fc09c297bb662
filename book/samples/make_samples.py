"""Make chapter 5's sample pictures in book/samples, the folder of this script.

The pictures are digits drawn as pen strokes, and MNIST test digits on simulated photos
of paper. Deterministic (seeded); run `python book/samples/make_samples.py`.

Each file is named KIND-NNN-digit-D.png, D being the true digit.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mnist_tutorial import load_mnist

SAMPLES = Path(__file__).resolve().parent
SEED = 5
STROKES_PER_DIGIT = 10
PHOTOS_PER_DIGIT = 10
STROKE_CANVAS = 112
PHOTO_SIZE = (112, 84)
PALETTE_COLOURS = 16
SUPERSAMPLING = 4

# Each digit as pen strokes through control points in a unit box
# (x right, y down), a few variants.
TEMPLATES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [
        [
            [
                (0.5, 0.0),
                (0.15, 0.2),
                (0.1, 0.6),
                (0.35, 1.0),
                (0.7, 0.95),
                (0.9, 0.55),
                (0.8, 0.15),
                (0.5, 0.0),
                (0.4, 0.05),
            ]
        ]
    ],
    1: [[[(0.55, 0.0), (0.5, 1.0)]], [[(0.42, 0.1), (0.6, 0.0), (0.55, 1.0)]]],
    2: [
        [
            [
                (0.1, 0.25),
                (0.35, 0.02),
                (0.7, 0.02),
                (0.85, 0.25),
                (0.7, 0.5),
                (0.35, 0.75),
                (0.08, 1.0),
                (0.5, 0.97),
                (0.95, 0.98),
            ]
        ]
    ],
    3: [
        [
            [
                (0.1, 0.12),
                (0.45, 0.0),
                (0.8, 0.12),
                (0.78, 0.35),
                (0.4, 0.48),
                (0.8, 0.6),
                (0.85, 0.85),
                (0.5, 1.0),
                (0.1, 0.9),
            ]
        ]
    ],
    4: [
        [[(0.65, 0.0), (0.1, 0.65), (0.95, 0.65)], [(0.68, 0.25), (0.68, 1.0)]],
        [[(0.2, 0.0), (0.12, 0.55), (0.85, 0.55)], [(0.75, 0.0), (0.75, 1.0)]],
    ],
    5: [
        [
            [
                (0.85, 0.02),
                (0.25, 0.0),
                (0.2, 0.45),
                (0.55, 0.38),
                (0.85, 0.58),
                (0.82, 0.85),
                (0.5, 1.0),
                (0.12, 0.9),
            ]
        ]
    ],
    6: [
        [
            [
                (0.75, 0.0),
                (0.4, 0.2),
                (0.15, 0.6),
                (0.2, 0.9),
                (0.5, 1.0),
                (0.8, 0.85),
                (0.78, 0.6),
                (0.5, 0.5),
                (0.2, 0.65),
            ]
        ]
    ],
    7: [
        [[(0.08, 0.02), (0.92, 0.0), (0.4, 1.0)]],
        [[(0.08, 0.05), (0.92, 0.0), (0.45, 1.0)], [(0.3, 0.52), (0.75, 0.5)]],
    ],
    8: [
        [
            [
                (0.55, 0.48),
                (0.2, 0.3),
                (0.3, 0.03),
                (0.7, 0.03),
                (0.78, 0.28),
                (0.5, 0.5),
                (0.15, 0.75),
                (0.3, 1.0),
                (0.7, 1.0),
                (0.85, 0.75),
                (0.55, 0.48),
            ]
        ]
    ],
    9: [
        [
            [
                (0.8, 0.22),
                (0.55, 0.02),
                (0.25, 0.05),
                (0.15, 0.3),
                (0.35, 0.5),
                (0.7, 0.42),
                (0.8, 0.22),
                (0.75, 0.6),
                (0.7, 1.0),
            ]
        ]
    ],
}


def catmull_rom(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """Return a smooth curve through the points, as a pen would draw it.

    The curve is a Catmull-Rom spline.
    """
    if len(points) < 3:
        return points
    padded = np.vstack([points[0], points, points[-1]])
    curve = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1 : i + 3]
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            curve.append(
                0.5
                * (
                    2 * p1
                    + (p2 - p0) * t
                    + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                    + (3 * p1 - p0 - 3 * p2 + p3) * t**3
                )
            )
    curve.append(points[-1])
    return np.array(curve)


def stroke_coverage(digit: int, rng: np.random.Generator) -> np.ndarray:
    """Return the pen's coverage (0 to 1) of each pixel for one drawn digit.

    The digit is jittered, slanted, off-centre, and of random size and width.
    """
    strokes = TEMPLATES[digit][rng.integers(len(TEMPLATES[digit]))]
    height = rng.uniform(0.45, 0.85) * STROKE_CANVAS
    width = height * rng.uniform(0.55, 0.8)
    slant = rng.uniform(-0.25, 0.1)
    angle = math.radians(rng.uniform(-8, 8))
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    left = rng.uniform(0.05 * STROKE_CANVAS, 0.95 * STROKE_CANVAS - width)
    top = rng.uniform(0.05 * STROKE_CANVAS, 0.95 * STROKE_CANVAS - height)
    pen = height * rng.uniform(0.06, 0.14) * SUPERSAMPLING
    big = STROKE_CANVAS * SUPERSAMPLING
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        points = np.array(stroke) + rng.normal(0, 0.03, (len(stroke), 2))
        points[:, 0] += slant * (0.5 - points[:, 1])
        points = (points - 0.5) @ rotation.T + 0.5
        path = [
            tuple(p)
            for p in (catmull_rom(points) * [width, height] + [left, top])
            * SUPERSAMPLING
        ]
        draw.line(path, fill=255, width=round(pen), joint="curve")
        for x, y in (path[0], path[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    small = canvas.resize((STROKE_CANVAS, STROKE_CANVAS), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float32) / 255


def stroke_picture(coverage: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Return pen strokes as a file would hold them.

    On coloured paper (palette), in grey, or on a transparent layer.
    """
    kind = rng.choice(["palette", "grey", "transparent"], p=[0.6, 0.2, 0.2])
    inverted = rng.random() < 0.25
    paper = rng.uniform(20, 60, 3) if inverted else rng.uniform(215, 255, 3)
    ink = rng.uniform(200, 255, 3) if inverted else rng.uniform(0, 70, 3)
    if kind == "transparent":
        rgba = np.dstack([np.broadcast_to(ink, (*coverage.shape, 3)), coverage * 255])
        return Image.fromarray(rgba.round().astype(np.uint8), "RGBA")
    rgb = paper * (1 - coverage[:, :, None]) + ink * coverage[:, :, None]
    picture = Image.fromarray(rgb.round().astype(np.uint8))
    return (
        picture.convert("L")
        if kind == "grey"
        else picture.quantize(PALETTE_COLOURS, dither=Image.Dither.NONE)
    )


def photo_of_digit(digit_image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Return an MNIST digit as if written on paper and photographed.

    It is off-centre, with uneven light, noise and a tint.
    """
    width, height = PHOTO_SIZE
    size = int(rng.uniform(0.45, 0.8) * height)
    coverage = (
        np.asarray(
            Image.fromarray(digit_image).resize((size, size), Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        / 255
    )
    ink = np.zeros((height, width), dtype=np.float32)
    top = rng.integers(0, height - size + 1)
    left = rng.integers(0, width - size + 1)
    ink[top : top + size, left : left + size] = np.clip(coverage, 0, 1)
    rows, columns = np.mgrid[0:height, 0:width] / max(width, height)
    direction = rng.uniform(0, 2 * math.pi)
    light = (
        1
        + rng.uniform(0.1, 0.35)
        * (np.cos(direction) * (columns - 0.5) + np.sin(direction) * (rows - 0.5))
        * 2
    )
    light -= rng.uniform(0.0, 0.3) * (
        (rows - rng.uniform(0.2, 0.8)) ** 2 + (columns - rng.uniform(0.2, 0.8)) ** 2
    )
    inverted = rng.random() < 0.2
    if inverted:
        brightness = rng.uniform(0.1, 0.25) * light + ink * rng.uniform(0.5, 0.75)
    else:
        brightness = (
            rng.uniform(0.7, 0.92) * light * (1 - ink * rng.uniform(0.55, 0.85))
        )
    tint = np.array(
        [1.0, rng.uniform(0.88, 1.0), rng.uniform(0.7, 0.95)], dtype=np.float32
    )
    rgb = brightness[:, :, None] * tint + rng.normal(
        0, rng.uniform(0.005, 0.02), (height, width, 1)
    )
    photo = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    blurred = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    # A small palette keeps the book light;
    # it also imitates the banding of a heavily compressed photo.
    return blurred.quantize(PALETTE_COLOURS, dither=Image.Dither.NONE)


def main() -> None:
    """Write the sample pictures to the folder, replacing only the previous ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=SAMPLES,
        help=f"folder to write (default: {SAMPLES})",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    test = load_mnist(download=False).test
    args.out.mkdir(parents=True, exist_ok=True)
    for previous in [
        *args.out.glob("stroke-*-digit-*.png"),
        *args.out.glob("photo-*-digit-*.png"),
    ]:
        previous.unlink()
    for number in range(10 * STROKES_PER_DIGIT):
        digit = number % 10
        picture = stroke_picture(stroke_coverage(digit, rng), rng)
        picture.save(args.out / f"stroke-{number:03d}-digit-{digit}.png", optimize=True)
    by_digit = {
        digit: np.flatnonzero(test.labels.numpy() == digit) for digit in range(10)
    }
    for number in range(10 * PHOTOS_PER_DIGIT):
        digit = number % 10
        index = rng.choice(by_digit[digit])
        photo = photo_of_digit(test.images[index].numpy(), rng)
        photo.save(args.out / f"photo-{number:03d}-digit-{digit}.png", optimize=True)
    total = sum(path.stat().st_size for path in args.out.glob("*-digit-*.png"))
    print(
        f"wrote {10 * (STROKES_PER_DIGIT + PHOTOS_PER_DIGIT)} pictures, "
        f"{total / 1024:.0f} KB, to {args.out}"
    )


if __name__ == "__main__":
    main()
