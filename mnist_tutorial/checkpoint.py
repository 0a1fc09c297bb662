"""Checkpoints: the file format, saving and checked loading, and the shipped models
with their model cards (chapters 3 and 4)."""

from __future__ import annotations

import io
import json
import os
import pickle
import platform
import re
import reprlib
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torchvision

from .device import select_device
from .errors import MnistTutorialError, describe_os_error, first_line
from .files import write_atomically
from .model import (
    Architecture,
    Network,
    available_models,
    build_model,
    count_parameters,
    summarize,
)
from .novelty import NoveltyRule
from .records import EpochRecord, History, TrainConfig, TrainingState

CHECKPOINT_FORMAT = "mnist_tutorial.checkpoint/1"
PRETRAINED_FOLDER = Path(__file__).parent / "pretrained"
#: The shipped model that the book, ``predict`` and the demo use (recipe ``shipped``).
BOOK_MODEL = "cnn_large_half"
#: The shipped models: the book's model; the default cnn trained with coarse scans
#: (chapters 1 to 4 look inside it), four runs of the default recipe; three runs of
#: cnn_large (the recipe ``accurate``). Chapter 6 combines them into ensembles.
PRETRAINED_NAMES = (
    BOOK_MODEL,
    "cnn",
    "cnn_seed1",
    "cnn_seed2",
    "cnn_seed3",
    "cnn_seed4",
    "cnn_large",
    "cnn_large_seed1",
    "cnn_large_seed2",
)
#: A checkpoint asking for a bigger model is refused before any weight is allocated:
#: 23 times the book's largest model (cnn_large, 870k parameters), 80 MB of float32.
MAX_PARAMETERS = 20_000_000
#: A checkpoint file holds at most the weights five times over (best, raw and averaged
#: weights, two optimiser moments); larger files are refused before they are read.
MAX_CHECKPOINT_BYTES = 6 * 4 * MAX_PARAMETERS


#: The temperatures a checkpoint may hold: outside, the probabilities are all but
#: one-hot or all but uniform, which no fit on real data gives.
TEMPERATURE_RANGE = (0.05, 20.0)


class CheckpointError(MnistTutorialError, ValueError):
    """Raised when a file is missing, damaged, foreign, or does not fit its model."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model and all that was saved beside it."""

    model: Network
    architecture: Architecture
    normalization: tuple[float, float]
    config: TrainConfig | None
    history: History | None
    metrics: dict[str, Any]
    versions: dict[str, str]
    training_state: TrainingState | None = None
    temperature: float = 1.0
    """Divides the logits before the softmax; fitted on validation data (chapter 8)."""
    novelty_rule: NoveltyRule | None = None
    """When a Predictor abstains: "not a digit" (chapter 8); None never abstains."""


