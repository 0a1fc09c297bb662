"""Training: the loop, its optimiser and schedule, and resuming a run (chapter 3)."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, CheckpointError, save_checkpoint
from .data import DeviceLoader, MnistData
from .device import select_device
from .distributed import (
    Processes,
    any_process,
    copy_buffers_from_first,
    data_parallel,
    sum_over_processes,
)
from .errors import ConfigError, first_line
from .model import Network
from .records import EpochRecord, History, TrainConfig, TrainingRun, TrainingState

#: What a resumed run keeps from the run it continues: changing them would not continue
#: it.
RESUME_KEEPS = (
    "optimizer",
    "schedule",
    "lr",
    "batch_size",
    "weight_decay",
    "ema_decay",
    "seed",
)


def format_epoch(record: EpochRecord, total_epochs: int) -> str:
    """Return the one-line summary printed after each epoch."""
    return (
        f"epoch {record.epoch:>2}/{total_epochs}  train loss {record.train_loss:.4f} "
        f"acc {record.train_accuracy:.2%}  val loss {record.val_loss:.4f} acc "
        f"{record.val_accuracy:.2%}  lr {record.lr:.2e}  grad {record.grad_norm:.2f}  "
        f"{record.seconds:.1f} s"
    )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Return the optimiser; only weights decay, not biases or norms (chapter 3)."""
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
        return one_cycle(optimizer, config.lr, config.epochs * steps_per_epoch)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=steps_per_epoch, gamma=0.7
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr: float | list[float],
    total_steps: int,
    last_epoch: int = -1,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """Return the book's one-cycle schedule over ``total_steps`` steps (chapter 3).

    The first 20% of the steps warm up from lr/10 to lr, the rest anneal to lr/1000.
    """
    # A warm-up of exactly one step makes OneCycleLR divide by zero: it gets two.
    warm_up = 0.2 if 0.2 * total_steps != 1 else 0.4
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        last_epoch=last_epoch,
        pct_start=warm_up,
        anneal_strategy="linear",
        div_factor=10.0,
        final_div_factor=100.0,
    )


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module,
    loader: DeviceLoader,
    criterion: nn.Module,
    autocast: Any = nullcontext,
) -> tuple[float, float]:
    """Return the mean loss and accuracy (a fraction) over a loader, in eval mode.

    In a data-parallel run each process scores its shard and the sums are shared, so
    all processes return the figures of the whole split."""
    model.eval()
    # Loss, correct answers and images, summed in float64: counts stay exact.
    totals = torch.zeros(3, device=loader.device, dtype=torch.float64)
    for images, labels in loader:
        with autocast():
            logits = model(images)
        totals[0] += criterion(logits.float(), labels) * len(labels)
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += len(labels)
    loss_sum, correct, count = sum_over_processes(totals).tolist()
    return loss_sum / count, correct / count


