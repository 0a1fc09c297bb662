"""The book's plotting helpers: they return finished, labelled figures, and the shape measures are right."""

import matplotlib

matplotlib.use("Agg")

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from IPython.display import Code
from matplotlib.figure import Figure
from matplotlib.text import Text

from mnist_tutorial import measures, plots
from mnist_tutorial.model import build_model, look_inside
from mnist_tutorial.records import EpochRecord, History


@pytest.fixture
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Forty random uint8 'images' and labels covering every digit."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 28, 28), generator=generator, dtype=torch.uint8)
    return images, torch.arange(40) % 10


def titles(figure: Figure) -> list[str]:
    """Every title on the figure: the suptitle and each axes' title."""
    return [
        text
        for text in [figure.get_suptitle(), *(ax.get_title() for ax in figure.axes)]
        if text
    ]


def test_show_source_returns_highlightable_code() -> None:
    shown = plots.show_source(measures.ink_area)
    assert isinstance(shown, Code)
    markdown = shown._repr_markdown_()
    assert markdown.startswith("```python\ndef ink_area(")
    assert markdown.endswith("\n```")
    assert shown._repr_html_() is None and shown._repr_latex_() is None


def test_show_source_dedents_methods_and_outfences_backticks() -> None:
    assert plots.show_source(plots.SourceCode._repr_markdown_).data.startswith(
        "def _repr_markdown_"
    )
    assert (
        plots.SourceCode("x = '````'", language="python")
        ._repr_markdown_()
        .startswith("`````python\n")
    )


def test_digit_grid_captions_and_marks_mistakes(digits) -> None:
    images, labels = digits
    predictions = labels.clone()
    predictions[3] = 7
    figure = plots.plot_digit_grid(
        images[:12], labels[:12], predictions[:12], columns=5, title="grid"
    )
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 15 and sum(bool(ax.images) for ax in figure.axes) == 12
    assert figure.axes[3].get_title() == "3 → 7"
    assert figure.axes[3].title.get_color() == plots.WRONG_COLOR
    assert figure.axes[2].title.get_color() == "black"
    assert "grid" in titles(figure)


def test_digit_grid_accepts_channel_dimension_and_captions(digits) -> None:
    images, labels = digits
    figure = plots.plot_digit_grid(
        images[:3].unsqueeze(1).float(), labels[:3], captions=["a", "b", "c"], columns=3
    )
    assert [ax.get_title() for ax in figure.axes] == ["a", "b", "c"]


def test_digit_grid_rejects_mismatched_lengths(digits) -> None:
    images, labels = digits
    with pytest.raises(ValueError, match="differ in length"):
        plots.plot_digit_grid(images[:4], labels[:3])


@pytest.mark.parametrize(
    "make",
    [
        lambda images, labels: plots.plot_class_distribution(
            {"train": labels, "test": labels[:20]}
        ),
        lambda images, labels: plots.plot_intensity_histogram(images),
        lambda images, labels: plots.plot_measure_by_digit(
            measures.ink_area(images), labels, ylabel="ink", title="t"
        ),
        lambda images, labels: plots.plot_embedding(
            {"PCA": np.random.default_rng(0).normal(size=(40, 2))}, labels
        ),
        lambda images, labels: plots.plot_learning_curves(
            [1.0, 0.5, 0.25], [0.9, 0.95, 0.97]
        ),
    ],
    ids=[
        "class_distribution",
        "intensity_histogram",
        "measure_by_digit",
        "embedding",
        "learning_curves",
    ],
)
def test_charts_are_titled_and_labelled_and_not_left_open(make, digits) -> None:
    plt.close("all")
    figure = make(*digits)
    assert isinstance(figure, Figure)
    assert titles(figure)
    for ax in figure.axes:
        if ax.get_label() != "<colorbar>":
            assert ax.get_xlabel() and ax.get_ylabel()
    assert (
        plt.get_fignums() == []
    )  # closed for pyplot: a notebook shows the returned figure once


def test_weight_panels() -> None:
    weights = plots.plot_weight_images(torch.randn(10, 784), columns=5)
    assert sum(bool(ax.images) for ax in weights.axes) == 10
    assert titles(weights)


