"""What a training run is made of and leaves behind: its settings, its per-epoch history
and the state that lets it go on later (chapter 3)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from .device import DeviceName
from .errors import ConfigError
from .model import Network, build_model

Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["onecycle", "step", "none"]


def _option(default: Any, help_text: str) -> Any:
    """Return a dataclass field with a default and the help text the CLI shows."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    """Everything that decides a training run except the architecture and the data."""

    epochs: int = _option(15, "passes over the training split")
    batch_size: int = _option(128, "images per optimisation step")
    lr: float = _option(0.01, "peak learning rate")
    optimizer: Optimizer = _option(
        "adamw", "adamw, adam or sgd (momentum 0.9, Nesterov)"
    )
    schedule: Schedule = _option("onecycle", "onecycle, step (x0.7 each epoch) or none")
    weight_decay: float = _option(
        5e-4, "decoupled weight decay on weights (not biases or norms)"
    )
    label_smoothing: float = _option(0.1, "share of the target spread over all classes")
    augment: bool = _option(
        True, "random small rotation, shift and scale of training images"
    )
    elastic: float = _option(
        0.0,
        "strength in pixels (alpha) of elastic distortions of training images, as in "
        "Simard et al. 2003, smoothed over 4 pixels (0: none)",
    )
    coarse_scans: float = _option(
        0.0,
        "share of each training batch read from coarse scans of its digits, as "
        "scikit-learn's 8x8 digits are (chapter 5)",
    )
    rule_coarse_scans: float | None = _option(
        None,
        "share of coarse scans the 'not a digit' rule counts as digits (none: the "
        "share training read)",
    )
    seed: int = _option(
        0, "seed for initialisation, shuffling, augmentation and dropout"
    )
    device: DeviceName = _option(
        "auto", "auto picks the machine's accelerator (CUDA, MPS), else cpu"
    )
    mixed_precision: bool = _option(True, "bf16 autocast (on CUDA only)")
    channels_last: bool = _option(
        True, "channels-last memory layout (CUDA and CPU; faster convolutions)"
    )
    compile: bool = _option(False, "torch.compile the model (slow start, faster steps)")
    patience: int | None = _option(
        None, "stop after this many epochs without a better validation loss"
    )
    target_accuracy: float | None = _option(
        None, "stop once validation accuracy reaches this (0-1)"
    )
    ema_decay: float | None = _option(
        0.998,
        "evaluate and keep an exponential moving average of the weights with this "
        "decay (none: off)",
    )

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        """Return one message per setting out of range (empty when all are valid)."""
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (
                self.batch_size >= 2,
                "batch_size must be at least 2 (BatchNorm needs two images), got "
                f"{self.batch_size}",
            ),
            (
                self.lr > 0 and math.isfinite(self.lr),
                f"lr must be a positive number, got {self.lr}",
            ),
            (
                self.optimizer in ("adamw", "adam", "sgd"),
                f"optimizer must be adamw, adam or sgd, got {self.optimizer!r}",
            ),
            (
                self.schedule in ("onecycle", "step", "none"),
                f"schedule must be onecycle, step or none, got {self.schedule!r}",
            ),
            (
                self.weight_decay >= 0 and math.isfinite(self.weight_decay),
                f"weight_decay must be 0 or more, got {self.weight_decay}",
            ),
            (
                0 <= self.label_smoothing < 1,
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
            ),
            (
                self.elastic >= 0 and math.isfinite(self.elastic),
                f"elastic must be 0 or more pixels, got {self.elastic}",
            ),
            (
                0 <= self.coarse_scans <= 1,
                f"coarse_scans is a share in [0, 1], got {self.coarse_scans}",
            ),
            (
                self.rule_coarse_scans is None or 0 <= self.rule_coarse_scans <= 1,
                f"rule_coarse_scans is a share in [0, 1], got {self.rule_coarse_scans}",
            ),
            (
                self.device in ("auto", "cpu", "cuda", "mps"),
                f"device must be auto, cpu, cuda or mps, got {self.device!r}",
            ),
            (
                self.patience is None or self.patience >= 1,
                f"patience must be at least 1, got {self.patience}",
            ),
            (
                self.target_accuracy is None or 0 < self.target_accuracy <= 1,
                f"target_accuracy is a fraction in (0, 1], got {self.target_accuracy}",
            ),
            (
                self.ema_decay is None or 0 <= self.ema_decay < 1,
                f"ema_decay must be in [0, 1), got {self.ema_decay}",
            ),
        ]
        return [message for valid, message in checks if not valid]

    @property
    def rule_scans(self) -> float:
        """Return the share of coarse scans the 'not a digit' rule counts as digits."""
        if self.rule_coarse_scans is None:
            return self.coarse_scans
        return self.rule_coarse_scans

    @property
    def needs_scans(self) -> bool:
        """Return whether training or the 'not a digit' rule reads coarse scans."""
        return self.coarse_scans > 0 or self.rule_scans > 0


@dataclass(frozen=True)
class Recipe:
    """A named way to train: an architecture, its arguments and a config (chapter 3)."""

    model: str
    model_kwargs: dict[str, Any]
    config: TrainConfig
    purpose: str

    def new_model(self) -> Network:
        """Return a freshly initialised model of the recipe's architecture."""
        return build_model(self.model, **self.model_kwargs)


