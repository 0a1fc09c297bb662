"""Training: the configuration, the loop, its history, and checkpoints (chapter 3)."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import pickle
import platform
import re
import reprlib
import stat
import time
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torchvision
from torch import nn
from tqdm.auto import tqdm

from .data import DeviceLoader, MnistData, replaced_atomically
from .errors import ConfigError, MnistTutorialError, describe_os_error
from .model import available_models, build_model, count_parameters

Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["onecycle", "step", "none"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
CHECKPOINT_FORMAT = "mnist_tutorial.checkpoint/1"
PRETRAINED_FOLDER = Path(__file__).parent / "pretrained"
PRETRAINED_PATH = PRETRAINED_FOLDER / "cnn.pt"
#: The shipped model first, then two more runs of the same recipe with other seeds (an ensemble).
PRETRAINED_NAMES = (
    "cnn",
    "cnn_seed1",
    "cnn_seed2",
    "cnn_seed3",
    "cnn_seed4",
    "cnn_large",
    "cnn_large_seed1",
    "cnn_large_seed2",
)
#: A checkpoint asking for a bigger model is refused before any weight is allocated: 23 times the
#: book's largest model (cnn_large, 870k parameters), 80 MB of float32.
MAX_PARAMETERS = 20_000_000
#: A checkpoint file holds at most the weights five times over (best, raw and averaged weights, two
#: optimiser moments); larger files are refused before they are read.
MAX_CHECKPOINT_BYTES = 6 * 4 * MAX_PARAMETERS
#: The one-cycle schedule's shape: 20% of the steps warm up from lr/10 to lr, the rest anneal to lr/1000.
ONE_CYCLE = {
    "pct_start": 0.2,
    "anneal_strategy": "linear",
    "div_factor": 10.0,
    "final_div_factor": 100.0,
}
#: What a resumed run keeps from the run it continues: changing them would not continue it.
RESUME_KEEPS = (
    "optimizer",
    "schedule",
    "lr",
    "batch_size",
    "weight_decay",
    "ema_decay",
    "seed",
)


@dataclass
class TrainConfig:
    """Everything that decides a training run except the architecture and the data."""

    epochs: int = field(default=15, metadata={"help": "passes over the training split"})
    batch_size: int = field(
        default=128, metadata={"help": "images per optimisation step"}
    )
    lr: float = field(default=0.01, metadata={"help": "peak learning rate"})
    optimizer: Optimizer = field(
        default="adamw",
        metadata={"help": "adamw, adam or sgd (momentum 0.9, Nesterov)"},
    )
    schedule: Schedule = field(
        default="onecycle",
        metadata={"help": "onecycle, step (x0.7 each epoch) or none"},
    )
    weight_decay: float = field(
        default=5e-4,
        metadata={"help": "decoupled weight decay on weights (not biases or norms)"},
    )
    label_smoothing: float = field(
        default=0.1, metadata={"help": "share of the target spread over all classes"}
    )
    augment: bool = field(
        default=True,
        metadata={"help": "random small rotation, shift and scale of training images"},
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "seed for initialisation, shuffling, augmentation and dropout"
        },
    )
    device: DeviceName = field(
        default="auto", metadata={"help": "auto picks cuda, then mps, then cpu"}
    )
    mixed_precision: bool = field(
        default=True, metadata={"help": "bf16 autocast (on CUDA only)"}
    )
    channels_last: bool = field(
        default=True,
        metadata={
            "help": "channels-last memory layout (CUDA and CPU; faster convolutions)"
        },
    )
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the model (slow start, faster steps)"},
    )
    patience: int | None = field(
        default=None,
        metadata={
            "help": "stop after this many epochs without a better validation loss"
        },
    )
    target_accuracy: float | None = field(
        default=None,
        metadata={"help": "stop once validation accuracy reaches this (0-1)"},
    )
    ema_decay: float | None = field(
        default=0.998,
        metadata={
            "help": "evaluate and keep an exponential moving average of the weights with this decay (none: off)"
        },
    )

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(
                f"batch_size must be at least 2 (BatchNorm needs two images), got {self.batch_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            problems.append(
                f"optimizer must be adamw, adam or sgd, got {self.optimizer!r}"
            )
        if self.schedule not in ("onecycle", "step", "none"):
            problems.append(
                f"schedule must be onecycle, step or none, got {self.schedule!r}"
            )
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            problems.append(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            problems.append(
                f"device must be auto, cpu, cuda or mps, got {self.device!r}"
            )
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be at least 1, got {self.patience}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            problems.append(
                f"target_accuracy is a fraction in (0, 1], got {self.target_accuracy}"
            )
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if problems:
            raise ConfigError("; ".join(problems))


def select_device(name: str = "auto") -> torch.device:
    """Return the requested device, or for 'auto' the best available: cuda, then mps, then cpu (chapter 3)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device auto or cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "device 'mps' was asked for but Apple's MPS is not available; use --device auto or cpu"
        )
    return torch.device(name)