def test_digit_grid_custom_captions_still_mark_mistakes(digits) -> None:
    images, labels = digits
    figure = plots.plot_digit_grid(
        images[:2], labels[:2], [0, 7], captions=["p=0.9", "p=0.6"], columns=2
    )
    assert [ax.get_title() for ax in figure.axes] == ["p=0.9", "p=0.6"]
    assert [ax.title.get_color() for ax in figure.axes] == ["black", plots.WRONG_COLOR]


def labelled_axes(figure: Figure) -> bool:
    """Every chart axes has an x and a y label, its own or that of an axes it shares that axis with."""
    charts = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    for ax in charts:
        x_siblings = ax.get_shared_x_axes().get_siblings(ax)
        y_siblings = ax.get_shared_y_axes().get_siblings(ax)
        if not any(sibling.get_xlabel() for sibling in x_siblings):
            return False
        if not any(sibling.get_ylabel() for sibling in y_siblings):
            return False
    return True


def small_history() -> History:
    """Four epochs of made-up training records."""
    return History(
        [
            EpochRecord(
                epoch,
                1 / epoch,
                0.9 + epoch / 100,
                1.1 / epoch,
                0.95 + epoch / 200,
                0.01 / epoch,
                0.5 / epoch,
                3.0,
            )
            for epoch in range(1, 5)
        ]
    )


def experiments_table() -> pd.DataFrame:
    """A made-up chapter 6 results table: two optimisers at two learning rates."""
    return pd.DataFrame(
        {
            "variant": ["a", "b", "c", "d"],
            "optimizer": ["sgd", "sgd", "adamw", "adamw"],
            "lr": [0.01, 0.1, 0.01, 0.1],
            "val accuracy (%)": [97.5, 98.2, 98.6, 96.0],
            "seconds": [10.0, 11.0, 12.0, 12.5],
        }
    ).set_index("variant")


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: plots.plot_training_history(small_history()),
        lambda rng: plots.plot_learning_rate_schedules(
            {"a": [0.1, 0.2, 0.1], "b": [0.1] * 3}, steps_per_epoch=1
        ),
        lambda rng: plots.plot_confusion_matrix(
            rng.integers(0, 5, (10, 10)) + np.eye(10, dtype=int) * 900
        ),
        lambda rng: plots.plot_per_class_accuracy(rng.uniform(0.98, 1.0, 10)),
        lambda rng: plots.plot_confidence_histograms(
            rng.uniform(0.2, 1.0, 500), rng.uniform(size=500) < 0.9
        ),
        lambda rng: plots.plot_reliability(
            np.linspace(0.05, 0.95, 10), np.linspace(0.1, 1.0, 10), np.arange(10) * 10
        ),
        lambda rng: plots.plot_comparison(experiments_table(), title="t"),
        lambda rng: plots.plot_sweep(
            experiments_table(), x="lr", hue="optimizer", log_x=True, title="t"
        ),
    ],
    ids=[
        "training_history",
        "lr_schedules",
        "confusion_matrix",
        "per_class_accuracy",
        "confidence_histograms",
        "reliability",
        "comparison",
        "sweep",
    ],
)
def test_later_chapters_charts_are_titled_labelled_and_not_left_open(make) -> None:
    plt.close("all")
    figure = make(np.random.default_rng(0))
    assert isinstance(figure, Figure)
    assert titles(figure)
    assert labelled_axes(figure)
    assert plt.get_fignums() == []


def test_training_history_marks_the_kept_epoch() -> None:
    history = small_history()
    figure = plots.plot_training_history(history)
    loss_ax = figure.axes[0]
    marked = [
        line.get_xdata()[0] for line in loss_ax.lines if line.get_linestyle() == "--"
    ]
    assert marked == [history.best_epoch.epoch]


