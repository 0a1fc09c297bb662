"""The ONNX export that the browser demo runs: same answers as PyTorch, self-contained, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_tutorial import build_model, load_pretrained, save_checkpoint
from mnist_tutorial.cli import Parser
from mnist_tutorial.data import normalize
from mnist_tutorial.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    add_export_command,
    export_onnx,
)
from mnist_tutorial.predict import preprocess_image
from mnist_tutorial.train import CheckpointError

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
SAMPLES = Path(__file__).resolve().parent.parent / "book" / "samples"


def pictures() -> np.ndarray:
    """Return uint8 pictures (N, 1, 28, 28): book samples made to look like MNIST, and random noise."""
    samples = [
        preprocess_image(path, keep_steps=True).centred
        for path in sorted(SAMPLES.glob("*.png"))[::10]
    ]
    noise = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    return np.concatenate([np.stack(samples), noise])[:, None]


def torch_probabilities(
    model: torch.nn.Module, normalization: tuple[float, float], batch: np.ndarray
) -> np.ndarray:
    """Return PyTorch's probabilities for uint8 pictures, normalised as in training."""
    with torch.no_grad():
        return (
            model(normalize(torch.from_numpy(batch[:, 0]), *normalization))
            .softmax(1)
            .numpy()
        )


def onnx_probabilities(path: Path, batch: np.ndarray) -> np.ndarray:
    """Return onnxruntime's probabilities for uint8 pictures."""
    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model exported once."""
    return export_onnx(None, tmp_path_factory.mktemp("onnx") / "nested" / "cnn.onnx")


def test_export_reads_uint8_pictures_and_returns_probabilities(shipped: Path) -> None:
    model = onnx.load(shipped)
    onnx.checker.check_model(model)
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    # The weights are inside the file: the browser fetches one file.
    assert not list(shipped.parent.glob("*.data")) and shipped.stat().st_size > 100_000
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert (
        metadata["architecture"] == load_pretrained().architecture["name"]
        and metadata["source"] == "pretrained"
    )


def test_export_gives_pytorchs_answers(shipped: Path) -> None:
    checkpoint = load_pretrained()
    batch = pictures()
    expected = torch_probabilities(checkpoint.model, checkpoint.normalization, batch)
    actual = onnx_probabilities(shipped, batch)
    assert actual.shape == (len(batch), 10)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(actual.sum(1), 1.0, atol=1e-5)


def test_export_uses_the_checkpoints_own_normalisation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("cnn").eval()
    normalization = (0.5, 0.25)
    checkpoint = save_checkpoint(
        tmp_path / "odd.pt", model, normalization=normalization
    )
    path = export_onnx(checkpoint, tmp_path / "odd.onnx")
    batch = pictures()
    np.testing.assert_allclose(
        onnx_probabilities(path, batch),
        torch_probabilities(model, normalization, batch),
        atol=1e-5,
    )
    # The shipped model's normalisation would give other answers: the check above can fail.
    assert not np.allclose(
        torch_probabilities(model, (0.1307, 0.3081), batch),
        torch_probabilities(model, normalization, batch),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "name, message", [("folder", "is a folder"), ("model.pt", "does not end in .onnx")]
)
def test_bad_output_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ExportError, match=message):
        export_onnx(None, tmp_path / name)


def test_missing_checkpoint_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def command_line() -> Parser:
    """Return a parser with only the export-onnx subcommand, built as mnist_tutorial.cli builds its own."""
    parser = Parser(prog="python -m mnist_tutorial")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_export_command(commands)
    return parser


def test_command_exports_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site" / "model.onnx"
    args = command_line().parse_args(["export-onnx", "--out", str(out)])
    assert args.handler(args) == 0
    assert out.is_file()
    assert f"wrote {out}" in capsys.readouterr().out


def test_command_misuse_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        command_line().parse_args(["export-onnx", "--outt", "x.onnx"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unrecognized arguments: --outt" in error


def test_command_defaults_to_the_shipped_model() -> None:
    args = command_line().parse_args(["export-onnx"])
    assert args.checkpoint is None and args.out == Path("mnist_model.onnx")