@dataclass
class EpochRecord:
    """What one epoch did: losses and accuracies (fractions), learning rate, mean gradient norm, seconds."""

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
    """The per-epoch record of a run, and where it ran."""

    epochs: list[EpochRecord] = field(default_factory=list)
    device: str = ""
    stopped_because: str = ""

    def column(self, name: str) -> list[float]:
        """Return one field over all epochs, e.g. ``history.column('val_accuracy')``."""
        return [getattr(record, name) for record in self.epochs]

    @property
    def best_epoch(self) -> EpochRecord:
        """Return the record of the epoch with the lowest validation loss (a diverged, NaN epoch never wins)."""
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

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Return the path after writing the history as JSON."""
        return _write_atomically(
            Path(path), json.dumps(self.to_dict(), indent=2).encode()
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Return the history saved as JSON at ``path``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def format_epoch(record: EpochRecord, total_epochs: int) -> str:
    """Return the one-line summary printed after each epoch."""
    return (
        f"epoch {record.epoch:>2}/{total_epochs}  train loss {record.train_loss:.4f} "
        f"acc {record.train_accuracy:.2%}  val loss {record.val_loss:.4f} acc {record.val_accuracy:.2%}  "
        f"lr {record.lr:.2e}  grad {record.grad_norm:.2f}  {record.seconds:.1f} s"
    )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Return the configured optimiser; weight decay applies to weights only, not to biases or norms."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    if config.optimizer == "adam":
        # Adam adds the decay to the gradient (L2), unlike AdamW's decoupled decay.
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Return a scheduler that is stepped once per batch."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            **ONE_CYCLE,
        )
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=steps_per_epoch, gamma=0.7
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module,
    loader: DeviceLoader,
    criterion: nn.Module,
    autocast: Any = nullcontext,
) -> tuple[float, float]:
    """Return the mean loss and the accuracy (a fraction) of the model over a loader, in eval mode."""
    model.eval()
    total_loss = torch.zeros((), device=loader.device)
    correct = torch.zeros((), device=loader.device, dtype=torch.long)
    count = 0
    for images, labels in loader:
        with autocast():
            logits = model(images)
        total_loss += criterion(logits.float(), labels) * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        count += len(labels)
    return total_loss.item() / count, correct.item() / count


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics (chapter 3)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.average = copy.deepcopy(model)
        self.decay = decay
        self.steps = 0
        pairs = [
            (mean, value)
            for mean, value in zip(
                self.average.state_dict().values(), model.state_dict().values()
            )
        ]
        self.floats = [pair for pair in pairs if pair[0].is_floating_point()]
        self.counters = [pair for pair in pairs if not pair[0].is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the current weights."""
        # A long memory early on would drag the average back to the random start, so the decay
        # warms up from 0.1 towards its set value.
        weight = 1 - min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(
            [m for m, _ in self.floats], [v for _, v in self.floats], weight
        )
        for counter, value in self.counters:
            counter.copy_(value)
        self.steps += 1