def test_confusion_matrix_colours_only_the_mistakes() -> None:
    matrix = np.eye(10, dtype=int) * 1000
    matrix[9, 4] = 5
    figure = plots.plot_confusion_matrix(matrix)
    texts = {text.get_text() for text in figure.axes[0].texts}
    assert {"5", "1,000"} <= texts  # mistakes and right answers are both printed
    colours = figure.axes[0].collections[0].get_array()
    assert (
        np.ma.count_masked(colours) == 10
    )  # the diagonal is left out of the colour scale


def test_feature_maps_choose_a_diverging_scale_only_for_signed_maps(digits) -> None:
    images, _ = digits
    signed = plots.plot_feature_maps(
        torch.randn(5, 7, 7), image=images[0], columns=3, title="signed"
    )
    positive = plots.plot_feature_maps(
        torch.rand(4, 14, 14), captions=list("abcd"), columns=4
    )
    assert sum(bool(ax.images) for ax in signed.axes) == 6  # the input and five maps
    assert signed.axes[1].images[0].get_cmap().name == "RdBu_r"
    assert positive.axes[0].images[0].get_cmap().name == "magma"
    assert [ax.get_title() for ax in positive.axes[:4]] == list("abcd")
    assert "signed" in titles(signed)


SAMPLES = sorted(
    (Path(__file__).resolve().parent.parent / "book" / "samples").glob("*.png")
)


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.plot_sample_pictures(SAMPLES[:3] + SAMPLES[-3:], columns=3),
        lambda: plots.plot_paper_and_ink(
            np.full((30, 40), 200, np.uint8),
            np.linspace(150, 220, 1200).reshape(30, 40),
            np.zeros((30, 40), np.uint8),
        ),
        lambda: plots.plot_preprocessing_steps(
            {path.name: path for path in SAMPLES[:2]}
        ),
        lambda: plots.plot_accuracy_by_preparation(
            {"plain": np.arange(6) < 1, "prepared": np.ones(6, bool)},
            {"photos": np.arange(6) < 3, "drawings": np.arange(6) >= 3},
        ),
        lambda: plots.plot_probabilities(
            np.full(10, 0.05) + 0.5 * (np.arange(10) == 7)
        ),
        lambda: plots.plot_inside(small_cnn(), SAMPLES[0]),
    ],
    ids=[
        "sample_pictures",
        "paper_and_ink",
        "preprocessing_steps",
        "accuracy",
        "probabilities",
        "inside",
    ],
)
def test_chapter_5_figures_are_titled_and_not_left_open(make) -> None:
    plt.close("all")
    figure = make()
    assert isinstance(figure, Figure)
    assert titles(figure)
    assert plt.get_fignums() == []


def test_sample_pictures_caption_name_mode_and_size() -> None:
    figure = plots.plot_sample_pictures(SAMPLES[:1], columns=2)
    assert figure.axes[0].get_title().startswith(f"{SAMPLES[0].stem}\n")
    assert figure.axes[0].get_title().endswith("\nP, 112x84 px")
    assert not figure.axes[1].images  # the unused panel stays blank


def test_preprocessing_steps_draw_each_stage_of_each_picture() -> None:
    figure = plots.plot_preprocessing_steps({"a": SAMPLES[0], "b": SAMPLES[-1]})
    assert len(figure.axes) == 2 * (len(plots.PREPROCESSING_STEPS) + 1)
    assert figure.axes[0].get_title().startswith("a\n")
    assert figure.axes[-1].get_title() == "centred 28x28\n28x28 px"
    assert figure.axes[-1].images[0].get_cmap().name == plots.INK_CMAP


def test_accuracy_bars_are_the_share_right_per_group() -> None:
    figure = plots.plot_accuracy_by_preparation(
        {"plain": np.array([1, 0, 0, 0], bool), "prepared": np.ones(4, bool)},
        {
            "photos": np.array([1, 1, 0, 0], bool),
            "drawings": np.array([0, 0, 1, 1], bool),
        },
    )
    heights = [bar.get_height() for bar in figure.axes[0].patches]
    assert heights == [50.0, 100.0, 0.0, 100.0]  # photos, then drawings


