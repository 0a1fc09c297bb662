"""Tests of mnist_tutorial.experiments: subsets, how a variant's changes are routed, runs, and the comparison table."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from mnist_tutorial import experiments
from mnist_tutorial.data import MnistData, Split
from mnist_tutorial.model import build_model, count_parameters
from mnist_tutorial.train import TrainConfig

QUICK = TrainConfig(
    epochs=1, batch_size=100, lr=3e-3, device="cpu", augment=False, ema_decay=None
)


@pytest.fixture(scope="module")
def small(mnist: MnistData) -> MnistData:
    """1,000 training and 500 validation images: a perceptron learns something from them in a second."""
    return dataclasses.replace(
        experiments.subset(mnist, 1000),
        validation=Split(mnist.validation.images[:500], mnist.validation.labels[:500]),
    )


def test_subset_is_stratified_seeded_and_leaves_the_other_splits(
    mnist: MnistData,
) -> None:
    part = experiments.subset(mnist, 6000, seed=3)
    assert len(part.train) == 6000 and part.train.images.shape == (6000, 28, 28)
    expected = (
        torch.bincount(mnist.train.labels, minlength=10) * 6000 / len(mnist.train)
    )
    assert (torch.bincount(part.train.labels, minlength=10) - expected).abs().max() <= 1
    assert torch.equal(
        part.train.images, experiments.subset(mnist, 6000, seed=3).train.images
    )
    assert not torch.equal(
        part.train.images, experiments.subset(mnist, 6000, seed=4).train.images
    )
    assert part.validation is mnist.validation and part.test is mnist.test
    assert part.normalization == mnist.normalization


def test_subset_of_everything_is_the_data_and_bad_sizes_are_refused(
    mnist: MnistData,
) -> None:
    assert experiments.subset(mnist, len(mnist.train)) is mnist
    for size in (5, len(mnist.train) + 1):
        with pytest.raises(
            ValueError, match="train_size must be between 10 and 54,000"
        ):
            experiments.subset(mnist, size)


def test_changes_are_routed_to_the_config_the_architecture_or_its_builder() -> None:
    assert experiments.split_changes({}) == ("cnn", {}, {})
    assert experiments.split_changes(
        {"model": "lenet5", "lr": 0.1, "optimizer": "sgd", "dropout": 0.5}
    ) == ("lenet5", {"dropout": 0.5}, {"lr": 0.1, "optimizer": "sgd"})


def test_run_experiment_trains_a_fresh_seeded_model(small: MnistData) -> None:
    first = experiments.run_experiment(
        small, {"model": "mlp", "hidden": (64, 32)}, base=QUICK
    )
    second = experiments.run_experiment(
        small, {"model": "mlp", "hidden": (64, 32)}, base=QUICK
    )
    assert first.architecture == "mlp" and first.model_kwargs == {"hidden": (64, 32)}
    assert first.parameters == count_parameters(build_model("mlp", hidden=(64, 32)))
    assert (
        len(first.history.epochs) == 1 and first.history.best_epoch.val_accuracy > 0.3
    )  # well above chance
    assert first.history.column("val_loss") == second.history.column(
        "val_loss"
    )  # same seed, same run
    assert first.seconds > 0


def test_result_reports_the_setting_of_every_kind_of_key(small: MnistData) -> None:
    result = experiments.run_experiment(small, {"model": "mlp", "lr": 1e-3}, base=QUICK)
    assert result.setting("model") == "mlp"
    assert result.setting("lr") == 1e-3 and result.setting("batch_size") == 100
    assert result.setting("dropout") == 0.0  # the builder's default
    assert result.setting("widths") is None  # an argument mlp does not have


def test_unknown_builder_argument_fails_clearly(small: MnistData) -> None:
    with pytest.raises(TypeError, match="dropuot"):
        experiments.run_experiment(small, {"model": "mlp", "dropuot": 0.5}, base=QUICK)


def test_compare_tabulates_and_trains_each_setting_once(
    small: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = experiments.run_experiment

    def counting(data, changes=None, *, base=None):
        calls.append(dict(changes or {}))
        return original(data, changes, base=base)

    monkeypatch.setattr(experiments, "run_experiment", counting)
    cache: dict = {}
    base = dataclasses.replace(QUICK, lr=1e-3)
    lines: list[str] = []
    table = experiments.compare(
        small,
        {"lr 0.001": {"model": "mlp"}, "lr 0.003": {"model": "mlp", "lr": 3e-3}},
        base=base,
        cache=cache,
        log=lines.append,
    )
    assert isinstance(table, pd.DataFrame) and table.index.name == "variant"
    assert list(table.index) == ["lr 0.001", "lr 0.003"]
    assert list(table.columns) == [
        "model",
        "lr",
        "parameters",
        "train loss",
        "val loss",
        "val accuracy (%)",
        "seconds",
    ]
    assert table["lr"].tolist() == [1e-3, 3e-3] and table["model"].tolist() == [
        "mlp",
        "mlp",
    ]
    assert table["val accuracy (%)"].between(0, 100).all() and len(lines) == 2

    again = experiments.compare(
        small,
        {"same as before": {"model": "mlp", "lr": 1e-3}},
        base=base,
        cache=cache,
        log=lines.append,
    )
    assert (
        len(calls) == 2
    )  # the third variant trains exactly like the first: reused from the cache
    assert (
        again.loc["same as before", "val accuracy (%)"]
        == table.loc["lr 0.001", "val accuracy (%)"]
    )
    assert "reused" in lines[-1]