class WeightAverage:
    """A moving average of a model's weights and BatchNorm statistics (chapter 3)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.average = copy.deepcopy(model)
        self.decay = decay
        self.steps = 0
        pairs = list(
            zip(
                self.average.state_dict().values(),
                model.state_dict().values(),
                strict=True,
            )
        )
        self.floats = [pair for pair in pairs if pair[0].is_floating_point()]
        self.counters = [pair for pair in pairs if not pair[0].is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the current weights."""
        # A long memory early on would drag the average back to the random start, so the
        # decay warms up from 0.1 towards its set value.
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
    step_model: Callable[[torch.Tensor], torch.Tensor] | None = None,
    average: WeightAverage | None = None,
    channels_last: bool = False,
    progress: str | None = None,
) -> tuple[float, float, float, float]:
    """Return mean loss, accuracy, gradient norm and last lr of an epoch (chapter 3).

    In a data-parallel run, ``step_model`` is the DistributedDataParallel wrapper and
    the loss and accuracy are those of all processes' images."""
    model.train()
    forward = step_model or model
    device = loader.device
    # Loss, correct answers and images, summed in float64: counts stay exact.
    totals = torch.zeros(3, device=device, dtype=torch.float64)
    grad_norm_sum = torch.zeros((), device=device)
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
        totals[0] += loss.detach() * len(labels)
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += len(labels)
    loss_sum, correct, seen = sum_over_processes(totals).tolist()
    # The gradients were averaged over the processes: their norm is the same in each.
    return loss_sum / seen, correct / seen, grad_norm_sum.item() / len(loader), last_lr


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
) -> TrainingRun:
    """Return the run's history and training state after training ``model`` (chapter 3).

    The model is trained in place and ends with its best weights by validation loss.
    With ``config.ema_decay`` set, the weights evaluated, passed to ``on_epoch_end`` and
    kept are the moving average. ``on_epoch_end(model, record)`` returning True stops
    the run there. ``resume`` continues a saved run up to ``config.epochs`` epochs in
    all (see ``check_resumable``). With ``save_to``, a resumable checkpoint is written
    there every ``save_every`` epochs. Started by torchrun, every process trains on its
    share of each batch of ``config.batch_size`` (see ``data_parallel``); only rank 0
    logs and saves."""
    config = config or TrainConfig()
    with data_parallel(select_device(config.device)) as (processes, device):
        _check_can_start(model, data, config, save_to, save_every, processes)
        if processes is not None and not processes.is_main:
            progress, log, save_to = False, None, None
        on_cuda = device.type == "cuda"
        channels_last = config.channels_last and device.type in ("cuda", "cpu")
        torch.manual_seed(config.seed)
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        train_loader, validation_loader = make_loaders(data, config, device, processes)
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config, len(train_loader))
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        average = (
            WeightAverage(model, config.ema_decay)
            if config.ema_decay is not None
            else None
        )
        evaluated = average.average if average is not None else model

        def autocast() -> AbstractContextManager[Any]:
            if on_cuda and config.mixed_precision:
                return torch.autocast("cuda", dtype=torch.bfloat16)
            return nullcontext()

        history = History(device=str(device))
        # Resuming, the checkpoint's weights are the best so far; its raw and averaged
        # weights train on.
        best_state = copy.deepcopy(
            (evaluated if resume is None else resume.model).state_dict()
        )
        if resume is not None:
            check_resumable(resume, config)
            assert resume.training_state is not None  # check_resumable made sure
            restore_training_state(
                resume.training_state,
                model,
                optimizer,
                scheduler,
                train_loader,
                average,
            )
            history = copy.deepcopy(resume.history) or history
        if log:
            log(describe_run(model, data, config, device, processes, len(train_loader)))

        # The wrapper averages the gradients of all processes during backward().
        wrapped = (
            DistributedDataParallel(model, device_ids=[device] if on_cuda else None)
            if processes is not None
            else model
        )
        step_model = torch.compile(wrapped) if config.compile else wrapped
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
            # Each process updated BatchNorm's statistics from its own images: all
            # evaluate, and keep, rank 0's.
            copy_buffers_from_first(evaluated)
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
            stop_requested = any_process(
                on_epoch_end is not None and bool(on_epoch_end(evaluated, record)),
                device,
            )
            if val_loss < best_loss:
                best_loss, epochs_without_improvement = val_loss, 0
                best_state = copy.deepcopy(evaluated.state_dict())
            else:
                epochs_without_improvement += 1
            if save_to is not None and record.epoch % save_every == 0:
                assert isinstance(model, Network)  # _check_can_start made sure
                # Resumable: the best weights so far, and all it takes to go on.
                save_checkpoint(
                    save_to,
                    model,
                    weights=best_state,
                    normalization=data.normalization,
                    config=config,
                    history=history,
                    training_state=capture_training_state(
                        model, optimizer, scheduler, train_loader, average
                    ),
                )
            history.stopped_because = _reason_to_stop(
                config, stop_requested, val_accuracy, epochs_without_improvement
            )
            if history.stopped_because:
                break
        else:
            history.stopped_because = "all epochs done"

    state = capture_training_state(model, optimizer, scheduler, train_loader, average)
    model.load_state_dict(best_state)
    model.eval()
    if log:
        restored = history.best_epoch.epoch if history.epochs else 0
        if restored != len(history.epochs):
            log(f"restored the weights of epoch {restored} (lowest validation loss)")
        log(f"stopped: {history.stopped_because}")
    return TrainingRun(history, state)


