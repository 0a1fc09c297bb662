"""Tests of mnist_tutorial.experiments on the synthetic MNIST: subsets, how a variant's
changes are routed, runs, and the comparison table."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from mnist_tutorial import experiments
from mnist_tutorial.data import MnistData
from mnist_tutorial.model import build_model, count_parameters
from mnist_tutorial.records import TrainConfig

QUICK = TrainConfig(
    epochs=1, batch_size=50, lr=3e-3, device="cpu", augment=False, ema_decay=None
)


@pytest.fixture(scope="module")
def small(synthetic_mnist: MnistData) -> MnistData:
    """Return the synthetic set: a perceptron learns something from it in a second."""
    return synthetic_mnist


def test_subset_is_stratified_seeded_and_leaves_the_other_splits(
    small: MnistData,
) -> None:
    part = experiments.subset(small, 200, seed=3)
    assert len(part.train) == 200 and part.train.images.shape == (200, 28, 28)
    expected = torch.bincount(small.train.labels, minlength=10) * 200 / len(small.train)
    assert (torch.bincount(part.train.labels, minlength=10) - expected).abs().max() <= 1
    assert torch.equal(
        part.train.images, experiments.subset(small, 200, seed=3).train.images
    )
    assert not torch.equal(
        part.train.images, experiments.subset(small, 200, seed=4).train.images
    )
    assert part.validation is small.validation and part.test is small.test
    assert part.normalization == small.normalization
    # A sample of the training images, each with its own label.
    rows = {
        bytes(image.numpy()) + bytes([int(label)])
        for image, label in zip(small.train.images, small.train.labels, strict=True)
    }
    assert all(
        bytes(image.numpy()) + bytes([int(label)]) in rows
        for image, label in zip(part.train.images, part.train.labels, strict=True)
    )


def test_subset_of_everything_is_the_data_and_bad_sizes_are_refused(
    small: MnistData,
) -> None:
    assert experiments.subset(small, len(small.train)) is small
    for size in (5, len(small.train) + 1):
        with pytest.raises(ValueError, match="train_size must be between 10 and 500"):
            experiments.subset(small, size)


def test_changes_are_routed_to_the_config_the_architecture_or_its_builder() -> None:
    assert experiments.split_changes({}) == ("cnn", {}, {})
    assert experiments.split_changes(
        {"model": "lenet5", "lr": 0.1, "optimizer": "sgd", "dropout": 0.5}
    ) == ("lenet5", {"dropout": 0.5}, {"lr": 0.1, "optimizer": "sgd"})


def test_run_experiment_trains_a_fresh_seeded_model(
    small: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    ticks = iter([10.0, 17.5])  # the clock read before and after the run
    monkeypatch.setattr(
        experiments, "time", SimpleNamespace(perf_counter=lambda: next(ticks))
    )
    timed = experiments.run_experiment(small, {"model": "mlp"}, base=QUICK)
    assert timed.seconds == 7.5


def test_result_reports_the_setting_of_every_kind_of_key(small: MnistData) -> None:
    result = experiments.run_experiment(small, {"model": "mlp", "lr": 1e-3}, base=QUICK)
    assert result.setting("model") == "mlp"
    assert result.setting("lr") == 1e-3 and result.setting("batch_size") == 50
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
    # The kept epoch's accuracy, in percent, of each run (in the cache, in order).
    results = list(cache.values())
    assert table["val accuracy (%)"].tolist() == [
        round(100 * result.history.best_epoch.val_accuracy, 2) for result in results
    ]
    assert table["val loss"].tolist() == [
        round(result.history.best_epoch.val_loss, 4) for result in results
    ]
    assert len(lines) == 2

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
