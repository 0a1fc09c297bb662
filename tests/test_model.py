"""Tests of mnist_tutorial.model: the registry, every architecture, the summaries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_tutorial.model import (
    MODELS,
    Network,
    available_models,
    build_model,
    count_parameters,
    format_summary,
    look_inside,
    summarize,
)


@pytest.mark.parametrize("name", available_models())
def test_every_model_maps_a_batch_to_ten_logits(name: str) -> None:
    model = build_model(name).eval()
    logits = model(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    # Logits, not probabilities: rows need not sum to one.
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))


def test_registry_has_the_book_models() -> None:
    assert {"mlp", "lenet5", "cnn", "cnn_large"} <= set(available_models())


def test_parameter_counts_match_the_designs() -> None:
    assert (
        count_parameters(build_model("mlp"))
        == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    )
    assert count_parameters(build_model("lenet5")) == 61_706
    assert 850_000 <= count_parameters(build_model("cnn_large")) <= 890_000
    assert count_parameters(build_model("cnn")) < count_parameters(
        build_model("cnn_large")
    )


def test_build_model_remembers_name_and_arguments() -> None:
    model = build_model("mlp", hidden=(32, 16))
    assert model.architecture == {"name": "mlp", "kwargs": {"hidden": (32, 16)}}
    assert count_parameters(model) == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10


@pytest.mark.parametrize("name", available_models())
def test_build_model_wraps_the_builders_layers_in_a_network(name: str) -> None:
    model = build_model(name)
    layers = MODELS[name]()
    assert isinstance(model, Network) and not isinstance(layers, Network)
    assert type(layers) is nn.Sequential
    # The same layers and the same state_dict keys: checkpoints of either load into the
    # other.
    assert list(model.state_dict()) == list(layers.state_dict())
    assert [type(m) for m in model] == [type(m) for m in layers]
    model.load_state_dict(layers.state_dict())


def test_a_network_carries_only_its_architecture_beside_its_layers() -> None:
    model = build_model("lenet5")
    assert set(vars(model)) - set(vars(nn.Sequential())) == {"architecture"}
    assert model.architecture == {"name": "lenet5", "kwargs": {}}
    assert not hasattr(model, "train_state")


def test_builder_arguments_are_copied_into_the_architecture() -> None:
    kwargs = {"widths": (8, 16, 32), "dropout": 0.0}
    model = build_model("cnn", **kwargs)
    kwargs["dropout"] = 0.5
    assert model.architecture["kwargs"] == {"widths": (8, 16, 32), "dropout": 0.0}
    assert model[0][0].out_channels == 8


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(
        ValueError,
        match="unknown model 'resnet'; choose one of: cnn, cnn_large, cnn_large_half, lenet5, mlp",
    ):
        build_model("resnet")


def test_count_parameters_can_skip_frozen_ones() -> None:
    model = build_model("mlp")
    model[1].weight.requires_grad_(False)
    assert (
        count_parameters(model)
        == count_parameters(model, trainable_only=False) - 784 * 256
    )


@pytest.mark.parametrize("name", available_models())
def test_summary_totals_agree_with_the_model(name: str) -> None:
    model = build_model(name)
    rows = summarize(model)
    assert sum(row.parameters for row in rows) == count_parameters(model)
    assert rows[-1].output_shape == (10,)
    assert model.training, "summarize must restore training mode"
    assert "total" in format_summary(rows)


def test_multiply_adds_are_counted_per_image() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 28 * 28, 10)
    )
    rows = summarize(model)
    assert [row.multiply_adds for row in rows] == [28 * 28 * 4 * 9, 0, 4 * 28 * 28 * 10]
    assert rows[0].output_shape == (4, 28, 28)


def test_a_slice_of_a_network_is_a_plain_sequential_of_its_layers() -> None:
    model = build_model("cnn")
    head = model[:2]
    assert type(head) is torch.nn.Sequential
    assert list(head) == list(model)[:2]
    assert isinstance(model[-1], torch.nn.Linear)
    assert head(torch.zeros(1, 1, 28, 28)).shape == (1, 48, 7, 7)


@pytest.mark.parametrize("widths", [(24, 48, 96), (4, 8, 6)])
def test_the_contributions_and_the_bias_sum_to_the_logits(
    widths: tuple[int, int, int],
) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", widths=widths)
    images = torch.randn(5, 1, 28, 28)
    view = look_inside(model, images)
    assert model.training  # the mode it had is given back
    model.eval()
    with torch.no_grad():
        logits = model(images)
    first, second, third = widths
    shapes = [tuple(maps.shape) for maps in view.feature_maps]
    assert shapes == [(5, first, 14, 14), (5, second, 7, 7), (5, third, 7, 7)]
    assert view.contributions.shape == (5, 10, 7, 7)
    total = view.contributions.sum(dim=(2, 3)) + view.bias
    torch.testing.assert_close(total, logits, atol=1e-5, rtol=1e-5)
    # Each map is the block's output after its ReLU: nothing negative.
    assert all(float(maps.min()) >= 0 for maps in view.feature_maps)


def test_a_hidden_layer_head_splits_each_logit_along_the_path_from_no_features() -> (
    None
):
    torch.manual_seed(0)
    model = build_model("cnn_large")
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model(torch.randn(64, 1, 28, 28))
    images = torch.randn(3, 1, 28, 28)
    view = look_inside(model, images)
    assert model.training
    model.eval()
    shapes = [tuple(maps.shape) for maps in view.feature_maps]
    assert shapes == [(3, 32, 28, 28), (3, 32, 14, 14), (3, 64, 14, 14), (3, 64, 7, 7)]
    last = view.feature_maps[-1].flatten(1)
    head = torch.nn.Sequential(*list(model)[-5:])
    steps = torch.linspace(0, 1, 4001)[1:] - 0.5 / 4000  # midpoints
    for index in range(len(images)):
        # Autograd's slopes of the head along the path, averaged, times the maps.
        path = steps[:, None] * last[index]
        slopes = torch.autograd.functional.jacobian(
            lambda maps: head(maps).sum(0), path
        )
        expected = (slopes.mean(1) * last[index]).reshape(10, 64, 7, 7).sum(1)
        torch.testing.assert_close(
            view.contributions[index], expected, atol=2e-3, rtol=0
        )
    with torch.no_grad():
        logits = model(images)
        no_features = head(torch.zeros(1, last.shape[1]))[0]
    torch.testing.assert_close(view.bias, no_features)
    total = view.contributions.sum(dim=(2, 3)) + view.bias
    torch.testing.assert_close(total, logits, atol=1e-5, rtol=1e-5)


def test_a_head_with_two_hidden_relu_layers_is_refused() -> None:
    deeper = build_model("cnn_large")
    deeper.insert(-1, torch.nn.Linear(256, 256))
    deeper.insert(-1, torch.nn.ReLU())
    with pytest.raises(ValueError, match="at most one ReLU layer"):
        look_inside(deeper, torch.zeros(1, 1, 28, 28))


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_looking_inside_needs_conv_blocks_and_a_relu_head(name: str) -> None:
    with pytest.raises(ValueError, match="as in the cnn and cnn_large architectures"):
        look_inside(build_model(name), torch.zeros(1, 1, 28, 28))