def library_versions() -> dict[str, str]:
    """Return the versions of Python, PyTorch and torchvision in use."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Network,
    *,
    normalization: tuple[float, float],
    config: TrainConfig | None = None,
    history: History | None = None,
    metrics: dict[str, Any] | None = None,
    training_state: TrainingState | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    temperature: float = 1.0,
    novelty_rule: NoveltyRule | None = None,
) -> Path:
    """Return the path after atomically writing a checkpoint of the model (chapter 3).

    It holds the weights (``weights`` instead of the model's own, when given), the
    architecture, the normalisation, the calibration ``temperature`` and the
    ``novelty_rule`` (chapter 8) and what else is passed: the config, the history,
    metrics and, to resume the run later, its ``training_state``.
    """
    if not isinstance(model, Network):
        raise CheckpointError(
            f"a {type(model).__name__} cannot be saved: it has no architecture to "
            "rebuild it from; build the model with mnist_tutorial.build_model"
        )
    state_dict = model.state_dict() if weights is None else weights
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "architecture": model.architecture,
        "state_dict": {
            name: tensor.detach().cpu() for name, tensor in state_dict.items()
        },
        "normalization": list(normalization),
        "config": asdict(config) if config is not None else None,
        "history": history.to_dict() if history is not None else None,
        "metrics": metrics or {},
        "versions": library_versions(),
        "training_state": training_state.to_dict() if training_state else None,
        "temperature": _checked_temperature(Path(path), temperature),
        "novelty_rule": novelty_rule.to_dict() if novelty_rule is not None else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomically(Path(path), buffer.getvalue())


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> Checkpoint:
    """Return the checkpoint at ``path``, its model on ``device``, in eval (chapter 3).

    Every entry is checked before use, and the model's size before it is built: a
    damaged, foreign or crafted file raises CheckpointError, never runs code and never
    allocates more than MAX_PARAMETERS."""
    path = Path(path)
    payload = _read_payload(path)
    model = _rebuild_model(path, payload["architecture"], payload["state_dict"])
    model.to(select_device(device)).eval()
    return Checkpoint(
        model=model,
        architecture=model.architecture,
        normalization=_checked_normalization(path, payload["normalization"]),
        config=_checked_config(path, payload.get("config")),
        history=_checked_history(path, payload.get("history")),
        metrics=payload.get("metrics") or {},
        versions=payload.get("versions") or {},
        training_state=_checked_training_state(path, payload.get("training_state")),
        # Checkpoints written before chapter 8 have none: their logits are used as
        # they are.
        temperature=_checked_temperature(path, payload.get("temperature", 1.0)),
        novelty_rule=_checked_novelty_rule(path, payload.get("novelty_rule")),
    )


def _read_payload(path: Path) -> dict[str, Any]:
    """Return a checkpoint file's checked top level, read with weights_only=True.

    The file's format is recognised before it is read.
    """
    try:
        status = path.stat()
        # Checked before opening: opening a pipe would wait forever for a writer.
        if not stat.S_ISREG(status.st_mode):
            raise CheckpointError(
                f"{path} is a folder, a pipe or a device, not a checkpoint file; pass "
                "the .pt file that train wrote"
            )
        if status.st_size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"{path} is {status.st_size / 1e6:,.0f} MB, over the "
                f"{MAX_CHECKPOINT_BYTES / 1e6:,.0f} MB that a checkpoint of the book's "
                "models can need; it was not read"
            )
        with path.open("rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint at {path}; check the path, or train a model and save it "
            "there"
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
            f"{path} {what}; refused, it is not an mnist_tutorial checkpoint (only "
            "load files you trust)"
        ) from None
    except Exception as error:  # damaged bytes surface as many exception types
        raise CheckpointError(
            f"{path} is truncated or corrupt ({first_line(error)}); re-save or "
            "re-train it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not an mnist_tutorial checkpoint (no "
            "'format' entry); save one with mnist_tutorial.save_checkpoint"
        )
    expected: list[tuple[str, type | tuple[type, ...]]] = [
        ("architecture", dict),
        ("state_dict", dict),
        ("normalization", (list, tuple)),
    ]
    for key, kind in expected:
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(
                f"{path} has no valid {key!r} entry; it is damaged or hand-made, save "
                "it with mnist_tutorial.save_checkpoint"
            )
    for key in ("config", "history", "metrics", "versions", "training_state"):
        if not isinstance(payload.get(key), (dict, type(None))):
            raise CheckpointError(
                f"{path}: its {key!r} entry is not a dict; it is damaged or hand-made, "
                "save it with mnist_tutorial.save_checkpoint"
            )
    return payload


def _foreign_format(head: bytes) -> str:
    """Return what a foreign file is, judged by its first bytes, and what to do."""
    if head.startswith(b"\x80"):
        return (
            "is a bare Python pickle or an old-format PyTorch file, not an "
            "mnist_tutorial checkpoint; it was not loaded (a pickle can run code)"
        )
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return (
            "is a JSON file (a model card?), not a checkpoint; pass the .pt file that "
            "train wrote"
        )
    return (
        "is not a PyTorch checkpoint (unknown format); pass a .pt file written by "
        "train or save_checkpoint"
    )


def _check_archive(path: Path, size: int) -> None:
    """Raise CheckpointError if the archive is damaged or would unpack to more bytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({first_line(error)}); re-save or "
            "re-train it"
        ) from None
    # torch.save stores every entry uncompressed; a compressed one could unpack to
    # gigabytes.
    if (
        any(entry.compress_type != zipfile.ZIP_STORED for entry in entries)
        or sum(e.file_size for e in entries) > size
    ):
        raise CheckpointError(
            f"{path} holds compressed or oversized entries, which torch.save never "
            "writes (a decompression bomb?); it was not loaded"
        )


def _rebuild_model(
    path: Path, architecture: dict[str, Any], state_dict: dict[str, Any]
) -> Network:
    """Return the model built and loaded, its size and its weights checked first."""
    name, kwargs = architecture.get("name"), architecture.get("kwargs")
    described = reprlib.repr(architecture)
    if name not in available_models() or not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{path}: architecture {described} is not one of "
            f"{', '.join(available_models())} with a dict of 'kwargs'; the file is "
            "damaged or hand-made"
        )
    try:
        # Built on the meta device first: sizes without memory, so a crafted file
        # cannot ask for gigabytes.
        with torch.device("meta"):
            parameters = count_parameters(
                build_model(name, **kwargs), trainable_only=False
            )
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise CheckpointError(
            f"{path}: cannot rebuild architecture {described}: {first_line(error)}"
        ) from None
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: architecture {described} would have {parameters:,} parameters, "
            f"over the {MAX_PARAMETERS:,} limit; it is no model of the book, check "
            "where the file came from"
        )
    model = build_model(name, **kwargs)
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, KeyError, AttributeError) as error:
        first = [line.strip() for line in str(error).splitlines() if line.strip()][
            1:2
        ] or [first_line(error)]
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
            f"{path}: the weights hold NaN or infinite values (in {broken[0]}), so the "
            "run had diverged; re-train with a lower lr or use an earlier checkpoint"
        )
    return model


