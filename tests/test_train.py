"""Tests of mnist_tutorial.train: config checks, the loop, early stopping, resuming.

They train on the tiny synthetic MNIST (tests/conftest.py). Chapter 3 runs the fast
recipe on MNIST and asserts its 99%.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import mnist_tutorial.train as train_module
from mnist_tutorial.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mnist_tutorial.coarse import with_coarse_scans
from mnist_tutorial.data import DeviceLoader, MnistData
from mnist_tutorial.errors import ConfigError
from mnist_tutorial.model import Network, build_model, summarize
from mnist_tutorial.records import (
    RECIPES,
    EpochRecord,
    History,
    TrainConfig,
    TrainingRun,
    TrainingState,
    recipe,
)
from mnist_tutorial.train import (
    WeightAverage,
    capture_training_state,
    fit,
    make_optimizer,
    make_scheduler,
    restore_training_state,
    train_one_epoch,
)


@pytest.fixture(scope="module")
def small(synthetic_mnist: MnistData) -> MnistData:
    """Return the synthetic set: 500 training and 100 validation images."""
    return synthetic_mnist


def quick(**changes) -> TrainConfig:
    return TrainConfig(
        **{
            "epochs": 2,
            "batch_size": 50,
            "lr": 3e-3,
            "device": "cpu",
            "augment": False,
            **changes,
        }
    )


def train_mlp(
    data: MnistData, config: TrainConfig, **kwargs
) -> tuple[Network, TrainingRun]:
    """Train a small perceptron (784-64-32-10) from the config's seed."""
    torch.manual_seed(config.seed)
    model = build_model("mlp", hidden=(64, 32))
    return model, fit(model, data, config, progress=False, log=None, **kwargs)


def without_seconds(history: History) -> list[dict]:
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"}
        for r in history.epochs
    ]


