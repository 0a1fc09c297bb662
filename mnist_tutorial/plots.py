"""The book's figures and a notebook view of the code.

Every plotting function returns a matplotlib Figure that is already closed for pyplot,
so a notebook cell that ends with the call shows it exactly once, and a script can save
it with ``fig.savefig``. The module needs the book's extra libraries (matplotlib,
seaborn, pandas and IPython); the rest of the package does not import it.
"""

from __future__ import annotations

import inspect
import os
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Code
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image
from torch import nn

from .data import denormalize
from .measures import ImageBatch
from .model import look_inside
from .predict import MNIST_NORMALIZATION, ImageSource, open_image, preprocess_image
from .records import History

if TYPE_CHECKING:
    # Only for annotations: RcKeyType is recent, and the book extra pins no matplotlib.
    from matplotlib.typing import RcKeyType

Labels = np.ndarray | torch.Tensor | Sequence[int]

#: One colour per digit (matplotlib's tab10), the same in every chapter.
DIGIT_COLORS: tuple[tuple[float, float, float], ...] = tuple(
    to_rgb(plt.get_cmap("tab10")(digit)) for digit in range(10)
)
#: Ink is drawn dark on white: easier to read, and how the digits were written.
INK_CMAP = "gray_r"
WRONG_COLOR = "#c0392b"
#: The widest figure, in inches at BOOK_STYLE's 100 dpi. The book's text column is about
#: 757 px wide on a 1366 px screen; a notebook saves a figure trimmed to its drawing
#: plus 0.1 in each side: a 7.3 in figure is at most about 750 px, shown at its
#: own size, never shrunk (issue 16). Grids of panels shrink their panels to fit.
MAX_FIGURE_WIDTH_IN = 7.3
#: The smallest text in any figure, in points: 9 pt at 100 dpi is 12.5 px on the screen.
MIN_FONT_PT = 9
#: The book's look, applied by use_book_style.
BOOK_STYLE: dict[RcKeyType, object] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
}