def _checked_novelty_rule(path: Path, value: Any) -> NoveltyRule | None:
    """Return the stored NoveltyRule or None; a malformed one raises CheckpointError."""
    if value is None:
        return None
    try:
        return NoveltyRule.from_dict(value if isinstance(value, dict) else {})
    except ValueError as error:
        raise CheckpointError(
            f"{path}: its novelty_rule entry is damaged ({error}); fit it again with "
            "the calibrate command"
        ) from None


def _checked_temperature(path: Path, value: Any) -> float:
    """Return a temperature within TEMPERATURE_RANGE; else raise CheckpointError."""
    low, high = TEMPERATURE_RANGE
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not low <= value <= high
    ):
        raise CheckpointError(
            f"{path}: temperature is {reprlib.repr(value)}, not a number from {low} to "
            f"{high}; fit it again with mnist_tutorial.fit_temperature"
        )
    return float(value)


def _checked_normalization(
    path: Path, values: list[Any] | tuple[Any, ...]
) -> tuple[float, float]:
    """Return the (mean, std) of pixels in [0, 1]; else raise CheckpointError."""
    try:
        mean, std = (float(value) for value in values)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{path}: normalization is {reprlib.repr(values)}, not (mean, std); "
            "re-save it with the data's normalization"
        ) from None
    if not (0 <= mean <= 1 and 0 < std <= 1):
        raise CheckpointError(
            f"{path}: normalization (mean {mean}, std {std}) is not that of pixels in "
            "[0, 1] (mean in [0, 1], std in (0, 1]); re-save it with the data's "
            "normalization"
        )
    return mean, std


def _checked_config(path: Path, data: dict[str, Any] | None) -> TrainConfig | None:
    """Return the saved config or None; an invalid one raises CheckpointError."""
    if not data:
        return None
    try:
        return TrainConfig(
            **{f.name: data[f.name] for f in fields(TrainConfig) if f.name in data}
        )
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: its training config is invalid ({first_line(error)}); the file "
            "is damaged or hand-made"
        ) from None


def _checked_history(path: Path, data: dict[str, Any] | None) -> History | None:
    """Return the saved history or None; an invalid one raises CheckpointError."""
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
            f"{path}: its history is invalid (each epoch must be the "
            f"{len(fields(EpochRecord))} numbers that History.to_dict writes); the "
            "file is damaged or hand-made"
        )
    return history


def _checked_training_state(
    path: Path, data: dict[str, Any] | None
) -> TrainingState | None:
    """Return the saved training state or None; a broken one raises CheckpointError."""
    if data is None:
        return None
    try:
        return TrainingState.from_dict(data)
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path}: its training state lacks {first_line(error)}; the file is "
            "damaged or hand-made, start a new run instead of resuming this one"
        ) from None


def load_pretrained(
    name: str = BOOK_MODEL, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Return a shipped checkpoint, its model in eval mode on ``device`` (chapter 4)."""
    return load_checkpoint(_pretrained_file(name, ".pt"), device)


def pretrained_card(name: str = BOOK_MODEL) -> dict[str, Any]:
    """Return a shipped model's card: how it was made, how good it is (chapter 4)."""
    card: dict[str, Any] = json.loads(_pretrained_file(name, ".json").read_text())
    return card


def _pretrained_file(name: str, suffix: str) -> Path:
    """Return a shipped model's file; an unknown name raises CheckpointError."""
    if name not in PRETRAINED_NAMES:
        raise CheckpointError(
            f"no shipped model {name!r}; choose one of: {', '.join(PRETRAINED_NAMES)}"
        )
    return PRETRAINED_FOLDER / f"{name}{suffix}"


def model_card(
    model: Network,
    config: TrainConfig,
    history: History,
    metrics: dict[str, Any],
    *,
    command: str,
) -> dict[str, Any]:
    """Return a trained model's card: how it was made and how good it is (chapter 3).

    ``metrics`` holds ``test_accuracy``, ``test_errors``, ``train_seconds`` and
    ``best_epoch``; ``command`` is what was run to make it.
    """
    return {
        "architecture": model.architecture,
        "parameters": count_parameters(model),
        "multiply_adds": sum(row.multiply_adds for row in summarize(model)),
        "command": command,
        "config": asdict(config),
        "seed": config.seed,
        "epochs_run": len(history.epochs),
        "device": history.device,
        "train_seconds": metrics["train_seconds"],
        "test_accuracy": metrics["test_accuracy"],
        "test_errors": metrics["test_errors"],
        "best_epoch": metrics["best_epoch"],
        "history": history.to_dict()["epochs"],
        "versions": library_versions(),
    }


def write_model_card(path: str | os.PathLike[str], card: dict[str, Any]) -> Path:
    """Return the path after atomically writing a model card as JSON."""
    return write_atomically(Path(path), (json.dumps(card, indent=2) + "\n").encode())