def assert_same_tensors(first: object, second: object, where: str = "") -> None:
    """Assert that two nested dicts / lists of tensors and plain values are equal."""
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and torch.equal(first, second), where
    elif isinstance(first, dict):
        assert isinstance(second, dict) and set(first) == set(second), where
        for key in first:
            assert_same_tensors(first[key], second[key], f"{where}/{key}")
    elif isinstance(first, (list, tuple)):
        assert type(first) is type(second) and len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_same_tensors(a, b, f"{where}/{index}")
    else:
        assert first == second, where


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1, got 0"),
        ({"batch_size": 1}, "batch_size must be at least 2"),
        ({"lr": -0.1}, "lr must be a positive number"),
        ({"lr": math.nan}, "lr must be a positive number"),
        ({"optimizer": "rmsprop"}, "optimizer must be adamw, adam or sgd"),
        ({"schedule": "cosine"}, "schedule must be onecycle, step or none"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or mps"),
        ({"patience": 0}, "patience must be at least 1"),
        ({"target_accuracy": 99.0}, r"target_accuracy is a fraction in \(0, 1\]"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
        ({"elastic": -1.0}, "elastic must be 0 or more pixels, got -1.0"),
        ({"coarse_scans": 1.5}, r"coarse_scans is a share in \[0, 1\], got 1.5"),
        (
            {"rule_coarse_scans": -0.1},
            r"rule_coarse_scans is a share in \[0, 1\], got -0.1",
        ),
    ],
)
def test_config_refuses_bad_values_with_a_clear_message(
    changes: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def multiply_adds(model: torch.nn.Module) -> int:
    return sum(row.multiply_adds for row in summarize(model, (1, 1, 28, 28)))


def test_the_default_recipe_is_the_default_run() -> None:
    default = recipe("default")
    assert default.config == TrainConfig()
    assert default.new_model().architecture == {"name": "cnn", "kwargs": {}}


@pytest.mark.parametrize(
    ("changes", "rule_scans", "needs_scans"),
    [
        ({}, 0.0, False),
        ({"coarse_scans": 0.3}, 0.3, True),
        ({"coarse_scans": 0.3, "rule_coarse_scans": 0.0}, 0.0, True),
        ({"rule_coarse_scans": 0.1}, 0.1, True),
    ],
)
def test_the_rule_counts_the_training_share_of_scans_unless_told_otherwise(
    changes: dict, rule_scans: float, needs_scans: bool
) -> None:
    config = TrainConfig(**changes)
    assert config.rule_scans == rule_scans
    assert config.needs_scans is needs_scans


def test_the_accurate_recipe_trains_cnn_large_as_the_default_and_its_rule_reads_scans() -> (
    None
):
    accurate = recipe("accurate")
    assert accurate.new_model().architecture == {"name": "cnn_large", "kwargs": {}}
    # Training as the default run: no scans in its batches; the rule counts some.
    assert replace(accurate.config, rule_coarse_scans=None) == TrainConfig()
    assert accurate.config.coarse_scans == 0 and accurate.config.rule_scans > 0


def test_the_shipped_recipe_is_the_default_on_the_books_model_with_coarse_scans() -> (
    None
):
    shipped = recipe("shipped")
    assert shipped.config == TrainConfig(coarse_scans=0.1)
    book_model = shipped.new_model()
    assert book_model.architecture == {"name": "cnn_large_half", "kwargs": {}}
    # cnn_large's layers at half its widths, at about the cnn's cost.
    assert [type(layer) for layer in book_model] == [
        type(layer) for layer in build_model("cnn_large")
    ]
    widths = [
        m.out_channels for m in book_model.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    assert widths == [16, 16, 32, 32]
    assert multiply_adds(book_model) < 1.2 * multiply_adds(build_model("cnn"))


def test_coarse_scans_without_scans_in_the_data_say_how_to_make_them(
    small: MnistData,
) -> None:
    config = TrainConfig(epochs=1, coarse_scans=0.5, device="cpu")
    with pytest.raises(
        ConfigError,
        match=r"coarse_scans=0.5 needs coarse scans of the training digits; pass "
        r"mnist_tutorial.coarse.with_coarse_scans\(data\)",
    ):
        fit(build_model("mlp"), small, config, progress=False, log=None)
    # With them, it trains on a share of scans.
    run = fit(build_model("mlp"), with_coarse_scans(small), config, progress=False)
    assert math.isfinite(run.history.epochs[0].train_loss)


def test_the_fast_recipe_is_one_epoch_of_a_leaner_cnn() -> None:
    fast = recipe("fast")
    model = fast.new_model()
    assert model.architecture == {"name": "cnn", "kwargs": {"widths": (16, 32, 64)}}
    assert fast.config.epochs == 1 and not fast.config.augment
    ratio = multiply_adds(model) / multiply_adds(recipe("default").new_model())
    assert 0.4 < ratio < 0.6, ratio


def test_each_recipe_builds_a_fresh_model_that_trains(small: MnistData) -> None:
    for name, chosen in RECIPES.items():
        first, second = chosen.new_model(), chosen.new_model()
        assert first is not second, name
        config = dataclasses.replace(chosen.config, epochs=1, device="cpu")
        data = with_coarse_scans(small) if config.coarse_scans else small
        run = fit(first, data, config, progress=False, log=None)
        assert math.isfinite(run.history.epochs[0].train_loss), name


def test_an_unknown_recipe_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'best'; choose one of: "):
        recipe("best")


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
@pytest.mark.parametrize("schedule", ["onecycle", "step", "none"])
def test_every_optimizer_and_schedule_learns(
    small: MnistData, optimizer: str, schedule: str
) -> None:
    lr = 0.05 if optimizer == "sgd" else 3e-3
    _, run = train_mlp(
        small, quick(optimizer=optimizer, schedule=schedule, lr=lr, epochs=2)
    )
    history = run.history
    assert len(history.epochs) == 2 and history.stopped_because == "all epochs done"
    assert history.epochs[-1].val_accuracy > 0.3  # chance is 0.1
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert all(record.grad_norm > 0 and record.lr > 0 for record in history.epochs)


@pytest.mark.parametrize("epochs", [1, 5])
def test_a_one_cycle_run_of_five_steps_trains(small: MnistData, epochs: int) -> None:
    batch_size = len(small.train) * epochs // 5  # 5 steps in all
    _, run = train_mlp(small, quick(epochs=epochs, batch_size=batch_size))
    assert len(run.history.epochs) == epochs


def test_epoch_seconds_are_the_time_each_epoch_took(
    small: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(0, 1000, 3))  # each reading of the clock is 3 s after the last
    monkeypatch.setattr(
        train_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks))
    )
    _, run = train_mlp(small, quick(epochs=2))
    assert run.history.column("seconds") == [3, 3]


def test_fit_returns_the_run_and_attaches_nothing_to_the_model(
    small: MnistData,
) -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    attributes = set(vars(model))
    architecture = dict(model.architecture)
    run = fit(model, small, quick(epochs=1), progress=False, log=None)
    assert isinstance(run, TrainingRun)
    assert isinstance(run.history, History) and len(run.history.epochs) == 1
    assert isinstance(run.training_state, TrainingState)
    assert set(vars(model)) == attributes
    assert not hasattr(model, "train_state") and not hasattr(model, "training_state")
    assert model.architecture == architecture and not model.training
    # The state is that of the end of the run: the raw weights trained, not a reference.
    for name, tensor in model.state_dict().items():
        assert run.training_state.weights[name] is not tensor, name


