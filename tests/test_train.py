"""Tests of mnist_tutorial.train: config checks, the loop, history, early stopping, checkpoints, resuming."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from mnist_tutorial.data import MnistData, Split
from mnist_tutorial.evaluate import accuracy, predict_split
from mnist_tutorial.model import build_model
from mnist_tutorial.train import (
    CheckpointError,
    EpochRecord,
    History,
    TrainConfig,
    WeightAverage,
    fit,
    load_checkpoint,
    save_checkpoint,
    select_device,
)


@pytest.fixture(scope="module")
def small(mnist: MnistData) -> MnistData:
    """4,000 training and 1,000 validation images: enough to learn, quick to fit."""
    return dataclasses.replace(
        mnist,
        train=Split(mnist.train.images[:4000], mnist.train.labels[:4000]),
        validation=Split(
            mnist.validation.images[:1000], mnist.validation.labels[:1000]
        ),
    )


def quick(**changes) -> TrainConfig:
    return TrainConfig(
        **{
            "epochs": 2,
            "batch_size": 100,
            "lr": 3e-3,
            "device": "cpu",
            "augment": False,
            **changes,
        }
    )


def train_mlp(
    data: MnistData, config: TrainConfig, **kwargs
) -> tuple[torch.nn.Module, History]:
    torch.manual_seed(config.seed)
    model = build_model("mlp")
    return model, fit(model, data, config, progress=False, log=None, **kwargs)


def without_seconds(history: History) -> list[dict]:
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"}
        for r in history.epochs
    ]


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
    ],
)
def test_config_refuses_bad_values_with_a_clear_message(
    changes: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_device_selection() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else "cpu"
    )
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            select_device("cuda")


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
@pytest.mark.parametrize("schedule", ["onecycle", "step", "none"])
def test_every_optimizer_and_schedule_learns(
    small: MnistData, optimizer: str, schedule: str
) -> None:
    lr = 0.05 if optimizer == "sgd" else 3e-3
    _, history = train_mlp(
        small, quick(optimizer=optimizer, schedule=schedule, lr=lr, epochs=2)
    )
    assert len(history.epochs) == 2 and history.stopped_because == "all epochs done"
    assert history.epochs[-1].val_accuracy > 0.8
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert all(
        record.grad_norm > 0 and record.lr > 0 and record.seconds > 0
        for record in history.epochs
    )


def test_onecycle_warms_up_to_the_peak_then_anneals(small: MnistData) -> None:
    config = quick(epochs=5)
    _, history = train_mlp(small, config)
    rates = history.column("lr")
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


def test_same_seed_same_history_on_the_cpu(small: MnistData) -> None:
    config = quick(augment=True, label_smoothing=0.1)
    _, first = train_mlp(small, config)
    _, second = train_mlp(small, config)
    _, other = train_mlp(small, dataclasses.replace(config, seed=1))
    assert without_seconds(first) == without_seconds(second)
    assert without_seconds(first) != without_seconds(other)


def test_target_accuracy_stops_early(small: MnistData) -> None:
    _, history = train_mlp(small, quick(epochs=10, target_accuracy=0.5))
    assert len(history.epochs) == 1
    assert history.stopped_because == "validation accuracy reached 50.00%"


def test_patience_stops_and_restores_the_best_weights(
    small: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist_tutorial.train as train_module

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

    model, history = train_mlp(
        small, quick(epochs=5, patience=2), on_epoch_end=remember
    )
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
    _, history = train_mlp(
        small, quick(epochs=3), on_epoch_end=lambda model, record: True
    )
    assert (
        len(history.epochs) == 1
        and history.stopped_because == "stopped by on_epoch_end"
    )


def test_history_round_trips_through_json(small: MnistData, tmp_path: Path) -> None:
    _, history = train_mlp(small, quick(epochs=1))
    path = history.save(tmp_path / "history.json")
    assert json.loads(path.read_text())["epochs"][0]["epoch"] == 1
    assert History.load(path) == history


def test_checkpoint_round_trip_gives_the_same_predictions(
    small: MnistData, tmp_path: Path
) -> None:
    config = quick(epochs=1)
    model, history = train_mlp(small, config)
    path = save_checkpoint(
        tmp_path / "sub" / "model.pt",
        model,
        normalization=small.normalization,
        config=config,
        history=history,
        metrics={"test_accuracy": 0.5},
    )
    assert [p.name for p in path.parent.iterdir()] == [
        "model.pt"
    ]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert loaded.architecture == {"name": "mlp", "kwargs": {}}
    assert loaded.config == config and loaded.history == history
    assert (
        loaded.metrics == {"test_accuracy": 0.5}
        and loaded.normalization == small.normalization
    )
    assert set(loaded.versions) == {"python", "torch", "torchvision"}
    assert not loaded.model.training
    before = predict_split(model, small.validation, small.normalization)
    after = predict_split(loaded.model, small.validation, loaded.normalization)
    assert (before.probabilities == after.probabilities).all()


def test_checkpoint_without_an_architecture_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="build it with mnist_tutorial.build_model"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2), normalization=(0, 1))


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at .*; train one with"):
        load_checkpoint(tmp_path / "absent.pt")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        CheckpointError,
        match=r"is truncated or corrupt \(File is not a zip file\); re-save or re-train",
    ):
        load_checkpoint(path)


def test_file_that_is_not_pytorch(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(
        CheckpointError,
        match=r"is not a PyTorch checkpoint \(unknown format\); pass a .pt file",
    ):
        load_checkpoint(path)


def test_pytorch_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model("mlp").state_dict(), path)
    with pytest.raises(CheckpointError, match="not an mnist_tutorial checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    payload = torch.load(path, weights_only=True)
    payload["architecture"] = {"name": "mlp", "kwargs": {"hidden": (64, 32)}}
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match="the weights do not fit architecture 'mlp'"
    ):
        load_checkpoint(path)


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
        history=first_part,
    )
    checkpoint = load_checkpoint(path)
    resumed = fit(
        checkpoint.model, small, config, progress=False, log=None, resume=checkpoint
    )
    assert without_seconds(resumed) == without_seconds(uninterrupted)


def test_resuming_needs_training_state(small: MnistData, tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "bare.pt",
        build_model("mlp"),
        normalization=small.normalization,
        include_training_state=False,
    )
    checkpoint = load_checkpoint(path)
    with pytest.raises(ValueError, match="holds no optimiser state"):
        fit(
            checkpoint.model,
            small,
            quick(),
            progress=False,
            log=None,
            resume=checkpoint,
        )


def test_one_real_epoch_of_the_default_model(mnist: MnistData) -> None:
    """The default CNN on all 54,000 training images for one epoch, as in chapter 3."""
    torch.manual_seed(0)
    model = build_model()
    lines: list[str] = []
    history = fit(
        model,
        mnist,
        TrainConfig(epochs=1, device="cpu"),
        progress=False,
        log=lines.append,
    )
    assert lines[0].startswith("training cnn on cpu (54,000 images")
    assert lines[1].startswith("epoch  1/1")
    assert history.epochs[0].val_accuracy > 0.98
    assert accuracy(predict_split(model, mnist.test, mnist.normalization)) > 0.98
