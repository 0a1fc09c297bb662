"""Tests of mnist_tutorial.device: one rule for every ``device`` argument.

'auto' is the accelerator PyTorch reports, else the CPU; asking for a device the machine
lacks, or for no device at all, raises ConfigError. What PyTorch reports is patched, so
that each case runs on any machine.
"""

from __future__ import annotations

import pytest
import torch

from mnist_tutorial import Predictor, TrainConfig, build_model, fit
from mnist_tutorial.data import MnistData
from mnist_tutorial.device import select_device
from mnist_tutorial.errors import ConfigError


def report(monkeypatch: pytest.MonkeyPatch, accelerator: torch.device | None) -> None:
    """Make torch.accelerator report ``accelerator`` (None: the machine has none)."""
    monkeypatch.setattr(
        torch.accelerator,
        "current_accelerator",
        lambda check_available=False: accelerator,
    )


@pytest.mark.parametrize("accelerator", [None, "cuda", "mps"])
def test_cpu_is_always_there(
    monkeypatch: pytest.MonkeyPatch, accelerator: str | None
) -> None:
    report(monkeypatch, torch.device(accelerator) if accelerator else None)
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("accelerator", ["cuda", "mps"])
def test_auto_is_the_accelerator_torch_reports(
    monkeypatch: pytest.MonkeyPatch, accelerator: str
) -> None:
    report(monkeypatch, torch.device(accelerator))
    assert select_device("auto") == torch.device(accelerator)
    assert select_device() == torch.device(accelerator)
    assert select_device(accelerator) == torch.device(accelerator)


def test_auto_without_an_accelerator_is_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report(monkeypatch, None)
    assert select_device("auto") == torch.device("cpu")
    assert select_device() == torch.device("cpu")


def test_a_numbered_device_of_the_accelerators_kind_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report(monkeypatch, torch.device("cuda"))
    assert select_device("cuda:1") == torch.device("cuda", 1)


def test_an_accelerator_the_machine_lacks_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report(monkeypatch, None)
    with pytest.raises(ConfigError) as raised:
        select_device("cuda")
    assert str(raised.value) == (
        "device='cuda' was asked for but this machine has no accelerator; use "
        "device='auto' or device='cpu'"
    )
    with pytest.raises(ConfigError, match="device='mps' was asked for"):
        select_device("mps")


def test_an_accelerator_of_another_kind_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report(monkeypatch, torch.device("cuda"))
    with pytest.raises(ConfigError) as raised:
        select_device("mps")
    assert str(raised.value) == (
        "device='mps' was asked for but this machine has only cuda; use device='auto' "
        "or device='cpu'"
    )
    report(monkeypatch, torch.device("mps"))
    with pytest.raises(ConfigError, match="has only mps"):
        select_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "tpu", "", "cpu:x"])
def test_a_name_that_is_no_device_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    report(monkeypatch, torch.device("cuda"))
    with pytest.raises(ConfigError) as raised:
        select_device(name)
    assert str(raised.value) == (
        f"device={name!r} is no device; use device='auto', 'cpu', 'cuda' or 'mps'"
    )


def test_every_device_argument_follows_the_rule(
    no_accelerator: None, synthetic_mnist: MnistData
) -> None:
    model = build_model("mlp")
    with pytest.raises(ConfigError, match="device='cuda' was asked for"):
        Predictor(model, (0.1307, 0.3081), device="cuda")
    assert Predictor(model, (0.1307, 0.3081), device="auto").device == torch.device(
        "cpu"
    )
    config = TrainConfig(epochs=1, batch_size=50, augment=False, device="cuda")
    with pytest.raises(ConfigError, match="device='cuda' was asked for"):
        fit(model, synthetic_mnist, config, progress=False, log=None)
    auto = TrainConfig(epochs=1, batch_size=50, augment=False, device="auto")
    run = fit(model, synthetic_mnist, auto, progress=False, log=None)
    assert run.history.device == "cpu"