class SourceCode(Code):
    """Code shown as a Markdown code block.

    Jupyter and the built book then highlight it in their own style.
    """

    def _repr_markdown_(self) -> str:
        """Return the code in a fence longer than any run of backticks inside it."""
        longest = max((len(run) for run in re.findall(r"`+", self.data)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"{fence}{self.language or ''}\n{self.data.rstrip()}\n{fence}"

    def _repr_html_(self) -> None:
        """Return None: IPython's HTML for Code restyles the whole page.

        Only the Markdown is offered.
        """
        return None

    def _repr_latex_(self) -> None:
        """Return None: the Markdown already renders everywhere.

        Leaving LaTeX out also keeps notebooks small.
        """
        return None


def show_source(obj: ModuleType | type | Callable[..., object]) -> Code:
    """Return the source of a package function, class or module as highlighted code.

    Introduced in chapter 1.
    """
    source = textwrap.dedent(inspect.getsource(obj))
    # IPython's Code.__init__ has no annotations, so mypy counts the call as untyped.
    return SourceCode(source, language="python")  # type: ignore[no-untyped-call]


def use_book_style() -> None:
    """Set matplotlib's defaults to the book's look for this session; returns None.

    Introduced in chapter 1.
    """
    plt.rcParams.update(BOOK_STYLE)


def _as_numpy(values: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    """Return a tensor, array or sequence as a NumPy array on the CPU."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _new_figure(
    rows: int = 1, columns: int = 1, **kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """Return a constrained-layout figure and its axes as a 2-D array.

    The figure is closed for pyplot.
    """
    figure, axes = plt.subplots(
        rows, columns, squeeze=False, layout="constrained", **kwargs
    )
    plt.close(figure)
    return figure, axes


def _panel_size(columns: int, wanted: float, *, extra: float = 0.0) -> float:
    """Return the panel size of a grid of ``columns`` panels that fits the column.

    ``wanted`` is the size asked for, in inches; ``extra`` the width beside the panels
    (a colour bar). Panels shrink so that the figure is at most MAX_FIGURE_WIDTH_IN.
    """
    return min(wanted, (MAX_FIGURE_WIDTH_IN - extra) / max(1, columns))


# ----- Images -------------------------------------------------------------------------


def plot_digit_grid(
    images: ImageBatch,
    labels: Labels,
    predictions: Labels | None = None,
    *,
    captions: Sequence[str] | None = None,
    columns: int = 5,
    title: str | None = None,
    panel_size: float = 1.3,
) -> Figure:
    """Return a grid of digits captioned with their label (chapter 1).

    Where a prediction is wrong, the caption reads "label → prediction" in red.
    ``images`` are (N, 28, 28) or (N, 1, 28, 28), uint8 in [0, 255] or floats (each
    scaled to its own range). ``captions`` replaces the default captions; wrong
    predictions still turn them red.
    """
    pixels = _as_numpy(images)
    pixels = pixels.reshape(len(pixels), *pixels.shape[-2:])
    truth = _as_numpy(labels)
    guessed = _as_numpy(predictions) if predictions is not None else None
    if len(pixels) != len(truth) or (
        guessed is not None and len(guessed) != len(truth)
    ):
        sizes = [len(pixels), len(truth)] + ([] if guessed is None else [len(guessed)])
        raise ValueError(f"images, labels (and predictions) differ in length: {sizes}")
    count = len(pixels)
    rows = max(1, -(-count // columns))
    panel_size = _panel_size(columns, panel_size)
    figure, axes = _new_figure(
        rows, columns, figsize=(columns * panel_size, rows * panel_size + 0.5)
    )
    value_range = {"vmin": 0, "vmax": 255} if pixels.dtype == np.uint8 else {}
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index >= count:
            continue
        ax.imshow(pixels[index], cmap=INK_CMAP, interpolation="nearest", **value_range)
        wrong = guessed is not None and guessed[index] != truth[index]
        if captions is not None:
            caption = captions[index]
        elif guessed is not None:
            caption = f"{truth[index]} → {guessed[index]}"
        else:
            caption = str(truth[index])
        ax.set_title(
            caption,
            fontsize=MIN_FONT_PT,
            fontweight="normal",
            color=WRONG_COLOR if wrong else "black",
            pad=2,
        )
    if title:
        figure.suptitle(title)
    return figure


def plot_weight_images(
    weights: ImageBatch,
    *,
    captions: Sequence[str] | None = None,
    columns: int = 8,
    value_label: str = "weight",
    title: str = "What the first layer looks for",
) -> Figure:
    """Return the rows of a (units, 784) weight matrix as 28x28 images (chapter 7).

    Positive weights are drawn red, negative ones blue.
    """
    values = _as_numpy(weights).astype(np.float64)
    values = values.reshape(len(values), 28, 28)
    rows = max(1, -(-len(values) // columns))
    panel_size = _panel_size(columns, 1.2, extra=0.8)
    figure, axes = _new_figure(
        rows, columns, figsize=(columns * panel_size + 0.8, rows * panel_size + 0.5)
    )
    limit = np.abs(values).max()
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index < len(values):
            shown = ax.imshow(
                values[index],
                cmap="RdBu_r",
                vmin=-limit,
                vmax=limit,
                interpolation="nearest",
            )
            caption = captions[index] if captions is not None else f"unit {index}"
            ax.set_title(caption, fontsize=MIN_FONT_PT, fontweight="normal", pad=2)
    figure.colorbar(shown, ax=axes[:, -1], label=value_label, shrink=0.8)
    figure.suptitle(title)
    return figure


# ----- Distributions ------------------------------------------------------------------


def plot_class_distribution(
    labels_by_split: Mapping[str, Labels], *, title: str = "How many of each digit?"
) -> Figure:
    """Return grouped bars of each digit's share of every split (chapter 1).

    The 10 % of a balanced set is marked.
    """
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 3.6))
    ax = axes[0, 0]
    width = 0.8 / len(labels_by_split)
    digits = np.arange(10)
    for position, (name, labels) in enumerate(labels_by_split.items()):
        counts = np.bincount(_as_numpy(labels), minlength=10)
        share = 100 * counts / counts.sum()
        offset = (position - (len(labels_by_split) - 1) / 2) * width
        ax.bar(
            digits + offset,
            share,
            width,
            label=f"{name} ({counts.sum():,} images)",
            color=f"C{position}",
        )
    ax.axhline(
        10, color="0.3", linestyle="--", linewidth=1, label="perfectly balanced (10 %)"
    )
    ax.set_xticks(digits)
    ax.set_xlabel("digit")
    ax.set_ylabel("share of the split (%)")
    ax.set_ylim(0, 15)
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper center", ncols=2)
    ax.set_title(title)
    return figure


def plot_intensity_histogram(
    images: ImageBatch, *, title: str = "Pixel intensities: mostly background"
) -> Figure:
    """Return a histogram of all pixel values (0-255) with log counts (chapter 1)."""
    pixels = _as_numpy(images).reshape(-1)
    counts = np.bincount(pixels.astype(np.int64), minlength=256)
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 3.2))
    ax = axes[0, 0]
    ax.bar(np.arange(256), counts, width=1.0, color="C0")
    ax.set_yscale("log")
    ax.set_xlim(-2, 257)
    ax.set_xlabel("pixel intensity (0 = background, 255 = full ink)")
    ax.set_ylabel("number of pixels (log scale)")
    share_zero, share_full = counts[0] / counts.sum(), counts[-1] / counts.sum()
    ax.annotate(
        f"{share_zero:.0%} of pixels are exactly 0",
        xy=(0, counts[0]),
        xytext=(25, counts[0] / 3),
        arrowprops={"arrowstyle": "->", "color": "0.3"},
    )
    ax.annotate(
        f"{share_full:.1%} are 255",
        xy=(255, counts[-1]),
        xytext=(185, counts[-1] * 4),
        arrowprops={"arrowstyle": "->", "color": "0.3"},
    )
    ax.set_title(title)
    return figure


def plot_measure_by_digit(
    values: Sequence[float] | np.ndarray | torch.Tensor,
    labels: Labels,
    *,
    ylabel: str,
    title: str,
) -> Figure:
    """Return one box plot per digit of a per-image measure (chapter 1).

    The measure is ink area, slant, confidence...
    """
    measure = _as_numpy(values).astype(np.float64)
    truth = _as_numpy(labels)
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 3.2))
    ax = axes[0, 0]
    boxes = ax.boxplot(
        [measure[truth == digit] for digit in range(10)],
        positions=range(10),
        widths=0.6,
        patch_artist=True,
        showfliers=False,
        medianprops={"color": "black"},
    )
    for digit, box in enumerate(boxes["boxes"]):
        box.set_facecolor(DIGIT_COLORS[digit])
        box.set_alpha(0.75)
    ax.set_xlabel("digit")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    ax.set_title(title)
    return figure


def plot_embedding(
    embeddings: Mapping[str, np.ndarray],
    labels: Labels,
    *,
    axis_labels: Mapping[str, tuple[str, str]] | None = None,
    title: str | None = None,
) -> Figure:
    """Return one scatter panel per 2-D embedding, coloured by digit (chapter 1).

    Each digit's median is labelled.
    """
    truth = _as_numpy(labels)
    panels = len(embeddings)
    size = _panel_size(panels, 5.0)
    figure, axes = _new_figure(1, panels, figsize=(size * panels, size + 0.9))
    for ax, (name, points) in zip(axes.flat, embeddings.items(), strict=True):
        for digit in range(10):
            chosen = points[truth == digit]
            ax.scatter(
                chosen[:, 0],
                chosen[:, 1],
                s=6,
                alpha=0.6,
                color=DIGIT_COLORS[digit],
                label=str(digit),
                linewidths=0,
            )
            centre = np.median(chosen, axis=0)
            ax.text(
                *centre,
                str(digit),
                fontsize=13,
                fontweight="bold",
                ha="center",
                va="center",
                color=DIGIT_COLORS[digit],
                bbox={
                    "boxstyle": "circle,pad=0.2",
                    "facecolor": "white",
                    "edgecolor": DIGIT_COLORS[digit],
                    "alpha": 0.85,
                },
            )
        x_label, y_label = (axis_labels or {}).get(name, ("dimension 1", "dimension 2"))
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(name)
        ax.grid(False)
    # Under the panels, in one row: beside them it would take a panel's width.
    handles, names = axes[0, 0].get_legend_handles_labels()
    figure.legend(
        handles,
        names,
        title="digit",
        markerscale=2.5,
        loc="outside lower center",
        ncols=len(names),
        columnspacing=1.0,
        handletextpad=0.2,
    )
    if title:
        figure.suptitle(title)
    return figure


def plot_learning_curves(
    train_loss: Sequence[float],
    accuracy: Sequence[float],
    *,
    accuracy_label: str = "validation accuracy",
    title: str = "Training the network",
) -> Figure:
    """Return two panels over epochs: the training loss and an accuracy (chapter 7).

    The loss is the epoch's mean; the accuracy is in percent.
    """
    epochs = np.arange(1, len(train_loss) + 1)
    figure, axes = _new_figure(1, 2, figsize=(MAX_FIGURE_WIDTH_IN, 3.2))
    loss_ax, accuracy_ax = axes.flat
    loss_ax.plot(epochs, train_loss, marker="o", color="C0")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy (nats per image)")
    loss_ax.set_title("training loss")
    accuracy_ax.plot(epochs, 100 * np.asarray(accuracy), marker="o", color="C2")
    accuracy_ax.set_xlabel("epoch")
    accuracy_ax.set_ylabel("accuracy (%)")
    accuracy_ax.set_title(accuracy_label)
    for ax in axes.flat:
        ax.set_xticks(epochs)
    figure.suptitle(title)
    return figure


# ----- Convolutions (chapter 2) -------------------------------------------------------


def plot_feature_maps(
    maps: ImageBatch,
    *,
    image: ImageBatch | None = None,
    captions: Sequence[str] | None = None,
    columns: int = 8,
    value_label: str = "activation",
    title: str = "Feature maps",
    panel_size: float = 1.3,
) -> Figure:
    """Return a grid of 2-D maps (C, H, W) on one shared scale (chapter 2).

    An optional input image comes first. Maps with negative values are drawn red
    positive, blue negative, around zero; maps that are never negative (after a ReLU) in
    a sequential colour map from zero.
    """
    values = _as_numpy(maps).astype(np.float64)
    values = values.reshape(-1, *values.shape[-2:])
    panels = len(values) + (image is not None)
    rows = max(1, -(-panels // columns))
    panel_size = _panel_size(columns, panel_size, extra=0.9)
    figure, axes = _new_figure(
        rows, columns, figsize=(columns * panel_size + 0.9, rows * panel_size + 0.5)
    )
    signed = values.min() < 0
    limit = np.abs(values).max() or 1.0
    scale = (
        {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
        if signed
        else {"cmap": "magma", "vmin": 0, "vmax": limit}
    )
    for ax in axes.flat:
        ax.set_axis_off()
    flat = list(axes.flat)
    if image is not None:
        pixels = _as_numpy(image)
        flat[0].imshow(
            pixels.reshape(pixels.shape[-2:]), cmap=INK_CMAP, interpolation="nearest"
        )
        flat[0].set_title("input", fontsize=MIN_FONT_PT, fontweight="normal", pad=2)
        flat = flat[1:]
    # The grid may have more panels than there are maps: the extra ones stay blank.
    for index, (ax, values_of_map) in enumerate(zip(flat, values, strict=False)):
        shown = ax.imshow(values_of_map, interpolation="nearest", **scale)
        ax.set_title(
            captions[index] if captions is not None else f"map {index}",
            fontsize=MIN_FONT_PT,
            fontweight="normal",
            pad=2,
        )
    figure.colorbar(shown, ax=axes[:, -1], label=value_label, shrink=0.8)
    figure.suptitle(title)
    return figure


# ----- Training (chapter 3) -----------------------------------------------------------


def plot_training_history(
    history: History, *, title: str = "Training, epoch by epoch"
) -> Figure:
    """Return four panels over epochs of a training history (chapter 3).

    Loss and accuracy (training, validation), learning rate and gradient norm. A dashed
    line marks the epoch with the lowest validation loss, whose weights ``fit`` keeps.
    """
    epochs = np.asarray(history.column("epoch"))
    figure, axes = _new_figure(2, 2, figsize=(MAX_FIGURE_WIDTH_IN, 6.0))
    loss_ax, accuracy_ax, lr_ax, grad_ax = axes.flat
    for split, color in (("train", "C0"), ("val", "C1")):
        name = "training" if split == "train" else "validation"
        loss_ax.plot(
            epochs, history.column(f"{split}_loss"), marker="o", color=color, label=name
        )
        accuracy_ax.plot(
            epochs,
            100 * np.asarray(history.column(f"{split}_accuracy")),
            marker="o",
            color=color,
            label=name,
        )
    for ax in (loss_ax, accuracy_ax):
        ax.axvline(
            history.best_epoch.epoch,
            color="0.4",
            linestyle="--",
            linewidth=1,
            label="lowest validation loss",
        )
        ax.legend()
    loss_ax.set_ylabel("cross-entropy (nats/image)")
    loss_ax.set_title("loss")
    accuracy_ax.set_ylabel("accuracy (%)")
    accuracy_ax.set_title("accuracy")
    lr_ax.plot(epochs, history.column("lr"), marker="o", color="C2")
    lr_ax.set_ylim(bottom=0, top=1.15 * max(history.column("lr")))
    lr_ax.set_ylabel("learning rate (last step)")
    lr_ax.set_title("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    grad_ax.plot(epochs, history.column("grad_norm"), marker="o", color="C3")
    grad_ax.set_ylim(bottom=0)
    grad_ax.set_ylabel("gradient norm (epoch mean)")
    grad_ax.set_title("gradient norm")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::2])
    figure.suptitle(title)
    return figure


def plot_learning_rate_schedules(
    schedules: Mapping[str, Sequence[float]],
    *,
    steps_per_epoch: int,
    title: str = "Learning-rate schedules",
) -> Figure:
    """Return one line per schedule: the learning rate at every step (chapter 3).

    Every optimisation step is plotted, against epochs.
    """
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 3.2))
    ax = axes[0, 0]
    for position, (name, rates) in enumerate(schedules.items()):
        ax.plot(
            np.arange(len(rates)) / steps_per_epoch,
            rates,
            color=f"C{position}",
            label=name,
            linewidth=2,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(title)
    return figure


# ----- Mistakes (chapter 4) -----------------------------------------------------------


def plot_confusion_matrix(
    matrix: np.ndarray, *, title: str = "Confusion matrix"
) -> Figure:
    """Return a heatmap of a 10x10 confusion matrix coloured by mistakes (chapter 4).

    The diagonal shows the right counts in grey.
    """
    counts = np.asarray(matrix)
    mistakes = counts.astype(np.float64)
    np.fill_diagonal(mistakes, np.nan)
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 6.2))
    ax = axes[0, 0]
    # The right answers outnumber the mistakes a hundredfold: colouring them too would
    # leave every mistake the same pale shade.
    sns.heatmap(
        mistakes,
        annot=True,
        fmt=".0f",
        cmap="Reds",
        linewidths=0.5,
        linecolor="white",
        square=True,
        cbar_kws={"label": "number of test images (mistakes only)"},
        ax=ax,
    )
    for digit in range(len(counts)):
        ax.add_patch(
            Rectangle((digit, digit), 1, 1, facecolor="0.92", edgecolor="white")
        )
        ax.text(
            digit + 0.5,
            digit + 0.5,
            f"{counts[digit, digit]:,}",
            ha="center",
            va="center",
            fontsize=MIN_FONT_PT,
            color="0.35",
        )
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.grid(False)
    ax.set_title(title)
    return figure


def plot_per_class_accuracy(
    accuracy: Sequence[float] | np.ndarray, *, title: str = "Accuracy per digit"
) -> Figure:
    """Return one labelled bar per digit of its accuracy in percent (chapter 4).

    The axis is zoomed, and its label says so.
    """
    percent = 100 * np.asarray(accuracy, dtype=np.float64)
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 3.2))
    ax = axes[0, 0]
    bars = ax.bar(
        np.arange(len(percent)), percent, color=DIGIT_COLORS[: len(percent)], width=0.7
    )
    ax.bar_label(
        bars,
        labels=[f"{value:.1f}" for value in percent],
        padding=2,
        fontsize=MIN_FONT_PT,
    )
    overall_floor = np.floor(percent.min() - 0.5)
    ax.set_ylim(overall_floor, 100.3)
    ax.set_xticks(np.arange(len(percent)))
    ax.set_xlabel("true digit")
    ax.set_ylabel(f"accuracy (%, axis from {overall_floor:.0f})")
    ax.grid(axis="x", visible=False)
    ax.set_title(title)
    return figure


def plot_confidence_histograms(
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    title: str = "How confident is the model?",
) -> Figure:
    """Return two histograms of the top probability (chapter 4).

    One is for right predictions, the other for wrong ones.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    bins = np.linspace(0, 1, 41)
    # One above the other, sharing the confidence axis: side by side, at the column's
    # width, their titles and labels would not fit.
    figure, axes = _new_figure(2, 1, figsize=(MAX_FIGURE_WIDTH_IN, 5.0), sharex=True)
    for ax, mask, name, color in (
        (axes[0, 0], correct, "right", "C2"),
        (axes[1, 0], ~correct, "wrong", WRONG_COLOR),
    ):
        ax.hist(
            confidence[mask], bins=bins, color=color, edgecolor="white", linewidth=0.5
        )
        # Thousands of right predictions need a log axis;
        # a few dozen wrong ones read better as counts.
        if mask.sum() > 200:
            ax.set_yscale("log")
            ax.set_ylabel("number of images (log scale)")
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("number of images")
        ax.set_title(
            f"{mask.sum():,} {name} predictions "
            f"(median {np.median(confidence[mask]):.2f})"
        )
    axes[1, 0].set_xlabel("confidence (probability of the predicted digit)")
    figure.suptitle(title)
    return figure


def plot_reliability(
    mean_confidence: np.ndarray,
    mean_accuracy: np.ndarray,
    counts: np.ndarray,
    *,
    title: str = "Reliability diagram",
) -> Figure:
    """Return a reliability diagram over a bar chart of the bins' sizes (chapter 4).

    The diagram plots accuracy against confidence per bin, and the diagonal.
    """
    counts = np.asarray(counts)
    used = counts > 0
    bins = len(counts)
    edges = np.linspace(0, 1, bins + 1)
    figure, axes = _new_figure(
        2, 1, figsize=(5.8, 6.4), sharex=True, height_ratios=(3, 1)
    )
    top, bottom = axes[:, 0]
    top.plot(
        [0, 1], [0, 100], linestyle="--", color="0.4", label="perfectly calibrated"
    )
    top.plot(
        mean_confidence[used],
        100 * mean_accuracy[used],
        marker="o",
        color="C0",
        label="the model",
    )
    top.set_ylabel("accuracy in the bin (%)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 101)
    top.legend(loc="upper left")
    top.set_title(title)
    bottom.bar(
        edges[:-1], counts, width=1 / bins, align="edge", color="C0", edgecolor="white"
    )
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (probability of the predicted digit)")
    bottom.set_ylabel("images (log)")
    return figure


# ----- Your digits (chapter 5) -------------------------------------------------------

#: The stages of preprocess_image that plot_preprocessing_steps draws, with captions.
PREPROCESSING_STEPS: tuple[tuple[str, str], ...] = (
    ("grey", "grey copy"),
    ("ink", "ink map"),
    ("cropped", "cropped"),
    ("scaled", "scaled to 20 px"),
    ("centred", "centred 28x28"),
)


def _draw_picture(ax: Axes, picture: Image.Image) -> None:
    """Draw a picture as it looks, over a checkerboard where it is transparent.

    Image editors show transparency that way; strokes on a transparent layer would
    otherwise vanish against the figure's white.
    """
    squares = (np.indices((picture.height, picture.width)) // 8).sum(0) % 2
    ax.imshow(np.repeat((200 + 40 * squares)[:, :, None], 3, axis=2).astype(np.uint8))
    ax.imshow(picture.convert("RGBA"), interpolation="nearest")
    ax.grid(False)


def plot_sample_pictures(
    paths: Sequence[str | os.PathLike[str]],
    *,
    columns: int = 5,
    title: str = "Sample pictures",
) -> Figure:
    """Return picture files as they look, with name, mode and size (chapter 5).

    Transparent pixels are drawn over a checkerboard.
    """
    rows = max(1, -(-len(paths) // columns))
    width = _panel_size(columns, 1.8)
    figure, axes = _new_figure(
        rows, columns, figsize=(width * columns, (width + 0.4) * rows + 0.4)
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, path in zip(axes.flat, map(Path, paths), strict=False):
        with Image.open(path) as picture:
            _draw_picture(ax, picture)
            size = f"{picture.mode}, {picture.width}x{picture.height} px"
        # The name without its extension: five names in a row of the column would touch.
        ax.set_title(f"{path.stem}\n{size}", fontsize=MIN_FONT_PT, fontweight="normal")
    figure.suptitle(title)
    return figure


def plot_paper_and_ink(
    grey: np.ndarray | Image.Image,
    paper: np.ndarray,
    ink: np.ndarray,
    *,
    title: str = "The paper fitted under the ink, and the ink left",
) -> Figure:
    """Return a grey picture, the paper fitted to it and its ink map (chapter 5).

    ``grey`` and ``paper`` are brightness (0-255), drawn as they look; ``ink`` is the
    ink map (0-255), drawn as the book draws ink, dark on white.
    """
    figure, axes = _new_figure(1, 3, figsize=(MAX_FIGURE_WIDTH_IN, 2.5))
    grey_ax, paper_ax, ink_ax = axes.flat
    grey_ax.imshow(np.asarray(grey), cmap="gray", vmin=0, vmax=255)
    brightness = paper_ax.imshow(paper, cmap="gray", vmin=0, vmax=255)
    figure.colorbar(brightness, ax=axes[0, :2], label="brightness (0-255)", shrink=0.9)
    shown = ink_ax.imshow(ink, cmap=INK_CMAP, vmin=0, vmax=255)
    figure.colorbar(shown, ax=ink_ax, label="ink (0-255)", shrink=0.9)
    names = ("the grey copy", "the fitted paper", "the ink map")
    for ax, name in zip(axes.flat, names, strict=True):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("x (pixels)")
        ax.grid(False)
    # The three share their pixel grid: one y label says it for all.
    grey_ax.set_ylabel("y (pixels)")
    figure.suptitle(title)
    return figure


def plot_preprocessing_steps(
    pictures: Mapping[str, ImageSource],
    *,
    title: str = "MNIST-style preprocessing, step by step",
) -> Figure:
    """Return one row per picture: the picture, then each step of preprocessing it.

    For chapter 5: every stage of ``preprocess_image``, captioned with its size. The
    picture and its grey copy are drawn as they look, the later stages as ink, dark on
    white. ``pictures`` maps a caption to anything ``preprocess_image`` reads.
    """
    figure, axes = _new_figure(
        len(pictures),
        len(PREPROCESSING_STEPS) + 1,
        figsize=(MAX_FIGURE_WIDTH_IN, 1.65 * len(pictures) + 0.4),
    )
    for row, (caption, source) in zip(axes, pictures.items(), strict=True):
        picture = open_image(source)
        steps = preprocess_image(picture, keep_steps=True)
        _draw_picture(row[0], picture)
        size = f"{picture.width}x{picture.height} px"
        row[0].set_title(
            f"{caption}\n{size}", fontsize=MIN_FONT_PT, fontweight="normal"
        )
        for ax, (stage, name) in zip(row[1:], PREPROCESSING_STEPS, strict=True):
            values = getattr(steps, stage)
            ax.imshow(
                values,
                cmap="gray" if stage == "grey" else INK_CMAP,
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
            size = f"{values.shape[1]}x{values.shape[0]} px"
            ax.set_title(f"{name}\n{size}", fontsize=MIN_FONT_PT, fontweight="normal")
        for ax in row:
            ax.set_axis_off()
    figure.suptitle(title)
    return figure


def plot_accuracy_by_preparation(
    correct: Mapping[str, np.ndarray],
    groups: Mapping[str, np.ndarray],
    *,
    title: str = "Accuracy by preparation",
) -> Figure:
    """Return grouped bars of each preparation's accuracy on groups of pictures.

    For chapter 5. ``correct`` maps a way of preparing the pictures to whether each one
    was read right; ``groups`` maps a group's name to which pictures it holds. A dotted
    line marks chance, 10 %.
    """
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 3.4))
    ax = axes[0, 0]
    positions = np.arange(len(correct))
    width = 0.8 / len(groups)
    for index, (group, members) in enumerate(groups.items()):
        chosen = np.asarray(members, dtype=bool)
        percent = [100 * np.asarray(right)[chosen].mean() for right in correct.values()]
        bars = ax.bar(
            positions + (index - (len(groups) - 1) / 2) * width,
            percent,
            width,
            color=f"C{index}",
            label=f"{group} ({chosen.sum()})",
        )
        ax.bar_label(
            bars, labels=[f"{value:.0f}" for value in percent], fontsize=MIN_FONT_PT
        )
    ax.axhline(10, color="0.4", linestyle=":", linewidth=1, label="chance (10 %)")
    ax.set_xticks(positions, list(correct))
    ax.set_xlabel("how the pictures were prepared")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper left")
    ax.set_title(title)
    return figure


def plot_probabilities(
    probabilities: Sequence[float] | np.ndarray,
    *,
    title: str = "The model's probabilities",
) -> Figure:
    """Return one bar per digit of its probability in percent (chapter 5).

    The most probable digit is green and labelled with its probability.
    """
    percent = 100 * np.asarray(probabilities, dtype=np.float64)
    top = int(percent.argmax())
    figure, axes = _new_figure(figsize=(6, 2.8))
    ax = axes[0, 0]
    digits = np.arange(len(percent))
    bars = ax.bar(
        digits, percent, color=np.where(digits == top, "tab:green", "tab:grey")
    )
    ax.bar_label(
        bars,
        labels=np.where(digits == top, f"{percent[top]:.1f} %", ""),
        fontsize=MIN_FONT_PT,
    )
    ax.set_xticks(digits)
    ax.set_xlabel("digit")
    ax.set_ylabel("probability (%)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="x", visible=False)
    ax.set_title(title)
    return figure


def plot_inside(
    model: nn.Module,
    picture: ImageSource | torch.Tensor,
    *,
    normalization: tuple[float, float] = MNIST_NORMALIZATION,
    temperature: float = 1.0,
    digit: int | None = None,
    channels: int = 8,
    title: str = "Inside the network",
) -> Figure:
    """Return a picture's input, evidence map, probabilities and maps (chapter 5).

    The live demo's views, from ``model.look_inside``: the 28x28 input; where the
    evidence for ``digit`` (None: the most probable) lies, each 7x7 position's
    contribution to its logit, red for and blue against, under the ink; the ten
    probabilities; and for each conv block the ``channels`` maps most active on this
    picture, on one scale per block. ``picture`` is anything ``preprocess_image``
    reads, or a normalised (1, 1, 28, 28) batch. The probabilities are the softmax of
    the logits divided by ``temperature``, as a calibrated Predictor's are.
    """
    batch = (
        picture
        if isinstance(picture, torch.Tensor)
        else preprocess_image(picture, normalization)
    )
    parameter = next(model.parameters())
    view = look_inside(model, batch.to(parameter.device, parameter.dtype))
    ink = denormalize(batch.cpu(), *normalization)[0].numpy()
    contributions = _as_numpy(view.contributions[0]).astype(np.float64)
    bias = _as_numpy(view.biases()[0]).astype(np.float64)
    logits = contributions.sum(axis=(1, 2)) + bias
    probabilities = np.exp((logits - logits.max()) / temperature)
    probabilities /= probabilities.sum()
    digit = int(probabilities.argmax()) if digit is None else digit
    blocks = len(view.feature_maps)
    figure = plt.figure(
        figsize=(MAX_FIGURE_WIDTH_IN, 2.6 + 1.45 * blocks), layout="constrained"
    )
    plt.close(figure)
    top, *rows = figure.subfigures(
        1 + blocks, 1, squeeze=False, height_ratios=[2.6] + [1.45] * blocks
    )[:, 0]
    input_ax, evidence_ax, bars_ax = top.subplots(1, 3, width_ratios=(1, 1.25, 1.45))
    input_ax.imshow(ink, cmap=INK_CMAP, vmin=0, vmax=255, interpolation="nearest")
    input_ax.set_title("what the model sees", fontsize=10)
    # Each of the 7x7 cells covers 4x4 input pixels; the ink is laid over it.
    limit = np.abs(contributions).max() or 1.0
    shown = evidence_ax.imshow(
        contributions[digit],
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        extent=(-0.5, 27.5, 27.5, -0.5),
        interpolation="nearest",
    )
    over = np.zeros((*ink.shape, 4))
    over[..., 3] = 0.75 * ink / 255
    evidence_ax.imshow(over, interpolation="nearest")
    evidence_ax.set_title(f"evidence for {digit}", fontsize=10)
    evidence_ax.set_xlabel(
        f"cells {contributions[digit].sum():+.1f}, bias {bias[digit]:+.1f}\n"
        f"= logit {logits[digit]:.1f}",
        fontsize=MIN_FONT_PT,
    )
    top.colorbar(shown, ax=evidence_ax, label="contribution", shrink=0.9)
    for ax in (input_ax, evidence_ax):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
        ax.grid(False)
    digits = np.arange(len(probabilities))
    bars = bars_ax.barh(
        digits,
        100 * probabilities,
        color=np.where(digits == digit, "tab:green", "tab:grey"),
    )
    bars_ax.bar_label(
        bars,
        labels=[
            f"{100 * p:.1f} %" if d == digit else ""
            for d, p in enumerate(probabilities)
        ],
        fontsize=MIN_FONT_PT,
    )
    bars_ax.set_yticks(digits)
    bars_ax.invert_yaxis()
    bars_ax.set_xlim(0, 135)
    bars_ax.set_xticks(range(0, 101, 50))
    bars_ax.set_xlabel("probability (%)")
    bars_ax.set_ylabel("digit")
    bars_ax.grid(axis="y", visible=False)
    bars_ax.set_title("probabilities", fontsize=10)
    for index, (row, maps) in enumerate(zip(rows, view.feature_maps, strict=True)):
        values = _as_numpy(maps[0]).astype(np.float64)
        strongest = np.argsort(-values.mean(axis=(1, 2)), kind="stable")[:channels]
        axes = row.subplots(1, channels, squeeze=False)[0]
        top_value = values[strongest].max() or 1.0
        for ax, channel in zip(axes, strongest, strict=False):
            tile = ax.imshow(
                values[channel],
                cmap="magma",
                vmin=0,
                vmax=top_value,
                interpolation="nearest",
            )
            ax.set_title(
                f"#{channel}", fontsize=MIN_FONT_PT, fontweight="normal", pad=2
            )
        for ax in axes:
            ax.set_axis_off()
        row.colorbar(tile, ax=axes, label="activation", shrink=0.9)
        size = "x".join(map(str, values.shape[1:]))
        row.suptitle(
            f"block {index + 1}: the {min(channels, len(values))} most active of its "
            f"{len(values)} maps ({size})",
            fontsize=10,
        )
    figure.suptitle(title)
    return figure


# ----- Experiments (chapter 6) --------------------------------------------------------


def plot_comparison(
    table: pd.DataFrame,
    *,
    accuracy: str = "val accuracy (%)",
    seconds: str = "seconds",
    title: str = "Comparison",
) -> Figure:
    """Return each experiment's accuracy and training time (chapter 6).

    For each row of an experiments table, its accuracy is a labelled dot and its
    training time a bar.
    """
    names = [str(name) for name in table.index]
    positions = np.arange(len(names))
    figure, axes = _new_figure(
        1,
        2,
        figsize=(MAX_FIGURE_WIDTH_IN, 0.45 * len(names) + 1.5),
        sharey=True,
        width_ratios=(3, 2),
    )
    accuracy_ax, time_ax = axes.flat
    # A dot, not a bar: the differences live in the last percent, and a bar cut off
    # below would exaggerate them.
    accuracy_ax.scatter(table[accuracy], positions, color="C0", s=45, zorder=3)
    for position, value in zip(positions, table[accuracy], strict=True):
        accuracy_ax.annotate(
            f"{value:.2f}",
            (value, position),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=MIN_FONT_PT,
        )
    spread = max(table[accuracy].max() - table[accuracy].min(), 0.5)
    accuracy_ax.set_xlim(
        table[accuracy].min() - 0.15 * spread, table[accuracy].max() + 0.3 * spread
    )
    accuracy_ax.set_yticks(positions, names)
    accuracy_ax.invert_yaxis()
    accuracy_ax.set_xlabel(accuracy)
    accuracy_ax.set_ylabel("variant")
    accuracy_ax.set_title("accuracy")
    time_ax.barh(positions, table[seconds], color="C7", height=0.6)
    time_ax.set_xlabel("training time (s, this machine)")
    time_ax.set_ylabel("")
    time_ax.tick_params(axis="y", left=False)
    time_ax.set_title("time")
    figure.suptitle(title)
    return figure


def plot_sweep(
    table: pd.DataFrame,
    *,
    x: str,
    hue: str | None = None,
    y: str = "val accuracy (%)",
    log_x: bool = False,
    xlabel: str | None = None,
    title: str = "Sweep",
) -> Figure:
    """Return one line per ``hue`` value of an experiments table (chapter 6).

    Each line is ``y`` against the swept setting ``x``.
    """
    figure, axes = _new_figure(figsize=(MAX_FIGURE_WIDTH_IN, 4))
    ax = axes[0, 0]
    sns.lineplot(
        data=table,
        x=x,
        y=y,
        hue=hue,
        marker="o",
        markersize=8,
        ax=ax,
        palette="tab10" if hue else None,
    )
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(
            sorted(table[x].unique()),
            [f"{value:g}" for value in sorted(table[x].unique())],
        )
        ax.minorticks_off()
    ax.set_xlabel((xlabel or x) + (" (log scale)" if log_x else ""))
    ax.set_ylabel(y)
    ax.set_title(title)
    return figure
