"""Tests of the command line, run as a reader would: ``python -m mnist_tutorial ...``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_tutorial.cli import main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mnist_tutorial", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.parametrize("command", [[], ["download"], ["train"], ["evaluate"]])
def test_help_for_every_command(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: python -m mnist_tutorial" in capsys.readouterr().out


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
        (["evaluate", "missing.pt"], "no checkpoint at missing.pt; train one with"),
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
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and "Traceback" not in error


def test_evaluate_a_damaged_checkpoint_is_one_line(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    result = run("evaluate", str(damaged))
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1
        and "is truncated or corrupt (File is not a zip file)" in result.stderr
    )


def test_download_when_the_files_are_there() -> None:
    result = run("download")
    assert result.returncode == 0, result.stderr


def test_train_then_evaluate(tmp_path: Path) -> None:
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
    assert card["command"].startswith("python -m mnist_tutorial train --model mlp")
    assert (
        torch.load(out, weights_only=True)["metrics"]["test_accuracy"]
        == card["test_accuracy"]
    )

    evaluated = run("evaluate", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"accuracy {accuracy:.2%}" in evaluated.stdout
    assert (
        "macro avg" in evaluated.stdout
        and "top confusions (true -> predicted: times)" in evaluated.stdout
    )


def test_no_resumable_writes_a_smaller_checkpoint_that_refuses_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resumable, inference_only = tmp_path / "resumable.pt", tmp_path / "inference.pt"
    for out, flag in [(resumable, "--resumable"), (inference_only, "--no-resumable")]:
        assert (
            main(
                [
                    "train",
                    "--model",
                    "mlp",
                    "--epochs",
                    "1",
                    "--no-augment",
                    flag,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    assert torch.load(resumable, weights_only=True)["training_state"] is not None
    assert torch.load(inference_only, weights_only=True)["training_state"] is None
    assert inference_only.stat().st_size < resumable.stat().st_size / 2
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--model",
                "mlp",
                "--epochs",
                "2",
                "--resume",
                str(inference_only),
                "--out",
                str(tmp_path / "more.pt"),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert (
        "holds no optimiser state" in error
        and "without --resume" in error
        and len(error.strip().splitlines()) == 1
    )


def test_train_refuses_a_folder_as_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
