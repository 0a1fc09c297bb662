"""Where the work runs: one rule for every function that takes a ``device``."""

from __future__ import annotations

from typing import Literal

import torch

from .errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def select_device(device: str | torch.device = "auto") -> torch.device:
    """Return the device to use: for 'auto' the accelerator, else the CPU (chapter 3).

    The accelerator is what PyTorch reports for this machine (a CUDA GPU, Apple's MPS,
    ...). Asking for a device the machine does not have raises ConfigError."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if device == "auto":
        return accelerator or torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={device!r} is no device; use device='auto', 'cpu', 'cuda' or 'mps'"
        ) from None
    if chosen.type != "cpu" and (
        accelerator is None or accelerator.type != chosen.type
    ):
        present = f"only {accelerator.type}" if accelerator else "no accelerator"
        raise ConfigError(
            f"device={device!r} was asked for but this machine has {present}; use "
            "device='auto' or device='cpu'"
        )
    return chosen