def test_onecycle_warms_up_to_the_peak_then_anneals(small: MnistData) -> None:
    config = quick(epochs=5)
    _, run = train_mlp(small, config)
    rates = run.history.column("lr")
    # Warm-up takes the first 20% of the steps: epoch 1 of 5 ends at the peak.
    assert rates[0] == pytest.approx(config.lr, rel=0.02)
    assert rates == sorted(rates, reverse=True) and rates[-1] < config.lr / 10


def test_weight_average_warms_up_then_keeps_a_long_memory() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 1, bias=False), torch.nn.BatchNorm1d(1)
    )
    torch.nn.init.zeros_(model[0].weight)
    average = WeightAverage(model, decay=0.99)
    model[0].weight.data.fill_(1.0)
    average.update()  # first step: decay (1 + 0) / (10 + 0) = 0.1, so 90% of the way
    assert average.average[0].weight.flatten().tolist() == pytest.approx([0.9, 0.9])
    for _ in range(2000):
        average.update()
    model[0].weight.data.fill_(2.0)
    average.update()  # now the set decay: 1% of the way
    assert average.average[0].weight.flatten().tolist() == pytest.approx(
        [1.01, 1.01], abs=1e-4
    )
    model(torch.randn(4, 2))
    average.update()
    assert (
        average.average[1].num_batches_tracked.item() == 1
    )  # counters are copied, not averaged


def test_without_averaging_the_trained_weights_are_kept(small: MnistData) -> None:
    seen = []
    model, _ = train_mlp(
        small, quick(epochs=1, ema_decay=None), on_epoch_end=lambda m, r: seen.append(m)
    )
    assert seen == [model]


def test_with_averaging_the_average_is_evaluated(small: MnistData) -> None:
    seen = []
    model, _ = train_mlp(
        small, quick(epochs=1), on_epoch_end=lambda m, r: seen.append(m)
    )
    assert len(seen) == 1 and seen[0] is not model


def test_same_seed_same_history_on_the_cpu(small: MnistData) -> None:
    config = quick(augment=True, label_smoothing=0.1)
    _, first = train_mlp(small, config)
    _, second = train_mlp(small, config)
    _, other = train_mlp(small, dataclasses.replace(config, seed=1))
    assert without_seconds(first.history) == without_seconds(second.history)
    assert without_seconds(first.history) != without_seconds(other.history)


def test_target_accuracy_stops_early(small: MnistData) -> None:
    _, run = train_mlp(small, quick(epochs=10, target_accuracy=0.2))
    assert len(run.history.epochs) == 1
    assert run.history.stopped_because == "validation accuracy reached 20.00%"


def test_patience_stops_and_restores_the_best_weights(
    small: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted_losses = iter([0.5, 0.4, 0.45, 0.6, 0.3])
    real = train_module.loss_and_accuracy
    monkeypatch.setattr(
        train_module,
        "loss_and_accuracy",
        lambda *args: (next(scripted_losses), real(*args)[1]),
    )
    seen: list[dict[str, torch.Tensor]] = []

    def remember(model: torch.nn.Module, record) -> None:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})

    model, run = train_mlp(small, quick(epochs=5, patience=2), on_epoch_end=remember)
    history = run.history
    assert history.stopped_because == "no better validation loss for 2 epochs"
    assert len(history.epochs) == 4 and history.best_epoch.epoch == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, seen[1][name]), name
    assert not torch.equal(model.state_dict()["1.weight"], seen[3]["1.weight"])


def test_best_epoch_ignores_diverged_epochs() -> None:
    history = History(
        [
            EpochRecord(1, 1.0, 0.5, math.nan, 0.1, 0.1, 1.0, 1.0),
            EpochRecord(2, 1.0, 0.5, 0.7, 0.8, 0.1, 1.0, 1.0),
        ]
    )
    assert history.best_epoch.epoch == 2


def test_callback_can_stop_the_run(small: MnistData) -> None:
    _, run = train_mlp(small, quick(epochs=3), on_epoch_end=lambda model, record: True)
    assert (
        len(run.history.epochs) == 1
        and run.history.stopped_because == "stopped by on_epoch_end"
    )


def test_history_round_trips_through_json(small: MnistData) -> None:
    _, run = train_mlp(small, quick(epochs=1))
    text = json.dumps(run.history.to_dict())
    assert json.loads(text)["epochs"][0]["epoch"] == 1
    again = History.from_dict(json.loads(text))
    assert again == run.history and again is not run.history


