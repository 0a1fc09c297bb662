"""The book's plotting helpers: they return finished, labelled figures, and the shape measures are right."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from IPython.display import Code  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mnist_tutorial import plots  # noqa: E402


@pytest.fixture
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Forty random uint8 'images' and labels covering every digit."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 28, 28), generator=generator, dtype=torch.uint8)
    return images, torch.arange(40) % 10


def titles(figure: Figure) -> list[str]:
    """Every title on the figure: the suptitle and each axes' title."""
    return [text for text in [figure.get_suptitle(), *(ax.get_title() for ax in figure.axes)] if text]


def test_show_source_returns_highlightable_code() -> None:
    shown = plots.show_source(plots.ink_area)
    assert isinstance(shown, Code)
    markdown = shown._repr_markdown_()
    assert markdown.startswith("```python\ndef ink_area(")
    assert markdown.endswith("\n```")
    assert shown._repr_html_() is None and shown._repr_latex_() is None


def test_show_source_dedents_methods_and_outfences_backticks() -> None:
    assert plots.show_source(plots.SourceCode._repr_markdown_).data.startswith("def _repr_markdown_")
    assert plots.SourceCode("x = '````'", language="python")._repr_markdown_().startswith("`````python\n")


def test_digit_grid_captions_and_marks_mistakes(digits) -> None:
    images, labels = digits
    predictions = labels.clone()
    predictions[3] = 7
    figure = plots.plot_digit_grid(images[:12], labels[:12], predictions[:12], columns=5, title="grid")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 15 and sum(bool(ax.images) for ax in figure.axes) == 12
    assert figure.axes[3].get_title() == "3 → 7"
    assert figure.axes[3].title.get_color() == plots.WRONG_COLOR
    assert figure.axes[2].title.get_color() == "black"
    assert "grid" in titles(figure)


def test_digit_grid_accepts_channel_dimension_and_captions(digits) -> None:
    images, labels = digits
    figure = plots.plot_digit_grid(images[:3].unsqueeze(1).float(), labels[:3], captions=["a", "b", "c"], columns=3)
    assert [ax.get_title() for ax in figure.axes] == ["a", "b", "c"]


def test_digit_grid_rejects_mismatched_lengths(digits) -> None:
    images, labels = digits
    with pytest.raises(ValueError, match="differ in length"):
        plots.plot_digit_grid(images[:4], labels[:3])


@pytest.mark.parametrize(
    "make",
    [
        lambda images, labels: plots.plot_class_distribution({"train": labels, "test": labels[:20]}),
        lambda images, labels: plots.plot_intensity_histogram(images),
        lambda images, labels: plots.plot_measure_by_digit(plots.ink_area(images), labels, ylabel="ink", title="t"),
        lambda images, labels: plots.plot_embedding({"PCA": np.random.default_rng(0).normal(size=(40, 2))}, labels),
        lambda images, labels: plots.plot_learning_curves([1.0, 0.5, 0.25], [0.9, 0.95, 0.97]),
    ],
    ids=["class_distribution", "intensity_histogram", "measure_by_digit", "embedding", "learning_curves"],
)
def test_charts_are_titled_and_labelled_and_not_left_open(make, digits) -> None:
    plt.close("all")
    figure = make(*digits)
    assert isinstance(figure, Figure)
    assert titles(figure)
    for ax in figure.axes:
        if ax.get_label() != "<colorbar>":
            assert ax.get_xlabel() and ax.get_ylabel()
    assert plt.get_fignums() == []  # closed for pyplot: a notebook shows the returned figure once


def test_image_panels(digits) -> None:
    images, labels = digits
    means = plots.plot_mean_digits(images, labels)
    assert sum(bool(ax.images) for ax in means.axes) == 10
    weights = plots.plot_weight_images(torch.randn(10, 784), columns=5)
    assert sum(bool(ax.images) for ax in weights.axes) == 10
    assert titles(means) and titles(weights)


def test_ink_area_counts_dark_pixels() -> None:
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, 5:10, 5:10] = 255
    images[1, 0, :3] = torch.tensor([127, 128, 200], dtype=torch.uint8)
    assert plots.ink_area(images).tolist() == [25, 2]


def test_slant_sign_and_size() -> None:
    images = torch.zeros(3, 28, 28)
    for row in range(4, 24):
        images[0, row, 14] = 255                      # upright stroke
        images[1, row, 14 + (14 - row) // 2] = 255    # top to the right: leans right
        images[2, row, 14 - (14 - row) // 2] = 255    # leans left
    upright, right, left = plots.slant(images).tolist()
    assert upright == pytest.approx(0.0, abs=1e-12)
    assert right == pytest.approx(0.5, abs=0.05) and left == pytest.approx(-0.5, abs=0.05)


def test_digit_grid_custom_captions_still_mark_mistakes(digits) -> None:
    images, labels = digits
    figure = plots.plot_digit_grid(images[:2], labels[:2], [0, 7], captions=["p=0.9", "p=0.6"], columns=2)
    assert [ax.get_title() for ax in figure.axes] == ["p=0.9", "p=0.6"]
    assert [ax.title.get_color() for ax in figure.axes] == ["black", plots.WRONG_COLOR]