def train_one_epoch(
    model: nn.Module,
    loader: DeviceLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: nn.Module,
    *,
    autocast: Callable[[], Any] = nullcontext,
    step_model: nn.Module | None = None,
    average: WeightAverage | None = None,
    channels_last: bool = False,
    progress: str | None = None,
) -> tuple[float, float, float, float]:
    """Return mean loss, accuracy, mean gradient norm and last learning rate of one pass over the loader (chapter 3)."""
    model.train()
    forward = step_model or model
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    grad_norm_sum = torch.zeros((), device=device)
    seen = 0
    # Sums stay on the device: a .item() per step would make the GPU wait for the CPU.
    for images, labels in tqdm(
        loader, desc=progress, leave=False, disable=progress is None, unit="batch"
    ):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = forward(images)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # An infinite max_norm measures the gradient norm without clipping it.
        grad_norm_sum += nn.utils.clip_grad_norm_(model.parameters(), math.inf)
        optimizer.step()
        last_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if average is not None:
            average.update()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
    return (
        loss_sum.item() / seen,
        correct.item() / seen,
        grad_norm_sum.item() / len(loader),
        last_lr,
    )


def fit(
    model: nn.Module,
    data: MnistData,
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    on_epoch_end: Callable[[nn.Module, EpochRecord], bool | None] | None = None,
    resume: Checkpoint | None = None,
    save_to: str | os.PathLike[str] | None = None,
    save_every: int = 1,
) -> History:
    """Return the history after training ``model`` in place; it ends with the best weights by validation loss (chapter 3).

    With ``config.ema_decay`` set, the weights evaluated, passed to ``on_epoch_end`` and kept are
    the moving average. ``on_epoch_end(model, record)`` returning True stops the run there.
    ``resume`` continues a saved run up to ``config.epochs`` epochs in all (see ``check_resumable``).
    With ``save_to``, a resumable checkpoint is written there every ``save_every`` epochs.
    """
    config = config or TrainConfig()
    device = select_device(config.device)
    _check_can_start(model, data, config, save_to, save_every)
    on_cuda = device.type == "cuda"
    channels_last = config.channels_last and device.type in ("cuda", "cpu")
    torch.manual_seed(config.seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    train_loader = DeviceLoader(
        data.train,
        batch_size=config.batch_size,
        normalization=data.normalization,
        device=device,
        shuffle=True,
        augment=config.augment,
        drop_last=True,
        seed=config.seed,
    )
    validation_loader = DeviceLoader(
        data.validation,
        batch_size=1000,
        normalization=data.normalization,
        device=device,
    )
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    average = (
        WeightAverage(model, config.ema_decay) if config.ema_decay is not None else None
    )
    evaluated = average.average if average is not None else model

    def autocast() -> Any:
        if on_cuda and config.mixed_precision:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    history = History(device=str(device))
    # Resuming, the checkpoint's weights are the best so far; its raw and averaged weights train on.
    best_state = copy.deepcopy(
        (evaluated if resume is None else resume.model).state_dict()
    )
    if resume is not None:
        _restore_training_state(
            resume, config, model, optimizer, scheduler, train_loader, average
        )
        history = copy.deepcopy(resume.history) or history
    if log:
        log(
            f"training {getattr(model, 'architecture', {}).get('name', type(model).__name__)} on {device} "
            f"({len(data.train):,} images, {len(train_loader)} steps of {config.batch_size} per epoch)"
        )

    step_model = torch.compile(model) if config.compile else model
    best_loss = min(history.column("val_loss"), default=math.inf)
    epochs_without_improvement = 0
    for epoch in range(len(history.epochs), config.epochs):
        started = time.perf_counter()
        train_loss, train_accuracy, grad_norm, lr = train_one_epoch(
            model,
            train_loader,
            optimizer,
            scheduler,
            criterion,
            autocast=autocast,
            step_model=step_model,
            average=average,
            channels_last=channels_last,
            progress=f"epoch {epoch + 1}/{config.epochs}" if progress else None,
        )
        val_loss, val_accuracy = loss_and_accuracy(
            evaluated, validation_loader, criterion, autocast
        )
        record = EpochRecord(
            epoch + 1,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
            lr,
            grad_norm,
            time.perf_counter() - started,
        )
        history.epochs.append(record)
        if log:
            log(format_epoch(record, config.epochs))
        stop_requested = on_epoch_end is not None and bool(
            on_epoch_end(evaluated, record)
        )
        if val_loss < best_loss:
            best_loss, epochs_without_improvement = val_loss, 0
            best_state = copy.deepcopy(evaluated.state_dict())
        else:
            epochs_without_improvement += 1
        if save_to is not None and record.epoch % save_every == 0:
            # Resumable: the best weights so far, and all it takes to go on from this epoch.
            state = _training_state(model, optimizer, scheduler, train_loader, average)
            _write_checkpoint(
                save_to,
                model.architecture,
                best_state,
                normalization=data.normalization,
                config=config,
                history=history,
                training_state=state,
            )
        if stop_requested:
            history.stopped_because = "stopped by on_epoch_end"
            break
        if (
            config.target_accuracy is not None
            and val_accuracy >= config.target_accuracy
        ):
            history.stopped_because = (
                f"validation accuracy reached {config.target_accuracy:.2%}"
            )
            break
        if (
            config.patience is not None
            and epochs_without_improvement >= config.patience
        ):
            history.stopped_because = (
                f"no better validation loss for {config.patience} epochs"
            )
            break
    else:
        history.stopped_because = "all epochs done"

    model.train_state = _training_state(
        model, optimizer, scheduler, train_loader, average
    )
    model.load_state_dict(best_state)
    model.eval()
    if log:
        restored = history.best_epoch.epoch if history.epochs else 0
        if restored != len(history.epochs):
            log(f"restored the weights of epoch {restored} (lowest validation loss)")
        log(f"stopped: {history.stopped_because}")
    return history


def _check_can_start(
    model: nn.Module,
    data: MnistData,
    config: TrainConfig,
    save_to: str | os.PathLike[str] | None,
    save_every: int,
) -> None:
    """Raise ConfigError when a run would fail before its first step or at its first checkpoint."""
    if config.batch_size > len(data.train):
        raise ConfigError(
            f"batch_size {config.batch_size} is more than the {len(data.train):,} training images; "
            f"use at most {len(data.train)}"
        )
    if save_to is not None and save_every < 1:
        raise ConfigError(f"save_every must be at least 1 (epochs), got {save_every}")
    if save_to is not None and getattr(model, "architecture", None) is None:
        raise ConfigError(
            "the model has no architecture record, so no checkpoint can be saved; "
            "build it with mnist_tutorial.build_model"
        )


def _training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: DeviceLoader,
    average: WeightAverage | None,
) -> dict[str, Any]:
    """Return what resuming needs besides the best weights: optimiser, schedule, random streams, raw and averaged weights."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"loader": loader.generator.get_state(), "torch": torch.get_rng_state()},
        "weights": copy.deepcopy(model.state_dict()),
        "average": copy.deepcopy(average.average.state_dict())
        if average is not None
        else None,
    }


def check_resumable(checkpoint: Checkpoint, config: TrainConfig) -> None:
    """Raise CheckpointError when training cannot go on from the checkpoint with this config (chapter 3).

    A resumed run continues the saved one up to ``config.epochs`` epochs in all and keeps the
    settings in RESUME_KEEPS. A one-cycle schedule is re-planned for the new number of epochs: the
    epochs still to run get the learning rates that a run planned that long has at those steps.
    """
    if checkpoint.training_state is None:
        raise CheckpointError(
            "this checkpoint holds no optimiser state (saved with --no-resumable), so training cannot "
            "resume from it; start a new run without --resume"
        )
    done = len(checkpoint.history.epochs) if checkpoint.history is not None else 0
    if config.epochs <= done:
        raise CheckpointError(
            f"the checkpoint's run is already at epoch {done}; set epochs above {done} to train more"
        )
    for name in RESUME_KEEPS if checkpoint.config is not None else ():
        saved, wanted = getattr(checkpoint.config, name), getattr(config, name)
        if saved != wanted:
            raise CheckpointError(
                f"the checkpoint's run has {name} {saved}, not {wanted}; a resumed run keeps its "
                f"{', '.join(RESUME_KEEPS)}"
            )
    if (
        config.ema_decay is not None
        and checkpoint.training_state.get("average") is None
    ):
        raise CheckpointError(
            "this checkpoint was trained without ema_decay; resume with ema_decay None"
        )


def _restore_training_state(
    resume: Checkpoint,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: DeviceLoader,
    average: WeightAverage | None,
) -> None:
    """Put optimiser, schedule, random streams, raw and averaged weights back where the checkpoint left them."""
    check_resumable(resume, config)
    state = resume.training_state
    try:
        optimizer.load_state_dict(state["optimizer"])
        schedule = state["scheduler"]
        if (
            isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
            and schedule["total_steps"] != scheduler.total_steps
        ):
            # Planned for another number of epochs. Made with last_epoch, a one-cycle schedule takes
            # its bounds from the restored optimiser and sets the learning rate of the step reached.
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=config.lr,
                total_steps=scheduler.total_steps,
                last_epoch=schedule["last_epoch"] - 1,
                **ONE_CYCLE,
            ).state_dict()
        scheduler.load_state_dict(schedule)
        # Restoring both random streams makes a resumed run match an uninterrupted one.
        loader.generator.set_state(state["rng"]["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        model.load_state_dict(state["weights"])
        if average is not None:
            average.average.load_state_dict(state["average"])
    except (
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        AttributeError,
        IndexError,
    ) as error:
        raise CheckpointError(
            f"the checkpoint's training state does not fit this run ({_first_line(error)}); "
            "start a new run without resume"
        ) from None
    if average is not None:
        average.steps = scheduler.last_epoch


class CheckpointError(MnistTutorialError, ValueError):
    """Raised when a file is missing, damaged, not a checkpoint, or does not fit its architecture."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model and everything saved beside its weights."""

    model: nn.Module
    architecture: dict[str, Any]
    normalization: tuple[float, float]
    config: TrainConfig | None
    history: History | None
    metrics: dict[str, Any]
    versions: dict[str, str]
    training_state: dict[str, Any] | None = None


