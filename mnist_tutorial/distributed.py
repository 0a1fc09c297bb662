"""Data-parallel training over processes: torchrun and DistributedDataParallel.

Chapter 3 teaches it. ``fit`` calls ``data_parallel``: started by ``torchrun
--nproc-per-node N`` (or inside a process group the caller made), every process trains
the same model on its own share of each batch and the gradients are averaged.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError

#: How long a process waits at a collective (an all-reduce, a broadcast) before it
#: fails instead of hanging. A process that dies is noticed within seconds (torchrun
#: ends the others, Gloo sees the closed connection); this is the backstop.
TIMEOUT = datetime.timedelta(minutes=5)

#: What torchrun sets for every process it starts.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Processes:
    """This process's place in a data-parallel run (chapter 3)."""

    rank: int
    world_size: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Return True for rank 0, the one that prints and writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Return True in a process that torchrun started with at least one other."""
    return (
        all(name in os.environ for name in TORCHRUN_VARIABLES)
        and int(os.environ["WORLD_SIZE"]) > 1
    )


def process_rank() -> int:
    """Return this process's rank: 0 unless it is one of several (chapter 3)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def process_device(device: torch.device) -> torch.device:
    """Return this process's device: its own GPU under torchrun, else ``device``."""
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(
            f"data-parallel training runs on CUDA GPUs or on CPUs, not on "
            f"{device.type}; use device='cpu' or start one process"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"process {local_rank} on this machine has no GPU of its own (there are "
            f"{torch.cuda.device_count()}); start at most that many processes per node"
        )
    return torch.device("cuda", local_rank)


@contextmanager
def data_parallel(
    device: torch.device,
) -> Iterator[tuple[Processes | None, torch.device]]:
    """Yield this process's place in the run (None alone) and its device (chapter 3).

    Uses the process group the caller initialised; under torchrun joins one (NCCL for
    CUDA, Gloo for CPUs) and leaves it when the run ends; otherwise the run is one
    process.
    """
    joined = False
    if not (dist.is_available() and dist.is_initialized()):
        if not launched_by_torchrun():
            yield None, device
            return
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT
        )
        joined = True
    device = process_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    yield Processes(dist.get_rank(), dist.get_world_size(), dist.get_backend()), device
    # Not on an error: leaving would wake the others with a lost connection before this
    # process has printed its own error. Its exit closes the group after that.
    if joined:
        dist.destroy_process_group()


def sum_over_processes(values: torch.Tensor) -> torch.Tensor:
    """Return ``values`` summed over all processes (as they are in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
    return values


def any_process(flag: bool, device: torch.device) -> bool:
    """Return True if ``flag`` is True in any process, so that all act alike."""
    return bool(sum_over_processes(torch.tensor(int(flag), device=device)) > 0)


@torch.no_grad()
def copy_buffers_from_first(module: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm's running statistics).

    Each process updates them from its own images; the parameters need no copy,
    DistributedDataParallel keeps them equal."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
