"""Issue #12: what a careless or hostile user can do to the package and the command line, and what they get.

Each test is one case of the issue: a clear one-line error (exit code 2 for misuse),
nothing lost, nothing allocated beyond a small bound, and no traceback unless the
package itself is wrong."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image, ImageDraw

import mnist_tutorial.cli as cli
import mnist_tutorial.data as data_module
from mnist_tutorial.checkpoint import (
    MAX_PARAMETERS,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from mnist_tutorial.cli import main
from mnist_tutorial.data import MnistData
from mnist_tutorial.errors import ConfigError, MnistTutorialError, ModelOutputError
from mnist_tutorial.export import ExportError, export_onnx
from mnist_tutorial.model import build_model
from mnist_tutorial.predict import (
    FileResult,
    InvalidImageError,
    Prediction,
    Predictor,
    expand_paths,
    predict_folder,
    predict_image,
    preprocess_image,
    write_csv,
)
from mnist_tutorial.records import TrainConfig
from mnist_tutorial.train import check_resumable, fit

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "book" / "samples"
PAPER, INK = 235, 25
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def small(synthetic_mnist: MnistData) -> MnistData:
    """The synthetic MNIST: 500 training, 100 validation and 100 test images; a run of the
    perceptron takes a fraction of a second."""
    return synthetic_mnist


@pytest.fixture()
def tiny_cli(small: MnistData, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The command line on the small data; the list records each data root it loaded."""
    loads: list[object] = []

    def load(root: object = None) -> MnistData:
        loads.append(root)
        return small

    monkeypatch.setattr(cli, "load_mnist", load)
    return loads


def quick(**changes: object) -> TrainConfig:
    return TrainConfig(
        **{
            "epochs": 1,
            "batch_size": 50,
            "lr": 3e-3,
            "device": "cpu",
            "augment": False,
            **changes,
        }
    )


