"""The shipped model: it loads for inference and is as good as its model card says."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mnist_tutorial import load_pretrained
from mnist_tutorial.evaluate import (
    accuracy,
    average_predictions,
    choose_ensemble,
    ensemble_candidates,
    predict_split,
)
from mnist_tutorial.train import PRETRAINED_FOLDER, PRETRAINED_NAMES, PRETRAINED_PATH

ROOT = PRETRAINED_FOLDER.parent.parent
CARD = json.loads(PRETRAINED_PATH.with_suffix(".json").read_text())


def test_the_shipped_model_is_small() -> None:
    assert PRETRAINED_PATH.stat().st_size < 3 * 2**20


def test_the_card_states_how_it_was_made() -> None:
    assert CARD["command"].startswith("python -m mnist_tutorial train")
    assert {
        "config",
        "seed",
        "epochs_run",
        "train_seconds",
        "device",
        "versions",
        "test_accuracy",
    } <= set(CARD)
    assert CARD["test_accuracy"] >= 0.996


def test_unknown_shipped_model_names_the_choices() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"no shipped model 'best'; choose one of: {', '.join(PRETRAINED_NAMES)}"
        ),
    ):
        load_pretrained("best")


def test_the_ensemble_members_are_inference_only_files_made_by_the_command_on_their_card() -> (
    None
):
    for name in PRETRAINED_NAMES:
        path = PRETRAINED_FOLDER / f"{name}.pt"
        if path == PRETRAINED_PATH:
            continue  # the book's model keeps its training state: chapter 3 resumes it
        card = json.loads(path.with_suffix(".json").read_text())
        assert path.stat().st_size < 4 * 2**20
        assert torch.load(path, weights_only=True)["training_state"] is None
        assert (
            card["command"].startswith("python -m mnist_tutorial train")
            and f"--out {path.relative_to(ROOT)}" in card["command"]
        )


def test_each_shipped_model_scores_its_card_and_the_ensemble_chosen_on_validation_reaches_99_7(
    mnist,
) -> None:
    validation, test, architectures = {}, {}, {}
    for name in PRETRAINED_NAMES:
        checkpoint = load_pretrained(name)
        card = json.loads((PRETRAINED_FOLDER / f"{name}.json").read_text())
        assert not checkpoint.model.training
        architectures[name] = checkpoint.architecture["name"]
        assert card["architecture"]["name"] == architectures[name]
        validation[name] = predict_split(
            checkpoint.model, mnist.validation, checkpoint.normalization
        )
        test[name] = predict_split(
            checkpoint.model, mnist.test, checkpoint.normalization
        )
        assert accuracy(test[name]) == pytest.approx(card["test_accuracy"], abs=1e-4)
        assert int((~test[name].correct).sum()) == card["test_errors"]
    candidates = ensemble_candidates(architectures)
    assert len(candidates) > 1
    chosen = choose_ensemble(validation, candidates)
    assert (
        accuracy(average_predictions([test[name] for name in candidates[chosen]]))
        >= 0.997
    )
