"""Controlled experiments: variants of one recipe, compared in one table (chapter 6).

Every variant is trained from the same seed on the same data. A variant is a flat
mapping of changes to the base recipe. A key that names a ``TrainConfig`` field changes
the training (``{"optimizer": "sgd", "lr": 0.05}``), ``"model"`` picks another
architecture (``{"model": "lenet5"}``), and any other key is an argument of the
architecture's builder (``{"dropout": 0.5}``). The module needs the book's extra library
pandas; the rest of the package does not import it.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from .data import MnistData, Split
from .model import DEFAULT_MODEL, MODELS, build_model, count_parameters
from .records import History, TrainConfig
from .train import fit

Changes = Mapping[str, Any]
CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainConfig))


def subset(data: MnistData, train_size: int, *, seed: int = 0) -> MnistData:
    """Return the data with a stratified sample of its training images (chapter 6).

    The sample has ``train_size`` images, drawn with ``seed``; the rest is unchanged.
    """
    labels = data.train.labels.numpy()
    if not 10 <= train_size <= len(labels):
        raise ValueError(
            f"train_size must be between 10 and {len(labels):,}, got {train_size:,}"
        )
    if train_size == len(labels):
        return data
    chosen, _ = train_test_split(
        np.arange(len(labels)),
        train_size=train_size,
        stratify=labels,
        random_state=seed,
    )
    index = torch.from_numpy(np.sort(chosen))
    return dataclasses.replace(
        data, train=Split(data.train.images[index], data.train.labels[index])
    )


def split_changes(changes: Changes) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Return a variant's architecture, builder arguments and TrainConfig changes.

    Chapter 6 names all three in one flat mapping.
    """
    architecture = changes.get("model", DEFAULT_MODEL)
    model_kwargs = {
        key: value
        for key, value in changes.items()
        if key != "model" and key not in CONFIG_FIELDS
    }
    config_changes = {
        key: value for key, value in changes.items() if key in CONFIG_FIELDS
    }
    return architecture, model_kwargs, config_changes


@dataclass(frozen=True)
class Result:
    """One finished run (chapter 6).

    Its architecture, size, training settings, history and wall-clock seconds.
    """

    architecture: str
    model_kwargs: dict[str, Any]
    config: TrainConfig
    parameters: int
    history: History
    seconds: float

    def setting(self, key: str) -> Any:
        """Return the value this run used for a variant key, or None if it has none.

        The key is a config field, "model", or an argument of the architecture's
        builder.
        """
        if key == "model":
            return self.architecture
        if key in CONFIG_FIELDS:
            return getattr(self.config, key)
        if key in self.model_kwargs:
            return self.model_kwargs[key]
        parameter = inspect.signature(MODELS[self.architecture]).parameters.get(key)
        return parameter.default if parameter is not None else None


def run_experiment(
    data: MnistData, changes: Changes | None = None, *, base: TrainConfig | None = None
) -> Result:
    """Return the result of training a fresh model with ``changes`` (chapter 6).

    The changes are applied to ``base``.
    """
    architecture, model_kwargs, config_changes = split_changes(changes or {})
    config = dataclasses.replace(base or TrainConfig(), **config_changes)
    # fit seeds shuffling, augmentation and dropout; seeding here as well gives every
    # variant of an architecture the same initial weights, so only the change differs.
    torch.manual_seed(config.seed)
    model = build_model(architecture, **model_kwargs)
    started = time.perf_counter()
    history = fit(model, data, config, progress=False, log=None).history
    return Result(
        architecture,
        model_kwargs,
        config,
        count_parameters(model),
        history,
        time.perf_counter() - started,
    )


def _cache_key(changes: Changes, base: TrainConfig) -> str:
    """Return a key that is equal for two variants exactly when they train alike."""
    architecture, model_kwargs, config_changes = split_changes(changes)
    config = dataclasses.replace(base, **config_changes)
    return repr(
        (
            architecture,
            sorted(model_kwargs.items()),
            sorted(dataclasses.asdict(config).items()),
        )
    )


def compare(
    data: MnistData,
    variants: Mapping[str, Changes],
    *,
    base: TrainConfig | None = None,
    cache: MutableMapping[str, Result] | None = None,
    log: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Return a table with one row per variant (chapter 6).

    Each row has the settings the variant changed, its size, and the final losses,
    accuracy and time. The accuracy and losses are those of the weights ``fit`` keeps
    (the epoch with the lowest validation loss). A ``cache`` shared between calls on the
    same data trains each distinct setting once, e.g. the base recipe that every
    comparison contains.
    """
    base = base or TrainConfig()
    cache = {} if cache is None else cache
    changed_keys = list(
        dict.fromkeys(key for changes in variants.values() for key in changes)
    )
    rows = []
    for name, changes in variants.items():
        key = _cache_key(changes, base)
        reused = key in cache
        if not reused:
            cache[key] = run_experiment(data, changes, base=base)
        result = cache[key]
        best = result.history.best_epoch
        rows.append(
            {
                "variant": name,
                **{key: result.setting(key) for key in changed_keys},
                "parameters": result.parameters,
                "train loss": round(best.train_loss, 4),
                "val loss": round(best.val_loss, 4),
                "val accuracy (%)": round(100 * best.val_accuracy, 2),
                "seconds": round(result.seconds, 1),
            }
        )
        if log:
            log(
                f"{name:<22} val accuracy {best.val_accuracy:.2%}  "
                + (
                    "(same settings as an earlier run: reused)"
                    if reused
                    else f"({result.seconds:.1f} s)"
                )
            )
    return pd.DataFrame(rows).set_index("variant")