def test_probabilities_mark_the_most_probable_digit() -> None:
    probabilities = np.full(10, 0.02)
    probabilities[3] = 0.82
    figure = plots.plot_probabilities(probabilities)
    bars = figure.axes[0].patches
    assert bars[3].get_height() == pytest.approx(82.0)
    assert bars[3].get_facecolor() != bars[0].get_facecolor()
    assert "82.0 %" in [text.get_text() for text in figure.axes[0].texts]


def small_cnn() -> torch.nn.Module:
    """The book's cnn, narrow and freshly initialised (seeded): fast, and laid out like the shipped one."""
    torch.manual_seed(0)
    return build_model("cnn", widths=(6, 8, 10))


def test_inside_shows_the_evidence_and_each_blocks_most_active_maps() -> None:
    model = small_cnn()
    batch = torch.randn(1, 1, 28, 28)
    view = look_inside(model, batch)
    figure = plots.plot_inside(model, batch, digit=3, channels=5, temperature=2.0)
    evidence_ax, bars_ax = figure.axes[1:3]
    # The evidence map is the chosen digit's 7x7 contributions, on one scale symmetric
    # about zero, and its label adds them and the bias up to the logit.
    np.testing.assert_allclose(
        evidence_ax.images[0].get_array(), view.contributions[0, 3].numpy()
    )
    low, high = evidence_ax.images[0].get_clim()
    assert low == -high == -view.contributions.abs().max().item()
    logit = view.contributions[0, 3].sum() + view.bias[3]
    assert evidence_ax.get_title() == "evidence for 3"
    assert evidence_ax.get_xlabel().endswith(f"= logit {logit:.1f}")
    # The bars are the tempered softmax of the same logits.
    logits = view.contributions[0].sum(dim=(1, 2)) + view.bias
    expected = 100 * (logits / 2.0).softmax(0).numpy()
    heights = [bar.get_width() for bar in bars_ax.patches]
    np.testing.assert_allclose(heights, expected, rtol=1e-5)
    # Each block: its 5 most active maps, most active first, on one shared scale.
    tiles = [ax for ax in figure.axes[3:] if ax.images]
    assert len(tiles) == 3 * 5
    for block, maps in enumerate(view.feature_maps):
        row = tiles[5 * block : 5 * block + 5]
        means = maps[0].mean(dim=(1, 2))
        shown = [int(ax.get_title().lstrip("#")) for ax in row]
        assert shown == means.argsort(descending=True, stable=True)[:5].tolist()
        assert len({ax.images[0].get_clim() for ax in row}) == 1
    assert "block 3: the 5 most active of its 10 maps (7x7)" in [
        text.get_text() for text in figure.findobj(Text)
    ]


def visible_texts(figure: Figure) -> list[Text]:
    """Every visible Text artist of the figure that has something in it."""
    return [
        text
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip()
    ]


