"""Tests of mnist_tutorial.checkpoint: saving, checked loading, refusals, model cards.

Tiny models and the synthetic MNIST only; the hostile files of issue #12 are in
test_reliability.py and the shipped models in test_pretrained.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnist_tutorial.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointError,
    library_versions,
    load_checkpoint,
    model_card,
    save_checkpoint,
    write_model_card,
)
from mnist_tutorial.data import MnistData
from mnist_tutorial.errors import ConfigError
from mnist_tutorial.evaluate import predict_split
from mnist_tutorial.model import Network, build_model
from mnist_tutorial.records import TrainConfig, TrainingRun
from mnist_tutorial.train import fit

CONFIG = TrainConfig(epochs=1, batch_size=50, lr=3e-3, device="cpu", augment=False)


@pytest.fixture(scope="module")
def trained(synthetic_mnist: MnistData) -> tuple[Network, TrainingRun]:
    """An mlp trained for one epoch on the synthetic set."""
    torch.manual_seed(0)
    model = build_model("mlp")
    return model, fit(model, synthetic_mnist, CONFIG, progress=False, log=None)


def test_checkpoint_round_trip_gives_the_same_predictions(
    synthetic_mnist: MnistData, trained, tmp_path: Path
) -> None:
    model, run = trained
    path = save_checkpoint(
        tmp_path / "sub" / "model.pt",
        model,
        normalization=synthetic_mnist.normalization,
        config=CONFIG,
        history=run.history,
        metrics={"test_accuracy": 0.5},
    )
    assert path == tmp_path / "sub" / "model.pt"
    # No temporary file is left behind.
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    loaded = load_checkpoint(path)
    assert isinstance(loaded, Checkpoint) and isinstance(loaded.model, Network)
    assert loaded.architecture == {"name": "mlp", "kwargs": {}}
    assert loaded.model.architecture == loaded.architecture
    assert loaded.config == CONFIG and loaded.history == run.history
    assert loaded.metrics == {"test_accuracy": 0.5}
    assert loaded.normalization == pytest.approx(synthetic_mnist.normalization)
    assert loaded.versions == library_versions()
    assert loaded.training_state is None  # inference only unless asked
    assert not loaded.model.training
    before = predict_split(
        model, synthetic_mnist.validation, synthetic_mnist.normalization
    )
    after = predict_split(
        loaded.model, synthetic_mnist.validation, loaded.normalization
    )
    assert (before.probabilities == after.probabilities).all()


def test_a_resumable_checkpoint_keeps_the_training_state(
    synthetic_mnist: MnistData, trained, tmp_path: Path
) -> None:
    model, run = trained
    inference = save_checkpoint(
        tmp_path / "inference.pt", model, normalization=synthetic_mnist.normalization
    )
    resumable = save_checkpoint(
        tmp_path / "resumable.pt",
        model,
        normalization=synthetic_mnist.normalization,
        training_state=run.training_state,
    )
    assert resumable.stat().st_size > inference.stat().st_size
    state = load_checkpoint(resumable).training_state
    assert state is not None
    for name, tensor in run.training_state.weights.items():
        assert torch.equal(state.weights[name], tensor), name
    assert torch.equal(state.rng["loader"], run.training_state.rng["loader"])
    assert state.scheduler == run.training_state.scheduler
    assert (
        state.optimizer["param_groups"] == run.training_state.optimizer["param_groups"]
    )


def test_weights_replace_the_models_own(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, other = build_model("mlp"), build_model("mlp")
    path = save_checkpoint(
        tmp_path / "m.pt", model, normalization=(0.1, 0.3), weights=other.state_dict()
    )
    for name, tensor in load_checkpoint(path).model.state_dict().items():
        assert torch.equal(tensor, other.state_dict()[name]), name


def test_a_saved_file_is_a_plain_torch_archive(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "m.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT
    assert payload["architecture"] == {"name": "mlp", "kwargs": {}}
    assert payload["training_state"] is None and payload["config"] is None


def test_saving_over_a_checkpoint_replaces_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(b"an older file" * 100_000)
    save_checkpoint(path, build_model("lenet5"), normalization=(0.1, 0.3))
    assert load_checkpoint(path).architecture["name"] == "lenet5"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_model_without_an_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"build the model with mnist_tutorial\.build_model"
    ):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2), normalization=(0, 1))
    assert list(tmp_path.iterdir()) == []


def test_the_temperature_is_saved_and_older_files_have_none(tmp_path: Path) -> None:
    model = build_model("mlp")
    path = save_checkpoint(
        tmp_path / "calibrated.pt", model, normalization=(0.1, 0.3), temperature=0.42
    )
    assert load_checkpoint(path).temperature == 0.42
    payload = torch.load(path, weights_only=True)
    del payload["temperature"]
    torch.save(payload, path)
    assert load_checkpoint(path).temperature == 1.0


@pytest.mark.parametrize("temperature", [0.0, -0.5, 21.0, float("nan"), "0.4", True])
def test_a_bad_temperature_is_refused(tmp_path: Path, temperature: object) -> None:
    path = save_checkpoint(tmp_path / "m.pt", build_model("mlp"), normalization=(0, 1))
    torch.save(
        {**torch.load(path, weights_only=True), "temperature": temperature}, path
    )
    with pytest.raises(
        CheckpointError, match=r"m\.pt: temperature is .*, not a number"
    ):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="temperature is"):
        save_checkpoint(
            tmp_path / "n.pt",
            build_model("mlp"),
            normalization=(0, 1),
            temperature=temperature,  # type: ignore[arg-type]
        )
    assert not (tmp_path / "n.pt").exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(tmp_path / "absent.pt")
    assert str(raised.value) == (
        f"no checkpoint at {tmp_path / 'absent.pt'}; check the path, or train a model "
        "and save it there"
    )


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        CheckpointError,
        match=r"is truncated or corrupt \(File is not a zip file\); re-save or "
        "re-train",
    ):
        load_checkpoint(path)


def test_file_that_is_not_pytorch(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(
        CheckpointError,
        match=r"is not a PyTorch checkpoint \(unknown format\); pass a .pt file",
    ):
        load_checkpoint(path)


def test_pytorch_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model("mlp").state_dict(), path)
    with pytest.raises(CheckpointError, match="not an mnist_tutorial checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    payload = torch.load(path, weights_only=True)
    payload["architecture"] = {"name": "mlp", "kwargs": {"hidden": (64, 32)}}
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match="the weights do not fit architecture 'mlp'"
    ):
        load_checkpoint(path)


def test_a_training_state_with_entries_missing_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "m.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    payload = torch.load(path, weights_only=True)
    payload["training_state"] = {"optimizer": {}, "scheduler": {}}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="its training state lacks"):
        load_checkpoint(path)


def test_loading_onto_a_device_the_machine_lacks_is_a_config_error(
    tmp_path: Path, no_accelerator: None
) -> None:
    path = save_checkpoint(
        tmp_path / "m.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    with pytest.raises(ConfigError, match="device='cuda' was asked for"):
        load_checkpoint(path, device="cuda")
    assert next(
        load_checkpoint(path, device="auto").model.parameters()
    ).device.type == ("cpu")


def test_model_card_says_how_the_model_was_made(
    synthetic_mnist: MnistData, trained, tmp_path: Path
) -> None:
    model, run = trained
    results = {
        "test_accuracy": 0.75,
        "test_errors": 25,
        "train_seconds": 1.5,
        "best_epoch": 1,
    }
    card = model_card(
        model, CONFIG, run.history, results, command="mnist-tutorial train"
    )
    assert card["architecture"] == {"name": "mlp", "kwargs": {}}
    assert card["parameters"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert card["multiply_adds"] == 784 * 256 + 256 * 128 + 128 * 10
    assert card["command"] == "mnist-tutorial train"
    assert card["config"]["lr"] == CONFIG.lr and card["seed"] == CONFIG.seed
    assert card["epochs_run"] == 1 and card["device"] == "cpu"
    assert {key: card[key] for key in results} == results
    assert card["history"] == run.history.to_dict()["epochs"]
    path = write_model_card(tmp_path / "card.json", card)
    assert json.loads(path.read_text()) == json.loads(json.dumps(card))
    assert path.read_text().endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