#: The CLI's ``train --recipe NAME``; flags given beside it override its settings.
RECIPES: dict[str, Recipe] = {
    "default": Recipe("cnn", {}, TrainConfig(), "15 epochs with augmentation"),
    # Chapter 5: coarse scans teach the network low resolutions, such as scikit-learn's.
    # Chapter 8: cnn_large's layout at half its widths costs what the cnn costs, and its
    # features tell non-digits from digits far better (benchmarks/README.md).
    "shipped": Recipe(
        "cnn_large_half",
        {},
        TrainConfig(coarse_scans=0.1),
        "the book's model: cnn_large_half, 10% of each batch coarse scans",
    ),
    # Chapter 6: the most accurate single network, trained as the default is. It reads
    # scikit-learn's digits without scans in training; its rule must count them as
    # digits, or it declines them (benchmarks/README.md).
    "accurate": Recipe(
        "cnn_large",
        {},
        TrainConfig(rule_coarse_scans=0.1),
        "the most accurate single model: cnn_large, 3.8 times the book's model's "
        "multiply-adds; its 'not a digit' rule counts 10% coarse scans as digits",
    ),
    # Two-thirds of the widths halve the multiply-adds; one epoch without augmentation
    # is all the steps the one-cycle schedule gets, so it warms up and anneals in it.
    "fast": Recipe(
        "cnn",
        {"widths": (16, 32, 64)},
        TrainConfig(epochs=1, augment=False),
        "99% test accuracy in one epoch: a leaner cnn, no augmentation",
    ),
}


def recipe(name: str) -> Recipe:
    """Return the recipe called ``name``; ConfigError names the choices."""
    if name not in RECIPES:
        raise ConfigError(
            f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))}"
        )
    return RECIPES[name]


@dataclass
class EpochRecord:
    """One epoch: losses, accuracies (fractions), lr, gradient norm, seconds."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    grad_norm: float
    seconds: float


@dataclass
class History:
    """The per-epoch record of a run, and where it ran (chapter 3)."""

    epochs: list[EpochRecord] = field(default_factory=list)
    device: str = ""
    stopped_because: str = ""

    def column(self, name: str) -> list[float]:
        """Return one field over all epochs, e.g. ``history.column('val_accuracy')``."""
        return [getattr(record, name) for record in self.epochs]

    @property
    def best_epoch(self) -> EpochRecord:
        """Return the epoch with the lowest validation loss (a NaN epoch never wins)."""
        return min(
            self.epochs,
            key=lambda record: (
                record.val_loss if math.isfinite(record.val_loss) else math.inf
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the history as plain data (JSON- and checkpoint-safe)."""
        return {
            "epochs": [asdict(record) for record in self.epochs],
            "device": self.device,
            "stopped_because": self.stopped_because,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Return the history that ``to_dict`` wrote."""
        return cls(
            [EpochRecord(**record) for record in data["epochs"]],
            data.get("device", ""),
            data.get("stopped_because", ""),
        )


@dataclass
class TrainingState:
    """What going on with a run needs besides its best weights (chapter 3).

    The optimiser's and the schedule's state, both random streams (so a resumed run
    matches an uninterrupted one), the raw weights being trained and, with a moving
    average, the averaged ones. ``train.capture_training_state`` makes it and
    ``train.restore_training_state`` puts it back.
    """

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]
    """The random streams: 'loader' (shuffling, augmentation) and 'torch' (dropout)."""
    weights: dict[str, torch.Tensor]
    average: dict[str, torch.Tensor] | None

    def to_dict(self) -> dict[str, Any]:
        """Return the state as tensors and plain data, as a checkpoint stores it."""
        # Not asdict, which would deep-copy every tensor capture_training_state copied.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingState:
        """Return the state that ``to_dict`` wrote; a missing entry raises KeyError."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass
class TrainingRun:
    """What ``fit`` returns: the history and the state to go on (chapter 3)."""

    history: History
    training_state: TrainingState