#: The book's text column at 1366 px, where cell outputs are shown.
COLUMN_PX = 757
#: Every figure the chapters show, except chapter 6's (plot_comparison and plot_sweep
#: keep their size until chapter 6 is executed again, with issue 13).
BOOK_FIGURES = {
    "digit_grid": lambda images, labels: plots.plot_digit_grid(
        images[:20], labels[:20], columns=10, captions=["+0.52"] * 20, title="t"
    ),
    "digit_grid (39 mistakes)": lambda images, labels: plots.plot_digit_grid(
        images[:39],
        labels[:39],
        (labels[:39] + 1) % 10,
        columns=5,
        captions=["#9729: 5 → 6 (62%)"] * 39,
        panel_size=1.7,
        title="All 39 mistakes: label → prediction (confidence)",
    ),
    "weight_images": lambda images, labels: plots.plot_weight_images(
        torch.randn(32, 784), columns=8
    ),
    "class_distribution": lambda images, labels: plots.plot_class_distribution(
        {"training file": labels, "test file": labels[:20]}
    ),
    "intensity_histogram": lambda images, labels: plots.plot_intensity_histogram(
        images
    ),
    "measure_by_digit": lambda images, labels: plots.plot_measure_by_digit(
        measures.ink_area(images), labels, ylabel="ink", title="t"
    ),
    "embedding": lambda images, labels: plots.plot_embedding(
        {
            name: np.random.default_rng(0).normal(size=(40, 2))
            for name in ("PCA: the first two components", "t-SNE")
        },
        labels,
        title="t",
    ),
    "learning_curves": lambda images, labels: plots.plot_learning_curves(
        [1.0, 0.5, 0.25], [0.9, 0.95, 0.97]
    ),
    "feature_maps": lambda images, labels: plots.plot_feature_maps(
        torch.randn(24, 28, 28), image=images[0], columns=13
    ),
    "training_history": lambda images, labels: plots.plot_training_history(
        small_history()
    ),
    "learning_rate_schedules": lambda images, labels: (
        plots.plot_learning_rate_schedules(
            {"a": [0.1, 0.2, 0.1], "b": [0.1] * 3}, steps_per_epoch=1
        )
    ),
    "confusion_matrix": lambda images, labels: plots.plot_confusion_matrix(
        np.random.default_rng(0).integers(0, 5, (10, 10)) + np.eye(10, dtype=int) * 1135
    ),
    "per_class_accuracy": lambda images, labels: plots.plot_per_class_accuracy(
        np.random.default_rng(0).uniform(0.98, 1.0, 10)
    ),
    "confidence_histograms": lambda images, labels: plots.plot_confidence_histograms(
        np.random.default_rng(0).uniform(0.2, 1.0, 500),
        np.random.default_rng(1).uniform(size=500) < 0.9,
    ),
    "reliability": lambda images, labels: plots.plot_reliability(
        np.linspace(0.05, 0.95, 10), np.linspace(0.1, 1.0, 10), np.arange(10) * 10
    ),
    "sample_pictures": lambda images, labels: plots.plot_sample_pictures(SAMPLES[:10]),
    "paper_and_ink": lambda images, labels: plots.plot_paper_and_ink(
        np.full((30, 40), 200, np.uint8),
        np.linspace(150, 220, 1200).reshape(30, 40),
        np.zeros((30, 40), np.uint8),
    ),
    "preprocessing_steps": lambda images, labels: plots.plot_preprocessing_steps(
        {path.name: path for path in SAMPLES[:2]}
    ),
    "accuracy_by_preparation": lambda images, labels: (
        plots.plot_accuracy_by_preparation(
            {"plain": np.arange(6) < 1, "prepared": np.ones(6, bool)},
            {"photos": np.arange(6) < 3, "drawings": np.arange(6) >= 3},
        )
    ),
    "probabilities": lambda images, labels: plots.plot_probabilities(
        np.full(10, 0.05) + 0.5 * (np.arange(10) == 7)
    ),
    "inside": lambda images, labels: plots.plot_inside(
        small_cnn(), images[:1].unsqueeze(1).float() / 255, channels=8
    ),
}


def test_every_book_figure_is_covered() -> None:
    public = {name for name in dir(plots) if name.startswith("plot_")}
    covered = {f"plot_{name.split()[0]}" for name in BOOK_FIGURES}
    assert public - covered == {"plot_comparison", "plot_sweep"}


@pytest.mark.parametrize("name", list(BOOK_FIGURES))
def test_figures_fit_the_column_and_their_text_is_legible(name, digits) -> None:
    """At most MAX_FIGURE_WIDTH_IN wide (shown at its own size in the book's column), and
    no text under MIN_FONT_PT (12.5 px at 100 dpi), even in a grid of many panels."""
    figure = BOOK_FIGURES[name](*digits)
    assert figure.get_figwidth() <= plots.MAX_FIGURE_WIDTH_IN + 1e-9
    figure.canvas.draw()  # lays out the figure: the texts are those it draws
    small = {
        (text.get_text()[:30], text.get_fontsize())
        for text in visible_texts(figure)
        if text.get_fontsize() < plots.MIN_FONT_PT
    }
    assert not small
    # A notebook saves the figure trimmed to what it draws, plus 0.1 in each side: that
    # picture, at 100 dpi, must fit the 757 px column of a 1366 px screen.
    saved = figure.get_tightbbox().width + 0.2
    assert saved * 100 <= COLUMN_PX
