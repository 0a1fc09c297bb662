"""The shipped model: it loads for inference and is as good as its model card says."""

from __future__ import annotations

import json

import pytest

from mnist_tutorial import load_mnist, load_pretrained
from mnist_tutorial.evaluate import accuracy, average_predictions, metrics, predict_split
from mnist_tutorial.train import PRETRAINED_FOLDER, PRETRAINED_NAMES, PRETRAINED_PATH

CARD = json.loads(PRETRAINED_PATH.with_suffix(".json").read_text())


def test_the_shipped_model_is_small() -> None:
    assert PRETRAINED_PATH.stat().st_size < 3 * 2**20


def test_the_card_states_how_it_was_made() -> None:
    assert CARD["command"].startswith("python -m mnist_tutorial train")
    assert {"config", "seed", "epochs_run", "train_seconds", "device", "versions", "test_accuracy"} <= set(CARD)
    assert CARD["test_accuracy"] >= 0.996


def test_it_scores_on_the_test_set_what_its_card_states() -> None:
    checkpoint = load_pretrained()
    assert not checkpoint.model.training
    assert checkpoint.architecture["name"] == CARD["architecture"]["name"]
    summary = metrics(predict_split(checkpoint.model, load_mnist().test, checkpoint.normalization))
    assert summary.accuracy == pytest.approx(CARD["test_accuracy"], abs=1e-4)
    assert summary.errors == CARD["test_errors"]


def test_unknown_shipped_model_names_the_choices() -> None:
    with pytest.raises(ValueError, match="no shipped model 'best'; choose one of: cnn, cnn_seed1, cnn_seed2"):
        load_pretrained("best")


def test_the_shipped_ensemble_beats_each_member_as_the_cards_say() -> None:
    test = load_mnist().test
    members = []
    for name in PRETRAINED_NAMES:
        checkpoint = load_pretrained(name)
        card = json.loads((PRETRAINED_FOLDER / f"{name}.json").read_text())
        members.append(predict_split(checkpoint.model, test, checkpoint.normalization))
        assert accuracy(members[-1]) == pytest.approx(card["test_accuracy"], abs=1e-4)
    assert accuracy(average_predictions(members)) > max(accuracy(member) for member in members)