def library_versions() -> dict[str, str]:
    """Return the versions of Python, PyTorch and torchvision in use."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def _write_atomically(path: Path, payload: bytes) -> Path:
    with replaced_atomically(path) as out:
        out.write(payload)
    return path


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    normalization: tuple[float, float],
    config: TrainConfig | None = None,
    history: History | None = None,
    metrics: dict[str, Any] | None = None,
    include_training_state: bool = True,
) -> Path:
    """Return the path after atomically writing weights, architecture, normalisation, config, history, metrics, versions."""
    architecture = getattr(model, "architecture", None)
    if architecture is None:
        raise ValueError(
            "the model has no architecture record; build it with mnist_tutorial.build_model"
        )
    train_state = (
        getattr(model, "train_state", None) if include_training_state else None
    )
    return _write_checkpoint(
        path,
        architecture,
        model.state_dict(),
        normalization=normalization,
        config=config,
        history=history,
        metrics=metrics,
        training_state=train_state,
    )


def _write_checkpoint(
    path: str | os.PathLike[str],
    architecture: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    *,
    normalization: tuple[float, float],
    config: TrainConfig | None = None,
    history: History | None = None,
    metrics: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Return the path after atomically writing a checkpoint of these weights, records and (optional) training state."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "architecture": architecture,
        "state_dict": {
            name: tensor.detach().cpu() for name, tensor in state_dict.items()
        },
        "normalization": list(normalization),
        "config": asdict(config) if config is not None else None,
        "history": history.to_dict() if history is not None else None,
        "metrics": metrics or {},
        "versions": library_versions(),
        "training_state": training_state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return _write_atomically(Path(path), buffer.getvalue())


def load_checkpoint(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> Checkpoint:
    """Return the checkpoint at ``path`` with its model rebuilt on ``device`` in eval mode (chapter 3).

    Every entry is checked before use, and the model's size before it is built: a damaged, foreign or
    crafted file raises CheckpointError, never runs code and never allocates more than MAX_PARAMETERS.
    """
    path = Path(path)
    payload = _read_payload(path)
    model = _rebuild_model(path, payload["architecture"], payload["state_dict"])
    model.to(device).eval()
    return Checkpoint(
        model=model,
        architecture=payload["architecture"],
        normalization=_checked_normalization(path, payload["normalization"]),
        config=_checked_config(path, payload.get("config")),
        history=_checked_history(path, payload.get("history")),
        metrics=payload.get("metrics") or {},
        versions=payload.get("versions") or {},
        training_state=payload.get("training_state"),
    )


def _first_line(error: BaseException, limit: int = 120) -> str:
    """Return the first non-empty line of an error's message (its type when it has none), at most ``limit`` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