def make_loaders(
    data: MnistData,
    config: TrainConfig,
    device: torch.device,
    processes: Processes | None,
) -> tuple[DeviceLoader, DeviceLoader]:
    """Return this process's training and validation loaders (chapter 3).

    In a data-parallel run each process gets its shard of every batch of
    ``config.batch_size``."""
    shard = (processes.rank, processes.world_size) if processes else (0, 1)
    train_loader = DeviceLoader(
        data.train,
        batch_size=config.batch_size // shard[1],
        normalization=data.normalization,
        device=device,
        shuffle=True,
        augment=config.augment,
        elastic=config.elastic,
        coarse_share=config.coarse_scans,
        drop_last=True,
        seed=config.seed,
        shard=shard,
    )
    validation_loader = DeviceLoader(
        data.validation,
        batch_size=1000,
        normalization=data.normalization,
        device=device,
        shard=shard,
    )
    return train_loader, validation_loader


def describe_run(
    model: nn.Module,
    data: MnistData,
    config: TrainConfig,
    device: torch.device,
    processes: Processes | None,
    steps: int,
) -> str:
    """Return the line ``fit`` prints before the first epoch: what, where, how."""
    name = model.architecture["name"] if isinstance(model, Network) else "model"
    if processes is None:
        return (
            f"training {name} on {device} ({len(data.train):,} images, "
            f"{steps} steps of {config.batch_size} per epoch)"
        )
    count = processes.world_size
    return (
        f"training {name} data-parallel on {count} process{'es' * (count > 1)} "
        f"({device.type}, "
        f"{processes.backend}): {len(data.train):,} images, {steps} steps per epoch "
        f"of {config.batch_size} = {count} x {config.batch_size // count} per "
        f"process, peak lr {config.lr:.2e}, as for one process"
    )


def _reason_to_stop(
    config: TrainConfig,
    stop_requested: bool,
    val_accuracy: float,
    epochs_without_improvement: int,
) -> str:
    """Return why the run stops after this epoch, or "" when it goes on."""
    if stop_requested:
        return "stopped by on_epoch_end"
    if config.target_accuracy is not None and val_accuracy >= config.target_accuracy:
        return f"validation accuracy reached {config.target_accuracy:.2%}"
    if config.patience is not None and epochs_without_improvement >= config.patience:
        return f"no better validation loss for {config.patience} epochs"
    return ""