def train_args(out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--lr",
        "0.003",
        "--no-augment",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def seven(size: tuple[int, int] = (160, 120)) -> Image.Image:
    image = Image.new("L", size, PAPER)
    ImageDraw.Draw(image).line(
        [(50, 20), (100, 20), (67, 100)], fill=INK, width=7, joint="curve"
    )
    return image


def reference_digit() -> np.ndarray:
    return preprocess_image(seven(), keep_steps=True).centred


def saved_payload(tmp_path: Path, **changes: object) -> Path:
    """A real mlp checkpoint with entries replaced (a value of None removes the entry)."""
    path = save_checkpoint(
        tmp_path / "real.pt", build_model("mlp"), normalization=(0.1307, 0.3081)
    )
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    crafted = tmp_path / "crafted.pt"
    torch.save(payload, crafted)
    return crafted


# --- 1. `train --out model.json` would write the model card over the checkpoint
# -------------------


@pytest.mark.parametrize("name", ["model.json", "MODEL.JSON"])
def test_out_that_its_model_card_would_overwrite_is_refused_before_training(
    tmp_path: Path,
    tiny_cli: list[object],
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    assert main(train_args(tmp_path / name)) == 2
    one_line_error(
        capsys,
        f"--out {tmp_path / name} would be overwritten by its own model card",
        f"such as {(tmp_path / name).with_suffix('.pt')}",
    )
    assert tiny_cli == [] and list(tmp_path.iterdir()) == []


def test_train_writes_the_checkpoint_and_its_card_side_by_side(
    tmp_path: Path, tiny_cli: list[object]
) -> None:
    assert main(train_args(tmp_path / "model.pt")) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "model.json",
        "model.pt",
    ]
    assert load_checkpoint(tmp_path / "model.pt").architecture["name"] == "mlp"
    assert json.loads((tmp_path / "model.json").read_text())["epochs_run"] == 1


# --- 2. a crafted checkpoint asking for a huge model
# ----------------------------------------------

MEASURE = textwrap.dedent("""
    import json, resource, sys
    from mnist_tutorial.checkpoint import CheckpointError, load_checkpoint

    def virtual_bytes():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))

    # A regression must fail here, not fill the machine's memory: 1 GB more address
    # space at most.
    limit = virtual_bytes() + 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_checkpoint(sys.argv[1])
        outcome = "loaded"
    except CheckpointError as error:
        outcome = str(error)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"outcome": outcome, "grown_kib": grown_kib}))
""")


@pytest.mark.slow  # a fresh Python process that imports PyTorch
@pytest.mark.skipif(
    not Path("/proc/self/status").exists(),
    reason="measures memory through Linux's /proc",
)
def test_a_crafted_huge_architecture_is_refused_before_any_weight_is_allocated(
    tmp_path: Path,
) -> None:
    # 784 x 20,000 + 20,000 x 20,000 weights: 1.7 GB of float32, from a file of about 1
    # MB.
    crafted = saved_payload(
        tmp_path, architecture={"name": "mlp", "kwargs": {"hidden": [20000, 20000]}}
    )
    assert crafted.stat().st_size < 2_000_000
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(crafted)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert (
        "would have 415,920,010 parameters, over the 20,000,000 limit"
        in measured["outcome"]
    )
    assert measured["grown_kib"] < 50 * 1024  # peak memory grew by less than 50 MB


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"hidden": [50000, 50000]},
            f"would have 2,539,800,010 parameters, over the {MAX_PARAMETERS:,} limit",
        ),
        ({"hidden": [10**12, 10**12]}, "cannot rebuild architecture"),
        ({"widths": [4096, 4096, 4096]}, f"over the {MAX_PARAMETERS:,} limit"),
    ],
)
def test_architecture_limits_are_checked_without_building(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    name = "cnn" if "widths" in kwargs else "mlp"
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(
            saved_payload(tmp_path, architecture={"name": name, "kwargs": kwargs})
        )
    assert message in str(raised.value)


def test_a_compressed_archive_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    """torch.load inflates a deflated entry: 400 MB of zeros fit in 400 KB."""
    real = save_checkpoint(
        tmp_path / "real.pt", build_model("mlp"), normalization=(0.1307, 0.3081)
    )
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(real) as source, zipfile.ZipFile(bomb, "w") as out:
        for entry in source.infolist():
            out.writestr(entry, source.read(entry), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(
        CheckpointError, match=r"compressed or oversized entries.*decompression bomb"
    ):
        load_checkpoint(bomb)


# --- 3. a damaged .gz in MNIST/raw: tested in test_data.py with a local mirror to fall
# back to -------

# --- 4. `train` checks --out before training
# -------------------------------------------------------


def test_out_under_a_file_is_refused_before_training(
    tmp_path: Path, tiny_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    assert main(train_args(tmp_path / "notes.txt" / "model.pt")) == 2
    one_line_error(
        capsys,
        "cannot be written (a part of the path is a file, not a folder)",
        "choose another place",
    )
    assert tiny_cli == []


@pytest.mark.skipif(AS_ROOT, reason="root may write anywhere")
def test_out_in_a_read_only_folder_is_refused_before_training(
    tmp_path: Path, tiny_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(train_args(locked / "model.pt")) == 2
    one_line_error(capsys, "cannot be written (permission denied)")
    assert tiny_cli == []


# --- 5. --weight-decay nan or inf
# ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_weight_decay_must_be_a_finite_number(value: float) -> None:
    with pytest.raises(ConfigError, match=r"weight_decay must be 0 or more"):
        TrainConfig(weight_decay=value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_weight_decay_nan_on_the_command_line(
    value: str,
    tmp_path: Path,
    tiny_cli: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(train_args(tmp_path / "model.pt", "--weight-decay", value)) == 2
    one_line_error(capsys, f"weight_decay must be 0 or more, got {value}")
    assert tiny_cli == [] and not (tmp_path / "model.pt").exists()


# --- 6. NaN outputs are never answers
# -----------------------------------------------------------------


def nan_model() -> torch.nn.Module:
    model = build_model("mlp")
    with torch.no_grad():
        model[-1].weight.fill_(math.nan)
    return model.eval()


@pytest.mark.parametrize(
    ("model", "normalization", "message"),
    [
        (
            nan_model,
            (0.1307, 0.3081),
            "the weights hold NaN or infinite values (in 7.weight)",
        ),
        (
            lambda: build_model("mlp"),
            (0.1307, 0.0),
            r"normalization (mean 0.1307, std 0.0) is not that of pixels",
        ),
        (
            lambda: build_model("mlp"),
            (math.nan, 0.3),
            "normalization (mean nan, std 0.3)",
        ),
    ],
)
def test_a_checkpoint_that_can_only_give_nan_is_refused(
    tmp_path: Path, model, normalization, message: str
) -> None:
    path = save_checkpoint(tmp_path / "broken.pt", model(), normalization=normalization)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    assert message in str(raised.value)


def test_predict_and_evaluate_refuse_a_nan_checkpoint(
    tmp_path: Path, tiny_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_checkpoint(
        tmp_path / "nan.pt", nan_model(), normalization=(0.1307, 0.3081)
    )
    picture = tmp_path / "seven.png"
    seven().save(picture)
    for args in (
        ["predict", str(picture), "--checkpoint", str(path)],
        ["predict", "--json", str(picture), "--checkpoint", str(path)],
        ["evaluate", str(path)],
    ):
        assert main(args) == 2
        one_line_error(capsys, "NaN or infinite")
        assert capsys.readouterr().out == ""


def test_a_model_that_gives_nan_gets_an_error_per_file_and_valid_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "seven.png"
    seven().save(picture)
    overflowing = build_model("mlp").eval()
    with torch.no_grad():
        for parameter in overflowing.parameters():
            parameter.fill_(
                1e30
            )  # finite weights whose outputs overflow to inf, then NaN in the softmax
    predictor = Predictor(overflowing, (0.1307, 0.3081))
    with pytest.raises(ModelOutputError, match="NaN or infinite outputs"):
        predictor.predict(seven())
    (result,) = predictor.predict_files([picture])
    assert not result.ok and "the model gave NaN or infinite outputs" in result.error
    checkpoint = save_checkpoint(
        tmp_path / "overflowing.pt", overflowing, normalization=(0.1307, 0.3081)
    )
    assert main(["predict", str(picture), "--checkpoint", str(checkpoint)]) == 1
    assert capsys.readouterr().out.startswith(
        f"{picture}: error: {picture}: the model gave NaN or infinite outputs"
    )

    def no_nan(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert (
        main(["predict", "--json", str(picture), "--checkpoint", str(checkpoint)]) == 1
    )
    (entry,) = json.loads(capsys.readouterr().out, parse_constant=no_nan)
    assert (
        entry["digit"] is None
        and entry["probabilities"] is None
        and "NaN or infinite" in entry["error"]
    )


# --- 7. one bad explicit path does not stop the batch
# -------------------------------------------------


def test_bad_explicit_paths_get_their_error_and_the_others_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "seven.png"
    seven().save(good)
    (tmp_path / "notes.txt").write_text("a file")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    bad = {
        tmp_path / "notes.txt" / "x.png": "a part of the path is a file, not a folder",
        tmp_path / ("n" * 300 + ".png"): "a name in the path is too long",
        loop: "a loop of symbolic links",
    }
    code = main(["predict", str(good), *map(str, bad)])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 1 and len(lines) == 4 and "Traceback" not in err
    assert lines[0].startswith(f"{good}: 7 (")
    for line, reason in zip(lines[1:], bad.values(), strict=True):
        assert "error:" in line and reason in line, line
    assert err.strip() == "python -m mnist_tutorial predict: 3 of 4 files failed"


@pytest.mark.skipif(AS_ROOT, reason="root may search any folder")
def test_a_file_in_a_folder_that_cannot_be_searched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hidden = tmp_path / "locked"
    hidden.mkdir()
    seven().save(hidden / "seven.png")
    hidden.chmod(0o600)
    try:
        assert main(["predict", str(hidden / "seven.png")]) == 1
    finally:
        hidden.chmod(0o700)
    assert "permission denied" in capsys.readouterr().out


# --- 8. resuming ----------------------------------------------------------------------
# -----------------


def without_seconds(history) -> list[dict]:
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"}
        for r in history.epochs
    ]


def test_resuming_a_finished_one_cycle_run_with_more_epochs_trains_one_more_epoch(
    small: MnistData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist_tutorial.train as train_module

    first_rates: list[float] = []  # the learning rate of each epoch's first step
    real_epoch = train_module.train_one_epoch

    def recording(model, loader, optimizer, *args, **kwargs):
        first_rates.append(optimizer.param_groups[0]["lr"])
        return real_epoch(model, loader, optimizer, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", recording)
    torch.manual_seed(0)
    model = build_model("mlp")
    one = fit(model, small, quick(epochs=1), progress=False, log=None)
    path = save_checkpoint(
        tmp_path / "one.pt",
        model,
        normalization=small.normalization,
        config=quick(epochs=1),
        history=one.history,
        training_state=one.training_state,
    )
    checkpoint = load_checkpoint(path)
    resumed = fit(
        checkpoint.model,
        small,
        quick(epochs=2),
        progress=False,
        log=None,
        resume=checkpoint,
    )
    torch.manual_seed(0)
    straight = fit(
        build_model("mlp"), small, quick(epochs=2), progress=False, log=None
    ).history
    resumed, one = resumed.history, one.history

    assert [record.epoch for record in resumed.epochs] == [1, 2] and resumed.epochs[
        0
    ] == one.epochs[0]
    # Epoch 2 follows the 2-epoch plan: it starts at that plan's rate for step 10 and
    # ends at lr / 1000. Recorded: the 1-epoch run, the resumed epoch 2, then the
    # 2-epoch run's two epochs.
    assert first_rates[0] == first_rates[2] == pytest.approx(3e-4)
    assert first_rates[1] == first_rates[3] > 3e-3 / 2
    assert resumed.epochs[1].lr == straight.epochs[1].lr == pytest.approx(3e-3 / 1000)
    assert resumed.epochs[1].train_loss < one.epochs[0].train_loss


def test_resuming_needs_more_epochs_and_the_same_recipe(
    small: MnistData, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    run = fit(model, small, quick(epochs=1), progress=False, log=None)
    checkpoint = load_checkpoint(
        save_checkpoint(
            tmp_path / "one.pt",
            model,
            normalization=small.normalization,
            config=quick(epochs=1),
            history=run.history,
            training_state=run.training_state,
        )
    )
    with pytest.raises(
        CheckpointError,
        match="run is already at epoch 1; set epochs above 1 to train more",
    ):
        fit(
            checkpoint.model,
            small,
            quick(epochs=1),
            progress=False,
            log=None,
            resume=checkpoint,
        )
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "run has lr 0.003, not 0.01; a resumed run keeps its optimizer"
        ),
    ):
        check_resumable(checkpoint, quick(epochs=2, lr=0.01))
    check_resumable(checkpoint, quick(epochs=2, patience=3, device="cpu"))


def test_an_interrupted_run_saved_every_epoch_resumes_as_if_never_stopped(
    small: MnistData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist_tutorial.train as train_module

    config = quick(epochs=3, augment=True)
    torch.manual_seed(0)
    uninterrupted = build_model("mlp")
    expected = fit(uninterrupted, small, config, progress=False, log=None).history

    real_epoch = train_module.train_one_epoch
    calls = []

    def interrupted_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted_in_epoch_3)
    path = tmp_path / "run.pt"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(
            build_model("mlp"),
            small,
            config,
            progress=False,
            log=None,
            save_to=path,
            save_every=1,
        )
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    checkpoint = load_checkpoint(path)
    assert len(checkpoint.history.epochs) == 2  # only the epoch in progress is lost
    resumed = fit(
        checkpoint.model, small, config, progress=False, log=None, resume=checkpoint
    )
    assert without_seconds(resumed.history) == without_seconds(expected)
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, checkpoint.model.state_dict()[name]), name


def test_save_every_must_be_positive(small: MnistData, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="save_every must be at least 1"):
        fit(
            build_model("mlp"),
            small,
            quick(),
            progress=False,
            log=None,
            save_to=tmp_path / "x.pt",
            save_every=0,
        )
    with pytest.raises(ConfigError, match="has no architecture to rebuild it from"):
        fit(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)),
            small,
            quick(),
            progress=False,
            log=None,
            save_to=tmp_path / "x.pt",
        )


def test_command_line_resume_after_ctrl_c_and_with_more_epochs(
    tmp_path: Path,
    tiny_cli: list[object],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mnist_tutorial.train as train_module

    out = tmp_path / "run.pt"
    real_epoch = train_module.train_one_epoch
    calls = []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted_in_epoch_2)
    args = train_args(out, "--save-every", "1")
    args[args.index("--epochs") + 1] = "3"
    assert main(args) == 130
    assert capsys.readouterr().err.strip() == (
        f"python -m mnist_tutorial train: interrupted; {out} holds the last epoch "
        f"saved by --save-every; continue with --resume {out}"
    )
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)

    # No --model and no --epochs: the run goes on with its own settings, to its own 3
    # epochs.
    assert (
        main(["train", "--resume", str(out), "--out", str(out), "--no-progress"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"resuming mlp from {out} after epoch 1, up to epoch 3"
    assert lines[1].startswith("mlp: ") and lines[1].endswith(" parameters")
    assert [record.epoch for record in load_checkpoint(out).history.epochs] == [1, 2, 3]

    assert (
        main(
            [
                "train",
                "--resume",
                str(out),
                "--out",
                str(out),
                "--epochs",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    card = json.loads(out.with_suffix(".json").read_text())
    assert (
        card["epochs_run"] == 4
        and card["config"]["lr"] == 0.003
        and card["config"]["batch_size"] == 50
    )
    capsys.readouterr()

    assert (
        main(["train", "--resume", str(out), "--out", str(out), "--epochs", "4"]) == 2
    )
    one_line_error(capsys, "run is already at epoch 4; set epochs above 4")
    assert (
        main(
            [
                "train",
                "--resume",
                str(out),
                "--out",
                str(out),
                "--epochs",
                "5",
                "--model",
                "cnn",
            ]
        )
        == 2
    )
    one_line_error(
        capsys, "--model cnn does not match the mlp", "leave --model out when resuming"
    )
    assert (
        main(
            [
                "train",
                "--resume",
                str(out),
                "--out",
                str(out),
                "--epochs",
                "5",
                "--batch-size",
                "64",
            ]
        )
        == 2
    )
    one_line_error(capsys, "run has batch_size 50, not 64")


def test_ctrl_c_without_a_saved_epoch_says_nothing_was_saved(
    tmp_path: Path,
    tiny_cli: list[object],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mnist_tutorial.train as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    assert main(train_args(tmp_path / "model.pt")) == 130
    assert (
        capsys.readouterr().err.strip()
        == "python -m mnist_tutorial train: interrupted; nothing was saved"
    )
    assert list(tmp_path.iterdir()) == []


# --- 9. a batch larger than the training split
# ---------------------------------------------------------


def test_a_batch_larger_than_the_data_is_refused_before_training(
    small: MnistData,
) -> None:
    with pytest.raises(
        ConfigError,
        match="batch_size=501 is more than the 500 training images; use at most 500",
    ):
        fit(build_model("mlp"), small, quick(batch_size=501), progress=False, log=None)


@pytest.mark.parametrize("schedule", ["none", "onecycle", "step"])
def test_a_batch_larger_than_the_data_on_the_command_line(
    schedule: str,
    tmp_path: Path,
    tiny_cli: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = train_args(tmp_path / "model.pt", "--schedule", schedule)
    args[args.index("--batch-size") + 1] = "60000"
    assert main(args) == 2
    one_line_error(capsys, "--batch-size 60000 is more than the 500 training images")
    assert list(tmp_path.iterdir()) == []


# --- 10. hand-made checkpoints
# --------------------------------------------------------------------------

BAD_ENTRIES = {
    "no-architecture": ({"architecture": None}, "has no valid 'architecture' entry"),
    "no-kwargs": ({"architecture": {"name": "mlp"}}, "with a dict of 'kwargs'"),
    "unknown-name": (
        {"architecture": {"name": "resnet", "kwargs": {}}},
        "is not one of cnn, cnn_large",
    ),
    "negative-width": (
        {"architecture": {"name": "mlp", "kwargs": {"hidden": [-5, 3]}}},
        "cannot rebuild architecture",
    ),
    "unknown-argument": (
        {"architecture": {"name": "mlp", "kwargs": {"depth": 9}}},
        "cannot rebuild architecture",
    ),
    "no-normalization": ({"normalization": None}, "has no valid 'normalization' entry"),
    "short-normalization": (
        {"normalization": [0.1]},
        "normalization is [0.1], not (mean, std)",
    ),
    "bad-history": ({"history": {"epochs": [{"epoch": 1}]}}, "its history is invalid"),
    "history-of-words": (
        {
            "history": {
                "epochs": [
                    {
                        "epoch": 1,
                        "train_loss": "low",
                        "train_accuracy": 0.5,
                        "val_loss": 0.5,
                        "val_accuracy": 0.5,
                        "lr": 0.1,
                        "grad_norm": 1.0,
                        "seconds": 1.0,
                    }
                ]
            }
        },
        "its history is invalid (each epoch must be the 8 numbers that History.to_dict "
        "writes)",
    ),
    "bad-config": ({"config": {"epochs": "three"}}, "its training config is invalid"),
    "metrics-list": ({"metrics": [1, 2]}, "'metrics' entry is not a dict"),
    "weights-of-words": (
        {"state_dict": {"1.weight": "heavy"}},
        "the weights do not fit architecture 'mlp'",
    ),
}


@pytest.mark.parametrize(("changes", "message"), BAD_ENTRIES.values(), ids=BAD_ENTRIES)
def test_a_hand_made_checkpoint_gets_a_checkpoint_error(
    tmp_path: Path, changes: dict, message: str
) -> None:
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(saved_payload(tmp_path, **changes))
    assert (
        message in str(raised.value)
        and "\n" not in str(raised.value)
        and len(str(raised.value)) < 300
    )


@pytest.mark.parametrize("command", ["evaluate", "export-onnx"])
@pytest.mark.parametrize(
    "case",
    [
        "no-architecture",
        "no-kwargs",
        "no-normalization",
        "bad-history",
        "negative-width",
    ],
)
def test_evaluate_and_export_report_a_hand_made_checkpoint_in_one_line(
    tmp_path: Path,
    tiny_cli: list[object],
    capsys: pytest.CaptureFixture[str],
    command: str,
    case: str,
) -> None:
    crafted = saved_payload(tmp_path, **BAD_ENTRIES[case][0])
    args = (
        ["evaluate", str(crafted)]
        if command == "evaluate"
        else [
            "export-onnx",
            "--checkpoint",
            str(crafted),
            "--out",
            str(tmp_path / "m.onnx"),
        ]
    )
    assert main(args) == 2
    one_line_error(capsys, BAD_ENTRIES[case][1])
    assert not (tmp_path / "m.onnx").exists()


def test_a_training_state_with_entries_missing_is_refused_when_loaded(
    tmp_path: Path,
) -> None:
    crafted = saved_payload(
        tmp_path, training_state={"optimizer": {"state": 5}, "average": {}}
    )
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(crafted)
    assert "its training state lacks 'scheduler'; the file is damaged or hand-made" in (
        str(raised.value)
    )


def crafted_state(**changes: object) -> dict[str, object]:
    return {
        "optimizer": {"state": 5},
        "scheduler": {},
        "rng": {},
        "weights": {},
        "average": None,
        **changes,
    }


def test_a_training_state_that_does_not_fit_is_a_checkpoint_error(
    small: MnistData, tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(
        saved_payload(tmp_path, training_state=crafted_state())
    )
    with pytest.raises(CheckpointError) as raised:
        fit(
            checkpoint.model,
            small,
            quick(epochs=2, ema_decay=None),
            progress=False,
            log=None,
            resume=checkpoint,
        )
    assert str(raised.value).startswith(
        "the saved training state does not fit this run ("
    )
    assert str(raised.value).endswith("); start a new run (resume=None)")


def test_a_run_without_a_moving_average_resumes_without_one(
    small: MnistData, tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(
        saved_payload(tmp_path, training_state=crafted_state())
    )
    with pytest.raises(CheckpointError) as raised:
        check_resumable(checkpoint, quick(epochs=2))
    assert str(raised.value) == (
        "this checkpoint was trained without a moving average; resume with "
        "ema_decay=None"
    )
    assert cli.as_flags(str(raised.value)).endswith("resume with --ema-decay none")


# --- poor: what is wrong with a file that is no checkpoint
# ---------------------------------------------


class Trap:
    """A pickle that creates a file when it is loaded: it must never be."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_files_that_are_no_checkpoint_say_what_they_are_and_never_run(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps({"weights": Trap(marker)}))
    zipped = tmp_path / "zipped.pt"
    torch.save({"weights": torch.zeros(2), "surprise": Trap(marker)}, zipped)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    )
    card = tmp_path / "model.json"
    card.write_text('{"architecture": {"name": "cnn"}}\n')
    expected = {
        bare: "is a bare Python pickle or an old-format PyTorch file, not an mnist_tutorial checkpoint; it was not "
        "loaded",
        zipped: "when loaded; refused, it is not an mnist_tutorial checkpoint (only load files you trust)",
        noise: "is not a PyTorch checkpoint (unknown format); pass a .pt file written by train",
        card: "is a JSON file (a model card?), not a checkpoint",
    }
    for path, message in expected.items():
        with pytest.raises(CheckpointError) as raised:
            load_checkpoint(path)
        assert message in str(raised.value) and "Weights only load failed" not in str(
            raised.value
        )
    assert not marker.exists()


def test_a_pipe_a_folder_or_an_oversized_file_is_refused_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist_tutorial.checkpoint as checkpoint_module

    pipe = tmp_path / "model.pt"
    os.mkfifo(pipe)  # opening it to read would wait for a writer forever
    for path in (pipe, tmp_path):
        with pytest.raises(
            CheckpointError,
            match="is a folder, a pipe or a device, not a checkpoint file",
        ):
            load_checkpoint(path)
    large = saved_payload(tmp_path)
    monkeypatch.setattr(
        checkpoint_module, "MAX_CHECKPOINT_BYTES", large.stat().st_size - 1
    )
    with pytest.raises(
        CheckpointError,
        match="MB that a checkpoint of the book's models can need; it was not read",
    ):
        load_checkpoint(large)


# --- poor: file-system errors are one line
# ---------------------------------------------------------------


def test_a_data_root_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data.txt"
    root.write_text("not a folder")
    assert main(["download", "--data", str(root), "--no-npm"]) == 2
    one_line_error(
        capsys,
        f"MNIST cannot be saved in {root / 'MNIST' / 'raw'} (a part of the path is a "
        "file, not a folder); choose another data root",
    )
    assert root.read_text() == "not a folder"


@pytest.mark.skipif(AS_ROOT, reason="root may write anywhere")
def test_a_data_root_that_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "locked"
    root.mkdir(mode=0o500)
    assert main(["download", "--data", str(root), "--no-npm"]) == 2
    one_line_error(capsys, "(permission denied); choose another data root")


def test_csv_into_a_place_that_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "seven.png"
    seven().save(picture)
    (tmp_path / "notes.txt").write_text("a file")
    assert (
        main(["predict", str(picture), "--csv", str(tmp_path / "notes.txt" / "r.csv")])
        == 2
    )
    one_line_error(capsys, "notes.txt is a file, not a folder")


@pytest.mark.skipif(AS_ROOT, reason="root may write anywhere")
def test_csv_into_a_read_only_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "seven.png"
    seven().save(picture)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["predict", str(picture), "--csv", str(locked / "r.csv")]) == 2
    one_line_error(capsys, "cannot be written (permission denied)")


def test_export_under_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ExportError, match="a part of the path is a file, not a folder"):
        export_onnx(None, tmp_path / "notes.txt" / "m.onnx")
    assert main(["export-onnx", "--out", str(tmp_path / "notes.txt" / "m.onnx")]) == 2
    one_line_error(
        capsys, "cannot be written (a part of the path is a file, not a folder)"
    )


# --- poor: output that a reader or a spreadsheet can trust
# ------------------------------------------------


@pytest.mark.slow  # a fresh Python process that imports PyTorch, per case
@pytest.mark.parametrize("flags", [["--json"], []], ids=["json", "plain"])
def test_a_reader_that_leaves_early_is_no_error(flags: list[str]) -> None:
    pictures = [str(path) for path in sorted(SAMPLES.glob("*.png"))[:3]]
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_tutorial", "predict", *flags, *pictures],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    process.stdout.close()  # as `| head -0` does: every write to stdout now fails
    error = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141
    assert error == ""


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    prediction = Prediction(7, 0.9, np.full(10, 0.1))
    results = [
        FileResult(Path('=HYPERLINK("x")'), prediction),
        FileResult(Path("+1.png"), prediction),
        FileResult(Path("-2.png"), error="-2.png is broken"),
        FileResult(Path("@sum.png"), prediction),
        FileResult(Path("\tx.png"), prediction),
        FileResult(Path("plain.png"), error="=cmd|' /C calc'!A0"),
    ]
    target = write_csv(results, tmp_path / "results.csv")
    import csv

    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [
        '\'=HYPERLINK("x")',
        "'+1.png",
        "'-2.png",
        "'@sum.png",
        "'\tx.png",
        "plain.png",
    ]
    assert (
        rows[2]["error"] == "'-2.png is broken"
        and rows[5]["error"] == "'=cmd|' /C calc'!A0"
    )
    assert rows[0]["digit"] == "7" and rows[0]["p0"] == "0.100000"


def test_a_newline_in_a_file_name_keeps_each_record_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "two\nlines.png"
    seven().save(odd, format="PNG")
    missing = tmp_path / "gone\r\nfile.png"
    assert main(["predict", str(odd), str(missing)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path}/two\\x0alines.png: 7 (")
    assert "gone\\x0d\\x0afile.png" in lines[1] and "no such file" in lines[1]


def test_an_unreadable_subfolder_is_reported_not_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seven().save(tmp_path / "seven.png")
    private = tmp_path / "private"
    private.mkdir()
    seven().save(private / "hidden-seven.png")
    real_scandir = os.scandir

    def refuse(path=".", *args, **kwargs):
        if Path(path) == private:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", refuse)
    results = predict_folder(tmp_path)
    assert [result.path for result in results] == [tmp_path / "seven.png", private]
    assert (
        results[1].error
        == f"{private}: the folder cannot be listed (permission denied); check its permissions"
    )
    files, failed = expand_paths([tmp_path])
    assert files == [tmp_path / "seven.png"] and failed == results[1:]
    assert main(["predict", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{private}: error: {private}: the folder cannot be listed (permission denied)"
        in out
    )


@pytest.mark.skipif(AS_ROOT, reason="root may list any folder")
def test_a_subfolder_without_read_permission_is_reported(tmp_path: Path) -> None:
    seven().save(tmp_path / "seven.png")
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o000)
    try:
        results = predict_folder(tmp_path)
    finally:
        private.chmod(0o700)
    assert not results[-1].ok and "permission denied" in results[-1].error


# --- poor: pictures that are not blank
# ----------------------------------------------------------------


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(
            lambda grey: grey.astype(np.float32) / PAPER * 1.01,
            id="float-overshoot-1.01",
        ),
        pytest.param(
            lambda grey: grey.astype(np.float64) / PAPER * 1.08 - 0.05,
            id="float-below-0-and-above-1",
        ),
        pytest.param(lambda grey: grey.astype(np.uint16), id="uint16-holding-0-255"),
        pytest.param(
            lambda grey: np.dstack([grey] * 3).astype(np.uint16),
            id="uint16-rgb-holding-0-255",
        ),
        pytest.param(
            lambda grey: Image.fromarray(grey.astype(np.float32) / PAPER * 1.01),
            id="F-image-overshoot",
        ),
    ],
)
def test_pictures_in_a_slightly_unusual_range_are_read(array) -> None:
    grey = np.asarray(seven())
    assert (
        similarity(
            reference_digit(), preprocess_image(array(grey), keep_steps=True).centred
        )
        > 0.95
    )


@pytest.mark.parametrize(
    "picture",
    [
        pytest.param(
            lambda grey: Image.fromarray(
                np.where(grey < 128, np.nan, 1.0).astype(np.float32)
            ),
            id="F-NaN",
        ),
        pytest.param(
            lambda grey: Image.fromarray(
                np.where(grey < 128, np.inf, 0.5).astype(np.float32)
            ),
            id="F-inf",
        ),
        pytest.param(lambda grey: np.where(grey < 128, np.nan, 1.0), id="array-NaN"),
    ],
)
def test_nan_or_infinite_pixels_are_not_called_blank(picture) -> None:
    with pytest.raises(InvalidImageError, match="NaN or infinite values; replace them"):
        preprocess_image(picture(np.asarray(seven())))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            np.linspace(-3, 300, 160 * 120).reshape(120, 160),
            "the float pixels run from -3 to 300, neither [0, 1] nor 0-255",
        ),
        (np.full((20, 20), "a"), "the array's dtype <U1 holds no pixels"),
        (np.full((20, 20), 1 + 2j), "the array's dtype complex128 holds no pixels"),
    ],
)
def test_arrays_that_hold_no_pixels(values: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidImageError) as raised:
        preprocess_image(values)
    assert message in str(raised.value)


def test_a_hard_edged_shadow_is_not_read_as_a_digit() -> None:
    shadow = Image.new("L", (160, 120), 0)
    ImageDraw.Draw(shadow).polygon([(0, 0), (100, 0), (60, 120), (0, 120)], fill=255)
    pixels = np.asarray(seven(), dtype=np.float32)
    pixels[np.asarray(shadow) > 0] *= (
        0.35  # a phone's shadow over the left half, the 7 half in it
    )
    with pytest.raises(
        InvalidImageError,
        match="far thicker than a pen stroke, looks like a shadow or the paper's "
        "edge; crop to the digit or light it evenly",
    ):
        preprocess_image(pixels.round().astype(np.uint8))
    pixels[np.asarray(shadow) > 0] /= (
        0.35 / 0.75
    )  # a light shadow leaves the digit readable
    assert predict_image(pixels.round().astype(np.uint8)).digit == 7


def test_a_bold_digit_in_a_small_picture_is_no_shadow() -> None:
    # A 7 in a 12x12 picture, strokes 3 pixels wide, enlarged 8 times as an upload
    # of a small scan is. Its ink is 31% of the picture thick, more than a shadow's
    # limit at the edge, but paper surrounds it: it is read.
    small = Image.new("L", (12, 12), 0)
    ImageDraw.Draw(small).line([(4, 4), (8, 4), (6, 8)], fill=255, width=3)
    enlarged = small.resize((96, 96), Image.Resampling.BILINEAR)
    steps = preprocess_image(enlarged, keep_steps=True)
    assert steps.centred.max() == 255


def test_a_blot_far_thicker_than_a_stroke_is_refused_even_inside_the_paper() -> None:
    blot = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(blot).ellipse([28, 28, 72, 72], fill=0)
    with pytest.raises(
        InvalidImageError,
        match=r"a dark blot 4\d% of the picture thick is far thicker than a pen "
        "stroke; write the digit with a thinner pen or leave more paper around it",
    ):
        preprocess_image(blot)


# --- poor: download and interruptions
# -------------------------------------------------------------------


def test_ctrl_c_during_download_keeps_the_verified_files_and_says_so(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    synthetic_root: Path,
) -> None:
    source = data_module.raw_folder(synthetic_root)
    raw = data_module.raw_folder(tmp_path)
    raw.mkdir(parents=True)
    for name in data_module.MNIST_FILES:
        # A local source: .gz files may hold the raw bytes too.
        (raw / f"{name}.gz").symlink_to(source / name)
    real_install = data_module._install_verified
    installed: list[str] = []

    def interrupted_at_the_third(name: str, source: Path, raw_dir: Path) -> None:
        if len(installed) == 2:
            raise KeyboardInterrupt
        real_install(name, source, raw_dir)
        installed.append(name)

    monkeypatch.setattr(data_module, "_install_verified", interrupted_at_the_third)
    assert main(["download", "--data", str(tmp_path), "--no-npm"]) == 130
    assert capsys.readouterr().err.strip() == (
        "python -m mnist_tutorial download: interrupted; the files verified so far are "
        "kept; run download again for the rest"
    )
    kept = sorted(path.name for path in raw.iterdir() if not path.name.endswith(".gz"))
    assert kept == sorted(installed) and data_module.unverified_files(tmp_path) == [
        name for name in data_module.MNIST_FILES if name not in installed
    ]

    monkeypatch.setattr(data_module, "_install_verified", real_install)
    assert main(["download", "--data", str(tmp_path), "--no-npm"]) == 0
    assert (
        capsys.readouterr().out.strip()
        == f"MNIST ready in {raw} (from local .gz files)"
    )
    assert main(["download", "--data", str(tmp_path), "--no-npm"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"MNIST is already in {raw}: the four files are present and verified"
    )


# --- the command line turns only the package's own errors into exit code 2
# ---------------------------


@pytest.mark.parametrize(
    "bug", [ValueError("a bug"), KeyError("a bug"), TypeError("a bug")]
)
def test_a_bug_is_a_traceback_not_a_usage_error(
    bug: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object) -> int:
        raise bug

    monkeypatch.setattr(cli, "run_evaluate", broken)
    with pytest.raises(type(bug), match="a bug"):
        main(["evaluate", "model.pt"])


def test_every_package_error_is_one_class(tmp_path: Path) -> None:
    from mnist_tutorial.data import DataRootError, DatasetUnavailableError

    for error in (
        CheckpointError,
        InvalidImageError,
        ExportError,
        ConfigError,
        ModelOutputError,
        DataRootError,
        DatasetUnavailableError,
        cli.UsageError,
    ):
        assert issubclass(error, MnistTutorialError), error