def test_a_model_without_an_architecture_trains_but_cannot_be_saved(
    small: MnistData, tmp_path: Path
) -> None:
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    run = fit(bare, small, quick(epochs=1), progress=False, log=None)
    assert len(run.history.epochs) == 1
    with pytest.raises(
        ValueError, match=r"build the model with mnist_tutorial\.build_model"
    ):
        fit(bare, small, quick(), progress=False, log=None, save_to=tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


# --- the training state: captured, restored, resumed ----------------------------------


def parts(data: MnistData, config: TrainConfig, seed: int = 0):
    """A model, optimiser, schedule, loader and weight average as fit makes them."""
    torch.manual_seed(seed)
    model = build_model("mlp")
    loader = DeviceLoader(
        data.train,
        batch_size=config.batch_size,
        normalization=data.normalization,
        shuffle=True,
        augment=config.augment,
        drop_last=True,
        seed=config.seed,
    )
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(loader))
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    return model, optimizer, scheduler, loader, average


def one_epoch(model, optimizer, scheduler, loader, average) -> tuple[float, ...]:
    return train_one_epoch(
        model,
        loader,
        optimizer,
        scheduler,
        torch.nn.CrossEntropyLoss(),
        average=average,
    )


def test_capture_then_restore_into_fresh_parts_gives_the_same_state(
    small: MnistData,
) -> None:
    config = quick(epochs=3, augment=True)
    trained = parts(small, config)
    one_epoch(*trained)
    state = capture_training_state(*trained)

    fresh = parts(small, config, seed=1)
    torch.manual_seed(123)  # a different torch stream, which restoring puts back
    restore_training_state(state, *fresh)
    model, _, scheduler, loader, average = fresh
    again = capture_training_state(*fresh)
    assert_same_tensors(again.optimizer, state.optimizer, "optimizer")
    assert_same_tensors(again.scheduler, state.scheduler, "scheduler")
    assert_same_tensors(again.rng, state.rng, "rng")
    assert_same_tensors(again.weights, state.weights, "weights")
    assert_same_tensors(again.average, state.average, "average")
    assert average.steps == scheduler.last_epoch == len(loader)
    # Both go on exactly alike from there (each from the captured torch stream).
    resumed = one_epoch(*fresh)
    torch.set_rng_state(state.rng["torch"])
    assert resumed == one_epoch(*trained)
    assert_same_tensors(trained[0].state_dict(), model.state_dict(), "next epoch")


def test_a_captured_state_is_a_copy(small: MnistData) -> None:
    trained = parts(small, quick())
    one_epoch(*trained)
    state = capture_training_state(*trained)
    weights = {name: tensor.clone() for name, tensor in state.weights.items()}
    one_epoch(*trained)
    assert_same_tensors(state.weights, weights, "weights")
    assert not torch.equal(
        state.weights["1.weight"], trained[0].state_dict()["1.weight"]
    )


def test_a_training_state_round_trips_through_a_dict(small: MnistData) -> None:
    trained = parts(small, quick())
    state = capture_training_state(*trained)
    data = state.to_dict()
    assert set(data) == {"optimizer", "scheduler", "rng", "weights", "average"}
    assert_same_tensors(TrainingState.from_dict(data).to_dict(), data)
    with pytest.raises(KeyError):
        TrainingState.from_dict({k: v for k, v in data.items() if k != "rng"})


def test_a_state_that_does_not_fit_is_a_checkpoint_error(small: MnistData) -> None:
    state = capture_training_state(*parts(small, quick()))
    torch.manual_seed(0)
    other = build_model("mlp", hidden=(32, 16))
    _, _, scheduler, loader, _ = parts(small, quick())
    optimizer = make_optimizer(other, quick())
    with pytest.raises(CheckpointError, match="does not fit this run"):
        restore_training_state(state, other, optimizer, scheduler, loader, None)


def test_resumed_run_matches_an_uninterrupted_one(
    small: MnistData, tmp_path: Path
) -> None:
    config = quick(epochs=3, augment=True)
    _, uninterrupted = train_mlp(small, config)
    model, first_part = train_mlp(
        small, config, on_epoch_end=lambda model, record: record.epoch == 1
    )
    path = save_checkpoint(
        tmp_path / "part.pt",
        model,
        normalization=small.normalization,
        config=config,
        history=first_part.history,
        training_state=first_part.training_state,
    )
    checkpoint = load_checkpoint(path)
    resumed = fit(
        checkpoint.model, small, config, progress=False, log=None, resume=checkpoint
    )
    assert len(first_part.history.epochs) == 1
    assert without_seconds(resumed.history) == without_seconds(uninterrupted.history)


def test_resuming_needs_training_state(small: MnistData, tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "bare.pt", build_model("mlp"), normalization=small.normalization
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.training_state is None
    with pytest.raises(CheckpointError) as raised:
        fit(
            checkpoint.model,
            small,
            quick(),
            progress=False,
            log=None,
            resume=checkpoint,
        )
    assert str(raised.value) == (
        "this checkpoint holds no training state (saved with training_state=None), so "
        "training cannot resume from it; start a new run (resume=None)"
    )