def _check_can_start(
    model: nn.Module,
    data: MnistData,
    config: TrainConfig,
    save_to: str | os.PathLike[str] | None,
    save_every: int,
    processes: Processes | None,
) -> None:
    """Raise ConfigError if a run would fail at its first step or checkpoint."""
    count = processes.world_size if processes is not None else 1
    if config.batch_size % count or config.batch_size // count < 2:
        fitting = max(2, config.batch_size // count + 1) * count
        raise ConfigError(
            f"batch_size={config.batch_size} does not split into {count} equal "
            "per-process batches of at least 2 (BatchNorm needs two images); use a "
            f"multiple of {count} such as {fitting}"
        )
    if config.batch_size > len(data.train):
        raise ConfigError(
            f"batch_size={config.batch_size} is more than the {len(data.train):,} "
            f"training images; use at most {len(data.train)}"
        )
    if save_to is not None and save_every < 1:
        raise ConfigError(f"save_every must be at least 1 (epochs), got {save_every}")
    if config.coarse_scans > 0 and data.train.coarse is None:
        raise ConfigError(
            f"coarse_scans={config.coarse_scans} needs coarse scans of the training "
            "digits; pass mnist_tutorial.coarse.with_coarse_scans(data), which makes "
            "them (minutes), or set coarse_scans=0"
        )
    if save_to is not None and not isinstance(model, Network):
        raise ConfigError(
            f"a {type(model).__name__} has no architecture to rebuild it from, so no "
            "checkpoint can be saved; build the model with mnist_tutorial.build_model"
        )


def capture_training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: DeviceLoader,
    average: WeightAverage | None,
) -> TrainingState:
    """Return all a run needs to go on besides its best weights (chapter 3)."""
    return TrainingState(
        optimizer=copy.deepcopy(optimizer.state_dict()),
        scheduler=scheduler.state_dict(),
        rng={"loader": loader.generator.get_state(), "torch": torch.get_rng_state()},
        weights=copy.deepcopy(model.state_dict()),
        average=(
            copy.deepcopy(average.average.state_dict()) if average is not None else None
        ),
    )


def restore_training_state(
    state: TrainingState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: DeviceLoader,
    average: WeightAverage | None,
) -> None:
    """Put back what ``capture_training_state`` took; a misfit raises CheckpointError.

    A one-cycle schedule planned for another number of steps is re-planned for this
    run's: the steps still to go get the learning rates a run planned that long has at
    them."""
    try:
        optimizer.load_state_dict(state.optimizer)
        schedule = state.scheduler
        if (
            isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
            and schedule["total_steps"] != scheduler.total_steps
        ):
            # Made with last_epoch, a one-cycle schedule takes its bounds from the
            # restored optimiser and sets the learning rate of the step reached.
            schedule = one_cycle(
                optimizer,
                [group["max_lr"] for group in optimizer.param_groups],
                scheduler.total_steps,
                last_epoch=schedule["last_epoch"] - 1,
            ).state_dict()
        scheduler.load_state_dict(schedule)
        loader.generator.set_state(state.rng["loader"])
        torch.set_rng_state(state.rng["torch"])
        model.load_state_dict(state.weights)
        if average is not None and state.average is not None:
            average.average.load_state_dict(state.average)
    except (
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        AttributeError,
        IndexError,
    ) as error:
        raise CheckpointError(
            f"the saved training state does not fit this run ({first_line(error)}); "
            "start a new run (resume=None)"
        ) from None
    if average is not None:
        average.steps = scheduler.last_epoch


def check_resumable(checkpoint: Checkpoint, config: TrainConfig) -> None:
    """Raise CheckpointError if training cannot resume from a checkpoint (chapter 3).

    A resumed run continues the saved one up to ``config.epochs`` epochs in all and
    keeps the settings in RESUME_KEEPS."""
    if checkpoint.training_state is None:
        raise CheckpointError(
            "this checkpoint holds no training state (saved with training_state=None), "
            "so training cannot resume from it; start a new run (resume=None)"
        )
    done = len(checkpoint.history.epochs) if checkpoint.history is not None else 0
    if config.epochs <= done:
        raise CheckpointError(
            f"the checkpoint's run is already at epoch {done}; set epochs above {done} "
            "to train more"
        )
    for name in RESUME_KEEPS if checkpoint.config is not None else ():
        saved, wanted = getattr(checkpoint.config, name), getattr(config, name)
        if saved != wanted:
            raise CheckpointError(
                f"the checkpoint's run has {name} {saved}, not {wanted}; a resumed run "
                f"keeps its {', '.join(RESUME_KEEPS)}"
            )
    if config.ema_decay is not None and checkpoint.training_state.average is None:
        raise CheckpointError(
            "this checkpoint was trained without a moving average; resume with "
            "ema_decay=None"
        )
