"""Tests of the command line: its names, its help, its one-line errors (library
arguments said as flags), and train / evaluate / download run in-process on the
synthetic MNIST.

The slow tests run it as a reader would, in a subprocess: the installed console script
and ``python -m mnist_tutorial`` on the real MNIST.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import one_line_error

import mnist_tutorial.cli as cli
import mnist_tutorial.data as data
from mnist_tutorial import build_model, load_checkpoint, save_checkpoint
from mnist_tutorial.cli import as_flags, main, program_name
from mnist_tutorial.records import RECIPES

MODULE = "python -m mnist_tutorial"
SCRIPT = "mnist-tutorial"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mnist_tutorial", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture()
def synthetic_cli(
    synthetic_mnist: data.MnistData, monkeypatch: pytest.MonkeyPatch
) -> list[object]:
    """The command line on the synthetic MNIST, whatever --data says; the list records
    data root it was asked to load."""
    loads: list[object] = []

    def load(root: object = None) -> data.MnistData:
        loads.append(root)
        return synthetic_mnist

    monkeypatch.setattr(cli, "load_mnist", load)
    return loads


def train_args(out: Path, root: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--no-augment",
        "--device",
        "cpu",
        "--no-progress",
        "--data",
        str(root),
        "--out",
        str(out),
        *extra,
    ]


# --- its name and its help ------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[], ["download"], ["train"], ["evaluate"], ["predict"], ["export-onnx"]],
)
@pytest.mark.parametrize("prog", [None, SCRIPT, MODULE])
def test_help_for_every_command_names_the_program(
    command: list[str], prog: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"], prog=prog)
    assert exited.value.code == 0
    # Under pytest, sys.argv[0] is not the console script: the module form.
    assert capsys.readouterr().out.startswith(
        f"usage: {prog or MODULE}{' ' + command[0] if command else ''}"
    )


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/usr/bin/mnist-tutorial", SCRIPT),
        ("/work/.venv/bin/mnist-tutorial", SCRIPT),
        ("mnist-tutorial", SCRIPT),
        ("mnist-tutorial.exe", SCRIPT),
        ("/work/mnist_tutorial/__main__.py", MODULE),
        ("/work/.venv/bin/pytest", MODULE),
        ("-c", MODULE),
        ("", MODULE),
    ],
)
def test_program_name_is_the_name_it_was_called_by(argv0: str, name: str) -> None:
    assert program_name(argv0) == name


def test_main_takes_its_name_from_how_it_was_called(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/mnist-tutorial", "--help"])
    with pytest.raises(SystemExit):
        main()
    assert capsys.readouterr().out.startswith("usage: mnist-tutorial ")
    monkeypatch.setattr(sys, "argv", ["/x/mnist_tutorial/__main__.py", "fly"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(
        "python -m mnist_tutorial: error: argument COMMAND: invalid choice: 'fly'"
    )


@pytest.mark.slow
def test_the_installed_console_script_runs() -> None:
    script = shutil.which(SCRIPT, path=str(Path(sys.executable).parent))
    assert script is not None, (
        f"the console script {SCRIPT} is not installed beside {sys.executable}; pip "
        "install -e . makes it"
    )
    result = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {SCRIPT} ")


# --- misuse: one line, exit code 2, flags not arguments -------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (
            ["train", "--optimizer", "rmsprop"],
            "argument --optimizer: invalid choice: 'rmsprop'",
        ),
        (["train", "--epochs", "0"], "epochs must be at least 1, got 0"),
        (["train", "--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
        (["train", "--save-every", "0"], "argument --save-every: must be at least 1"),
        (
            ["evaluate", "missing.pt"],
            "no checkpoint at missing.pt; check the path, or train a model and save it "
            "there",
        ),
        (["fly"], "argument COMMAND: invalid choice: 'fly'"),
    ],
)
def test_misuse_is_one_line_and_exit_code_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(args)
        raise SystemExit(code)
    assert exited.value.code == 2
    one_line_error(capsys, message)


@pytest.mark.parametrize(
    ("message", "flags"),
    [
        (
            "device='cuda' was asked for but this machine has no accelerator; use "
            "device='auto' or device='cpu'",
            "--device cuda was asked for but this machine has no accelerator; use "
            "--device auto or --device cpu",
        ),
        (
            "this checkpoint was trained without a moving average; resume with "
            "ema_decay=None",
            "this checkpoint was trained without a moving average; resume with "
            "--ema-decay none",
        ),
        (
            "this checkpoint holds no training state (saved with training_state=None), "
            "so training cannot resume from it; start a new run (resume=None)",
            "this checkpoint holds no training state (saved with --no-resumable), so "
            "training cannot resume from it; start a new run (no --resume)",
        ),
        ("use augment=True", "use --augment"),
        ("use augment=False", "use --no-augment"),
        ("set lr=0.003 and batch_size=64", "set --lr 0.003 and --batch-size 64"),
        (
            "batch_size must be at least 2, got 1",
            "batch_size must be at least 2, got 1",
        ),
        (
            "pass normalization=(mean, std) as it was trained with",
            "pass normalization=(mean, std) as it was trained with",
        ),
    ],
)
def test_as_flags_says_library_arguments_as_flags(message: str, flags: str) -> None:
    assert as_flags(message) == flags


def test_a_path_that_holds_name_equals_value_is_left_as_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["evaluate", "runs/lr=0.01.pt"]) == 2
    one_line_error(capsys, "no checkpoint at runs/lr=0.01.pt; check the path")
    assert as_flags("no checkpoint at seed=1.pt; check the path") == (
        "no checkpoint at seed=1.pt; check the path"
    )


def test_an_unknown_device_on_this_machine_is_said_in_flags(
    tmp_path: Path,
    synthetic_cli: list[object],
    no_accelerator: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "model.pt"
    args = train_args(out, tmp_path)
    args[args.index("--device") + 1] = "cuda"
    assert main(args) == 2
    error = one_line_error(
        capsys,
        "python -m mnist_tutorial train: error: --device cuda was asked for but this "
        "machine has no accelerator",
        "--device auto",
        "--device cpu",
    )
    assert "device='" not in error
    assert list(tmp_path.iterdir()) == []


def test_a_missing_device_is_reported_before_mnist_is_read(
    tmp_path: Path, no_accelerator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # The data root is an empty folder that may not be filled: reading MNIST first would
    # end in a missing-data error (exit 1) instead of the device's (exit 2).
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    out = tmp_path / "model.pt"
    command = ["train", "--device", "cuda", "--data", str(empty), "--out", str(out)]
    assert main(command) == 2
    one_line_error(capsys, "--device cuda was asked for")
    assert list(empty.iterdir()) == []


def test_evaluate_a_damaged_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["evaluate", str(damaged)]) == 2
    one_line_error(capsys, "is truncated or corrupt (File is not a zip file)")


def test_train_refuses_a_folder_as_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--epochs", "1", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "is a folder; give a file name")


# --- download, train and evaluate on the synthetic MNIST ------------------------------


def test_download_when_the_files_are_there(
    synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "--data", str(synthetic_root), "--no-npm"]) == 0
    assert capsys.readouterr().out == (
        f"MNIST is already in {data.raw_folder(synthetic_root)}: the four files are "
        "present and verified\n"
    )


def test_train_then_evaluate(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mlp.pt"
    args = train_args(out, tmp_path / "data")
    assert main(args, prog=SCRIPT) == 0
    assert synthetic_cli == [tmp_path / "data"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mlp: ") and lines[0].endswith(" parameters")
    assert any(line.startswith("epoch  1/1  train loss") for line in lines)
    test_line = next(line for line in lines if line.startswith("test accuracy"))
    assert test_line.endswith("errors in 100)")
    accuracy = float(test_line.split()[2].rstrip("%")) / 100
    assert lines[-1] == f"saved {out} and its model card {out.with_suffix('.json')}"
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["architecture"]["name"] == "mlp" and card["epochs_run"] == 1
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=5e-5)
    # The card's command is the program and the arguments, as they were given.
    assert card["command"] == f"{SCRIPT} {shlex.join(args)}"
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["metrics"]["test_accuracy"] == card["test_accuracy"]
    assert checkpoint["training_state"] is not None  # --resumable is the default
    temperature_line = next(line for line in lines if line.startswith("temperature"))
    assert temperature_line == (
        f"temperature {checkpoint['temperature']:.3f}, fitted on the validation split"
    )

    synthetic_cli.clear()
    assert main(["evaluate", str(out), "--data", str(tmp_path / "data")]) == 0
    assert synthetic_cli == [tmp_path / "data"]
    evaluated = capsys.readouterr().out
    assert evaluated.startswith(f"{out} on the test split (100 images)\n")
    assert f"accuracy {accuracy:.2%}" in evaluated
    assert "macro avg" in evaluated
    assert "top confusions (true -> predicted: times)" in evaluated
    assert main(["evaluate", str(out), "--split", "validation"]) == 0
    assert capsys.readouterr().out.startswith(
        f"{out} on the validation split (100 images)\n"
    )


def recipe_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def test_a_recipe_sets_the_model_and_the_run(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fast.pt"
    assert main(recipe_args(out, "--recipe", "fast", "--batch-size", "50")) == 0
    assert capsys.readouterr().out.startswith("cnn: 54,778 parameters\n")
    checkpoint = load_checkpoint(out)
    assert checkpoint.architecture == {
        "name": "cnn",
        "kwargs": {"widths": (16, 32, 64)},
    }
    assert checkpoint.config is not None
    # The recipe's settings, and over them the flag given.
    assert checkpoint.config.epochs == 1 and not checkpoint.config.augment
    assert checkpoint.config.batch_size == 50


def test_the_shipped_recipe_scans_once_and_fits_its_rule_on_the_scans_too(
    tmp_path: Path,
    synthetic_cli: list[object],
    synthetic_mnist: data.MnistData,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted: list[tuple[int, list[int], int]] = []
    real_rule = cli.fit_novelty_rule

    def recording_rule(model, train_images, train_labels, validation_images):
        fitted.append(
            (len(train_images), train_labels.unique().tolist(), len(validation_images))
        )
        return real_rule(model, train_images, train_labels, validation_images)

    monkeypatch.setattr(cli, "fit_novelty_rule", recording_rule)
    out = tmp_path / "shipped.pt"
    assert main(recipe_args(out, "--recipe", "shipped", "--epochs", "1")) == 0
    printed = capsys.readouterr().out
    train, validation = len(synthetic_mnist.train), len(synthetic_mnist.validation)
    assert printed.count("coarse scans of") == 1
    assert f"coarse scans of {train:,} training digits made in " in printed
    # The digits and the training share of their scans, each digit's scans a group of
    # their own (10 to 19); the threshold answers the validation digits as they are.
    share = RECIPES["shipped"].config.coarse_scans
    scans = round(share * train)
    assert share > 0 and fitted == [(train + scans, list(range(20)), validation)]
    checkpoint = load_checkpoint(out)
    assert checkpoint.config is not None and checkpoint.config.coarse_scans == share
    assert checkpoint.novelty_rule is not None
    assert checkpoint.novelty_rule.parameters["means"].shape[0] == 20
    # Calibrating it again scans again, so that the rule is fitted the same way.
    fitted.clear()
    assert main(["calibrate", str(out)]) == 0
    assert f"coarse scans of {train:,} training digits made in " in (
        capsys.readouterr().out
    )
    assert fitted == [(train + scans, list(range(20)), validation)]


def test_the_accurate_recipe_trains_without_scans_and_its_rule_counts_them(
    tmp_path: Path,
    synthetic_cli: list[object],
    synthetic_mnist: data.MnistData,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted: list[tuple[int, list[int]]] = []
    trained_on: list[float] = []
    real_rule, real_fit = cli.fit_novelty_rule, cli.fit

    def recording_rule(model, train_images, train_labels, validation_images):
        fitted.append((len(train_images), train_labels.unique().tolist()))
        return real_rule(model, train_images, train_labels, validation_images)

    def recording_fit(model, data, config, **kwargs):
        trained_on.append(config.coarse_scans)
        return real_fit(model, data, config, **kwargs)

    monkeypatch.setattr(cli, "fit_novelty_rule", recording_rule)
    monkeypatch.setattr(cli, "fit", recording_fit)
    out = tmp_path / "accurate.pt"
    # The recipe's settings on a cnn, which trains in a moment.
    args = recipe_args(out, "--recipe", "accurate", "--model", "cnn", "--epochs", "1")
    assert main(args) == 0
    share = RECIPES["accurate"].config.rule_scans
    train = len(synthetic_mnist.train)
    assert trained_on == [0.0]
    assert share > 0 and fitted == [(train + round(share * train), list(range(20)))]
    checkpoint = load_checkpoint(out)
    assert checkpoint.config is not None and checkpoint.config.rule_scans == share


def test_calibrate_with_a_share_of_scans_saves_it_and_fits_the_rule_on_them(
    tmp_path: Path,
    synthetic_cli: list[object],
    synthetic_mnist: data.MnistData,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cnn.pt"
    args = recipe_args(out, "--model", "cnn", "--epochs", "1")
    assert main(args) == 0
    before = load_checkpoint(out)
    assert before.config is not None and before.config.rule_scans == 0
    assert before.novelty_rule is not None
    assert before.novelty_rule.parameters["means"].shape[0] == 10
    capsys.readouterr()
    assert main(["calibrate", str(out), "--rule-coarse-scans", "0.2"]) == 0
    train = len(synthetic_mnist.train)
    assert f"coarse scans of {train:,} training digits made in " in (
        capsys.readouterr().out
    )
    after = load_checkpoint(out)
    assert after.config == replace(before.config, rule_coarse_scans=0.2)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["config"]["rule_coarse_scans"] == 0.2
    assert card["calibrate_command"].endswith(
        f"calibrate {out} --rule-coarse-scans 0.2"
    )
    assert after.novelty_rule is not None
    assert after.novelty_rule.parameters["means"].shape[0] == 20
    for name, tensor in before.model.state_dict().items():
        assert torch.equal(after.model.state_dict()[name], tensor)


def test_a_flag_overrides_the_recipe_and_another_model_drops_its_widths(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mlp.pt"
    args = recipe_args(out, "--recipe", "fast", "--model", "mlp", "--epochs", "2")
    assert main([*args, "--batch-size", "50"]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.architecture == {"name": "mlp", "kwargs": {}}
    assert checkpoint.config is not None and checkpoint.config.epochs == 2
    assert not checkpoint.config.augment


def test_a_recipe_and_resume_together_are_refused(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.pt"
    assert main(recipe_args(out, "--recipe", "fast", "--resume", str(out))) == 2
    one_line_error(capsys, "--recipe fast starts a new run", "give one of them")
    assert not out.exists() and synthetic_cli == []


def test_an_unknown_recipe_is_refused_with_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(recipe_args(tmp_path / "x.pt", "--recipe", "best"))
    assert exit_info.value.code == 2
    one_line_error(capsys, "invalid choice: 'best'", "default", "fast")


def test_calibrate_fits_the_temperature_and_keeps_the_rest(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mlp.pt"
    assert main(train_args(out, tmp_path / "data")) == 0
    saved = torch.load(out, weights_only=True)
    # As a checkpoint written before temperatures were fitted.
    torch.save({**saved, "temperature": 1.0}, out)
    capsys.readouterr()
    assert main(["calibrate", str(out), "--data", str(tmp_path / "data")]) == 0
    calibrated = torch.load(out, weights_only=True)
    assert capsys.readouterr().out == (
        f"{out}: temperature 1.000 -> {calibrated['temperature']:.3f}, fitted on the "
        "validation split\n"
        "no 'not a digit' rule: only a CNN laid out as cnn or cnn_large gets one\n"
        f"updated its model card {out.with_suffix('.json')}\n"
    )
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["calibrate_command"].endswith(
        f"calibrate {out} --data {tmp_path / 'data'}"
    )
    assert calibrated["novelty_rule"] is None
    assert calibrated["temperature"] == pytest.approx(saved["temperature"])
    assert calibrated["history"] == saved["history"]
    assert calibrated["metrics"] == saved["metrics"]
    for name, tensor in saved["state_dict"].items():
        assert torch.equal(calibrated["state_dict"][name], tensor)


def test_calibrate_leaves_a_json_beside_it_that_is_no_model_card_as_it_was(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mlp.pt"
    assert main(train_args(out, tmp_path / "data")) == 0
    beside = out.with_suffix(".json")
    beside.write_text('{"notes": "mine"')  # cut short: not JSON
    capsys.readouterr()
    assert main(["calibrate", str(out), "--data", str(tmp_path / "data")]) == 0
    assert "model card" not in capsys.readouterr().out
    assert beside.read_text() == '{"notes": "mine"'


def save_small_untrained_cnn(path: Path) -> Path:
    """Return the path of a checkpoint of a small cnn, without config or rule."""
    torch.manual_seed(0)
    return save_checkpoint(
        path, build_model("cnn", widths=(8, 16, 16)), normalization=(0.1307, 0.3081)
    )


def test_calibrate_gives_a_cnn_its_not_a_digit_rule(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_small_untrained_cnn(tmp_path / "cnn.pt")
    assert main(["calibrate", str(path), "--data", str(tmp_path / "data")]) == 0
    rule = load_checkpoint(path).novelty_rule
    assert rule is not None and rule.method == "combined"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"'not a digit' below a combined score of {rule.threshold:.2f}, which 99.5% "
        "of the validation digits reach"
    )


def test_calibrate_fits_the_rule_on_scans_without_inventing_a_config(
    tmp_path: Path, synthetic_cli: list[object]
) -> None:
    path = save_small_untrained_cnn(tmp_path / "cnn.pt")
    args = ["calibrate", str(path), "--data", str(tmp_path / "data")]
    assert main([*args, "--rule-coarse-scans", "0.5"]) == 0
    calibrated = load_checkpoint(path)
    assert calibrated.config is None
    assert calibrated.novelty_rule is not None
    assert calibrated.novelty_rule.parameters["means"].shape[0] == 20


def test_the_model_card_command_of_the_module_form(
    tmp_path: Path, synthetic_cli: list[object]
) -> None:
    out = tmp_path / "mlp.pt"
    args = train_args(out, tmp_path, "--lr", "0.003")
    assert main(args) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["command"] == f"{MODULE} {shlex.join(args)}"


def test_no_resumable_writes_a_smaller_checkpoint_that_refuses_to_resume(
    tmp_path: Path, synthetic_cli: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    resumable, inference_only = tmp_path / "resumable.pt", tmp_path / "inference.pt"
    for out, flag in [(resumable, "--resumable"), (inference_only, "--no-resumable")]:
        assert main(train_args(out, tmp_path, flag)) == 0
    assert torch.load(resumable, weights_only=True)["training_state"] is not None
    assert torch.load(inference_only, weights_only=True)["training_state"] is None
    assert inference_only.stat().st_size < resumable.stat().st_size / 2
    capsys.readouterr()
    synthetic_cli.clear()
    more = tmp_path / "more.pt"
    assert (
        main(
            [
                "train",
                "--epochs",
                "2",
                "--resume",
                str(inference_only),
                "--out",
                str(more),
            ]
        )
        == 2
    )
    one_line_error(
        capsys,
        "python -m mnist_tutorial train: error: this checkpoint holds no training "
        "state (saved with --no-resumable), so training cannot resume from it; start a "
        "new run (no --resume)",
    )
    assert synthetic_cli == [] and not more.exists()  # refused before loading the data


# --- the real MNIST, in a subprocess --------------------------------------------------


@pytest.mark.slow
def test_download_when_the_real_files_are_there(mnist) -> None:
    result = run("download")
    assert result.returncode == 0, result.stderr
    assert "the four files are present and verified" in result.stdout


@pytest.mark.slow
def test_train_then_evaluate_on_mnist(mnist, tmp_path: Path) -> None:
    out = tmp_path / "mlp.pt"
    trained = run(
        "train", "--model", "mlp", "--epochs", "1", "--no-augment", "--out", str(out)
    )
    assert trained.returncode == 0, trained.stderr
    lines = trained.stdout.splitlines()
    assert any(line.startswith("epoch  1/1  train loss") for line in lines)
    test_line = next(line for line in lines if line.startswith("test accuracy"))
    accuracy = float(test_line.split()[2].rstrip("%")) / 100
    assert accuracy > 0.95
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["architecture"]["name"] == "mlp" and card["epochs_run"] == 1
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=5e-5)
    assert card["command"] == (
        f"{MODULE} train --model mlp --epochs 1 --no-augment --out {out}"
    )

    evaluated = run("evaluate", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"accuracy {accuracy:.2%}" in evaluated.stdout
    assert (
        "macro avg" in evaluated.stdout
        and "top confusions (true -> predicted: times)" in evaluated.stdout
    )
