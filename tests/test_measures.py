"""mnist_tutorial.measures: known answers on small hand-made images."""

import math

import pytest
import torch

from mnist_tutorial import measures


def blank(count: int = 1) -> torch.Tensor:
    """Blank uint8 images (count, 28, 28)."""
    return torch.zeros(count, 28, 28, dtype=torch.uint8)


def test_ink_box_spans_first_to_last_inked_row_and_column() -> None:
    images = blank(3)
    images[0, 4:7, 10:15] = 255  # a 3x5 block
    images[1, 2, 5] = images[1, 9, 7] = 30  # two faint dots: the gap between counts
    images[2, 0, 0] = images[2, 27, 27] = 1  # opposite corners: the whole field
    heights, widths = measures.ink_box(images)
    assert heights.tolist() == [3, 8, 28]
    assert widths.tolist() == [5, 3, 28]


def test_ink_box_of_a_blank_image_is_empty() -> None:
    heights, widths = measures.ink_box(blank(2))
    assert heights.tolist() == [0, 0] and widths.tolist() == [0, 0]


def test_centre_of_mass_weighs_pixels_by_their_ink() -> None:
    images = blank(3)
    images[0, 4:7, 10:15] = 200  # a 3x5 block: its middle pixel
    images[1, 5, 20] = 1  # one pixel, however faint
    images[2, 3, 0], images[2, 3, 4] = 255, 85  # three times the ink at column 0
    rows, columns = measures.centre_of_mass(images)
    assert rows.dtype == torch.float64
    assert rows.tolist() == [5.0, 5.0, 3.0]
    assert columns.tolist() == [12.0, 20.0, 1.0]


def test_centre_of_mass_of_a_blank_image_is_undefined() -> None:
    rows, columns = measures.centre_of_mass(blank())
    assert math.isnan(rows.item()) and math.isnan(columns.item())


def test_ink_area_counts_pixels_at_or_above_the_threshold() -> None:
    images = blank(2)
    images[0, 5:10, 5:10] = 255
    images[1, 0, :3] = torch.tensor([127, 128, 200], dtype=torch.uint8)
    assert measures.ink_area(images).tolist() == [25, 2]
    assert measures.ink_area(images, threshold=201).tolist() == [25, 0]


def test_slant_is_columns_right_per_row_up() -> None:
    images = blank(4)
    for row in range(8, 21):
        images[0, row, 14] = 255  # upright
        images[1, row, 14 + (14 - row)] = 255  # one column right per row up
        images[2, row, 14 - (14 - row)] = 255  # one column left per row up
        images[3, row, 3 + (14 - row) // 2] = 255  # half as steep, near the edge
    upright, right, left, half = measures.slant(images).tolist()
    assert upright == pytest.approx(0.0, abs=1e-12)
    assert right == pytest.approx(1.0) and left == pytest.approx(-1.0)
    assert half == pytest.approx(0.5, abs=0.05)


def test_slant_does_not_depend_on_where_the_digit_is() -> None:
    images = blank(2)
    for row in range(8, 21):
        images[0, row, 10 + (14 - row) // 2] = 255
    images[1] = torch.roll(images[0], shifts=(4, 9), dims=(0, 1))
    first, moved = measures.slant(images).tolist()
    assert first == pytest.approx(moved) and first > 0.4


@pytest.mark.parametrize(
    "measure",
    [measures.ink_box, measures.centre_of_mass, measures.ink_area, measures.slant],
    ids=lambda measure: measure.__name__,
)
def test_measures_accept_arrays_and_a_channel_dimension(measure) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 28, 28), generator=generator, dtype=torch.uint8)
    images[:, :3] = 0  # leave the top rows blank, so the box is not the whole field
    expected = measure(images)
    for same in (images.numpy(), images.unsqueeze(1), images.unsqueeze(1).numpy()):
        got = measure(same)
        got, wanted = (
            (got, expected) if isinstance(got, tuple) else ((got,), (expected,))
        )
        for value, reference in zip(got, wanted, strict=True):
            assert value.shape == (4,)
            assert torch.equal(value, reference)


def test_the_measures_have_one_home() -> None:
    """Chapters 1 and 5 share one definition of each: the plots module keeps no copy."""
    plots = pytest.importorskip("mnist_tutorial.plots")
    for name in ("ink_box", "centre_of_mass", "ink_area", "slant"):
        assert not hasattr(plots, name), f"plots.{name} duplicates measures.{name}"