def _read_payload(path: Path) -> dict[str, Any]:
    """Return the checked top level of a checkpoint file, read with weights_only=True after its format is recognised."""
    try:
        status = path.stat()
        # Checked before opening: opening a pipe would wait forever for a writer.
        if not stat.S_ISREG(status.st_mode):
            raise CheckpointError(
                f"{path} is a folder, a pipe or a device, not a checkpoint file; pass the .pt file "
                "that train wrote"
            )
        if status.st_size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"{path} is {status.st_size / 1e6:,.0f} MB, over the "
                f"{MAX_CHECKPOINT_BYTES / 1e6:,.0f} MB that a checkpoint of the book's models can "
                "need; it was not read"
            )
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint at {path}; train one with `python -m mnist_tutorial train --out {path}`"
        ) from None
    except OSError as error:
        raise CheckpointError(
            f"{path} cannot be read ({describe_os_error(error)}); check the path"
        ) from None
    if not head.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"{path} {_foreign_format(head)}")
    _check_archive(path, status.st_size)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = (
            f"asks to call {refused[1]} when loaded"
            if refused
            else "holds Python objects, not only tensors and plain data"
        )
        raise CheckpointError(
            f"{path} {what}; refused, it is not an mnist_tutorial checkpoint (only load files you trust)"
        ) from None
    except Exception as error:  # noqa: BLE001 - damaged bytes surface as many exception types
        raise CheckpointError(
            f"{path} is truncated or corrupt ({_first_line(error)}); re-save or re-train it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not an mnist_tutorial checkpoint "
            "(no 'format' entry); save one with mnist_tutorial.save_checkpoint"
        )
    for key, kind in [
        ("architecture", dict),
        ("state_dict", dict),
        ("normalization", (list, tuple)),
    ]:
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(
                f"{path} has no valid {key!r} entry; it is damaged or hand-made, "
                "save it with mnist_tutorial.save_checkpoint"
            )
    for key in ("config", "history", "metrics", "versions", "training_state"):
        if not isinstance(payload.get(key), (dict, type(None))):
            raise CheckpointError(
                f"{path}: its {key!r} entry is not a dict; it is damaged or hand-made, "
                "save it with mnist_tutorial.save_checkpoint"
            )
    return payload


def _foreign_format(head: bytes) -> str:
    """Return what a file that is not a PyTorch zip archive is, judged by its first bytes, and what to do."""
    if head.startswith(b"\x80"):
        return (
            "is a bare Python pickle or an old-format PyTorch file, not an mnist_tutorial checkpoint; it was not "
            "loaded (a pickle can run code)"
        )
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return "is a JSON file (a model card?), not a checkpoint; pass the .pt file that train wrote"
    return "is not a PyTorch checkpoint (unknown format); pass a .pt file written by train or save_checkpoint"


def _check_archive(path: Path, size: int) -> None:
    """Raise CheckpointError when a checkpoint's zip archive is damaged or would unpack to more than its own size."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({_first_line(error)}); re-save or re-train it"
        ) from None
    # torch.save stores every entry uncompressed; a compressed one could unpack to gigabytes.
    if (
        any(entry.compress_type != zipfile.ZIP_STORED for entry in entries)
        or sum(e.file_size for e in entries) > size
    ):
        raise CheckpointError(
            f"{path} holds compressed or oversized entries, which torch.save never writes "
            "(a decompression bomb?); it was not loaded"
        )


def _rebuild_model(
    path: Path, architecture: dict[str, Any], state_dict: dict[str, Any]
) -> nn.Module:
    """Return the architecture built and loaded with the weights, once its size and the weights are checked."""
    name, kwargs = architecture.get("name"), architecture.get("kwargs")
    described = reprlib.repr(architecture)
    if name not in available_models() or not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{path}: architecture {described} is not one of {', '.join(available_models())} "
            "with a dict of 'kwargs'; the file is damaged or hand-made"
        )
    try:
        # Built on the meta device first: sizes without memory, so a crafted file cannot ask for gigabytes.
        with torch.device("meta"):
            parameters = count_parameters(
                build_model(name, **kwargs), trainable_only=False
            )
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise CheckpointError(
            f"{path}: cannot rebuild architecture {described}: {_first_line(error)}"
        ) from None
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: architecture {described} would have {parameters:,} parameters, over the "
            f"{MAX_PARAMETERS:,} limit; it is no model of the book, check where the file came from"
        )
    model = build_model(name, **kwargs)
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, KeyError, AttributeError) as error:
        first = [line.strip() for line in str(error).splitlines() if line.strip()][
            1:2
        ] or [_first_line(error)]
        raise CheckpointError(
            f"{path}: the weights do not fit architecture {name!r} ({first[0][:160]})"
        ) from None
    broken = [
        key
        for key, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if broken:
        raise CheckpointError(
            f"{path}: the weights hold NaN or infinite values (in {broken[0]}), so the run had "
            "diverged; re-train with a lower lr or use an earlier checkpoint"
        )
    return model


def _checked_normalization(
    path: Path, values: list[Any] | tuple[Any, ...]
) -> tuple[float, float]:
    """Return the (mean, std) of pixels in [0, 1]; anything else raises CheckpointError."""
    try:
        mean, std = (float(value) for value in values)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{path}: normalization is {reprlib.repr(values)}, not (mean, std); "
            "re-save it with the data's normalization"
        ) from None
    if not (0 <= mean <= 1 and 0 < std <= 1):
        raise CheckpointError(
            f"{path}: normalization (mean {mean}, std {std}) is not that of pixels in [0, 1] "
            "(mean in [0, 1], std in (0, 1]); re-save it with the data's normalization"
        )
    return mean, std


def _checked_config(path: Path, data: dict[str, Any] | None) -> TrainConfig | None:
    """Return the saved training config, or None when there is none; an invalid one raises CheckpointError."""
    if not data:
        return None
    try:
        return TrainConfig(
            **{f.name: data[f.name] for f in fields(TrainConfig) if f.name in data}
        )
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: its training config is invalid ({_first_line(error)}); "
            "the file is damaged or hand-made"
        ) from None


def _checked_history(path: Path, data: dict[str, Any] | None) -> History | None:
    """Return the saved history, or None when there is none; one that is not numbers per epoch raises CheckpointError."""
    if not data:
        return None
    try:
        history = History.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        history = None
    if history is None or not all(
        isinstance(value, (int, float)) and not isinstance(value, bool)
        for record in history.epochs
        for value in asdict(record).values()
    ):
        raise CheckpointError(
            f"{path}: its history is invalid (each epoch must be the {len(fields(EpochRecord))} "
            "numbers that History.to_dict writes); the file is damaged or hand-made"
        )
    return history


def load_pretrained(
    name: str = "cnn", device: torch.device | str = "cpu"
) -> Checkpoint:
    """Return a shipped checkpoint (its model card is pretrained/NAME.json), ready for inference (chapter 4)."""
    if name not in PRETRAINED_NAMES:
        raise ValueError(
            f"no shipped model {name!r}; choose one of: {', '.join(PRETRAINED_NAMES)}"
        )
    return load_checkpoint(PRETRAINED_FOLDER / f"{name}.pt", device)
