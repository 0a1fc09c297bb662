"""The ONNX export that the browser demo runs: same answers as PyTorch, self-contained,
written whole or not at all, clear errors.

A real export takes seconds (torch.export traces the model): those tests are slow. The
fast ones check the wrapper, the refusals and the writing with PyTorch's exporter stood
in for.
"""

from __future__ import annotations

import contextlib
import errno
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mnist_tutorial.files as files
from mnist_tutorial import build_model, load_pretrained, save_checkpoint
from mnist_tutorial.checkpoint import CheckpointError
from mnist_tutorial.cli import build_parser, main
from mnist_tutorial.data import normalize
from mnist_tutorial.export import (
    BIAS_NAME,
    CONTRIBUTIONS_NAME,
    INPUT_NAME,
    IS_DIGIT_NAME,
    OUTPUT_NAME,
    ExportError,
    PixelsToProbabilities,
    block_name,
    export_onnx,
)
from mnist_tutorial.model import look_inside
from mnist_tutorial.novelty import non_digit_pictures
from mnist_tutorial.predict import InvalidImageError, Predictor, preprocess_image

SAMPLES = Path(__file__).resolve().parent.parent / "book" / "samples"
#: What stands at the output path before an export: an older, longer file.
OLD = b"an older export " * 100_000


def pictures() -> np.ndarray:
    """Return uint8 pictures (N, 1, 28, 28): book samples made MNIST-like, and noise."""
    samples = [
        preprocess_image(path, keep_steps=True).centred
        for path in sorted(SAMPLES.glob("*.png"))[::10]
    ]
    noise = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    return np.concatenate([np.stack(samples), noise])[:, None]


def torch_probabilities(
    model: torch.nn.Module,
    normalization: tuple[float, float],
    batch: np.ndarray,
    temperature: float = 1.0,
) -> np.ndarray:
    """Return PyTorch's probabilities for uint8 pictures, normalised as in training."""
    with torch.no_grad():
        logits = model(normalize(torch.from_numpy(batch[:, 0]), *normalization))
        return (logits / temperature).softmax(1).numpy()


def onnx_module():
    """Return the onnx package (imported only by the slow tests: it takes a second)."""
    return pytest.importorskip("onnx")


def onnx_probabilities(path: Path, batch: np.ndarray) -> np.ndarray:
    """Return onnxruntime's probabilities for uint8 pictures."""
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def others(folder: Path, keep: str) -> list[str]:
    """The names in a folder besides ``keep``: temporary files an export left behind."""
    return sorted(path.name for path in folder.iterdir() if path.name != keep)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model exported once, over an older file."""
    out = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    out.write_bytes(OLD)
    return export_onnx(None, out)


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory):
    """A small cnn saved with its own normalisation and exported by the command line.

    Returns the checkpoint, the model, its normalisation, the ONNX file and what the
    command printed.
    """
    folder = tmp_path_factory.mktemp("odd")
    torch.manual_seed(0)
    model = build_model("cnn", widths=(8, 16, 16)).eval()
    normalization = (0.5, 0.25)
    checkpoint = save_checkpoint(folder / "odd.pt", model, normalization=normalization)
    out = folder / "site" / "odd.onnx"  # a folder that does not exist yet
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert code == 0
    return checkpoint, model, normalization, out, printed.getvalue()


@pytest.mark.slow
def test_export_reads_uint8_pictures_and_returns_probabilities(shipped: Path) -> None:
    onnx = onnx_module()
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
    assert metadata["normalization"] == "{:.6f},{:.6f}".format(
        *load_pretrained().normalization
    )
    assert metadata["temperature"] == f"{load_pretrained().temperature:.6f}"


@pytest.mark.slow
def test_export_replaces_an_existing_file_whole(shipped: Path) -> None:
    content = shipped.read_bytes()
    assert OLD[:20] not in content and not content.endswith(OLD[-20:])
    assert onnx_module().load_from_string(content).graph.input[0].name == INPUT_NAME
    assert others(shipped.parent, shipped.name) == []  # no .part file left


@pytest.mark.slow
def test_export_gives_pytorchs_answers(shipped: Path) -> None:
    checkpoint = load_pretrained()
    batch = pictures()
    # The shipped model is calibrated: the graph divides its logits by a temperature.
    assert checkpoint.temperature != 1.0
    expected = torch_probabilities(
        checkpoint.model, checkpoint.normalization, batch, checkpoint.temperature
    )
    actual = onnx_probabilities(shipped, batch)
    assert actual.shape == (len(batch), 10)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(actual.sum(1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_the_command_exports_and_reports(odd) -> None:
    _, _, _, out, printed = odd
    assert out.is_file() and others(out.parent, out.name) == []
    assert printed.startswith(f"wrote {out} (")
    assert printed.rstrip().endswith(
        f"MB): {INPUT_NAME} uint8 (batch, 1, 28, 28) -> {OUTPUT_NAME} (batch, 10)"
    )


@pytest.mark.slow
def test_export_uses_the_checkpoints_own_normalisation(odd) -> None:
    _, model, normalization, out, _ = odd
    batch = pictures()
    np.testing.assert_allclose(
        onnx_probabilities(out, batch),
        torch_probabilities(model, normalization, batch),
        atol=1e-5,
    )
    # The shipped model's normalisation would give other answers: the check above can
    # fail.
    assert not np.allclose(
        torch_probabilities(model, (0.1307, 0.3081), batch),
        torch_probabilities(model, normalization, batch),
        atol=1e-5,
    )
    metadata = {
        entry.key: entry.value for entry in onnx_module().load(out).metadata_props
    }
    assert metadata["source"] == "odd.pt" and metadata["normalization"] == (
        "0.500000,0.250000"
    )


def test_pixels_to_probabilities_folds_in_the_normalisation_and_temperature() -> None:
    torch.manual_seed(0)
    model = build_model("mlp").eval()
    batch = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    wrapped = PixelsToProbabilities(model, (0.5, 0.25), temperature=0.5).eval()
    with torch.no_grad():
        logits = model(normalize(batch[:, 0], 0.5, 0.25))
        torch.testing.assert_close(wrapped(batch), (logits / 0.5).softmax(1))
        assert not torch.allclose(wrapped(batch), logits.softmax(1))


@pytest.mark.slow
def test_a_failed_write_leaves_the_older_file_whole(
    odd, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, _, _, out, _ = odd
    before = out.read_bytes()

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_onnx(checkpoint, out)
    assert out.read_bytes() == before
    assert others(out.parent, out.name) == []


class StandIn:
    """What torch.onnx.export returns, without the tracing: a fixed serialised model."""

    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}
        self.model = SimpleNamespace(metadata_props=self.metadata)
        self.model_proto = SimpleNamespace(SerializeToString=lambda: b"the new model")


@pytest.fixture()
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[StandIn]:
    """PyTorch's exporter replaced by StandIn; the list holds each one it returned."""
    made: list[StandIn] = []

    def export(*args: object, **kwargs: object) -> StandIn:
        made.append(StandIn())
        return made[-1]

    monkeypatch.setattr(torch.onnx, "export", export)
    return made


def test_export_replaces_the_file_whole_with_the_serialised_model(
    tmp_path: Path, stand_in: list[StandIn]
) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(OLD)
    assert export_onnx(None, out) == out
    assert out.read_bytes() == b"the new model"
    assert others(tmp_path, out.name) == []
    (program,) = stand_in
    assert program.metadata["source"] == "pretrained"
    assert program.metadata["architecture"] == load_pretrained().architecture["name"]


def test_an_export_that_cannot_be_written_leaves_the_older_file_whole(
    tmp_path: Path, stand_in: list[StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(OLD)

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_onnx(None, out)
    assert out.read_bytes() == OLD
    assert others(tmp_path, out.name) == []


@pytest.mark.parametrize(
    "name, message", [("folder", "is a folder"), ("model.pt", "does not end in .onnx")]
)
def test_bad_output_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ExportError, match=message):
        export_onnx(None, tmp_path / name)
    assert [path.name for path in tmp_path.iterdir()] == ["folder"]


def test_missing_checkpoint_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_command_misuse_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export-onnx", "--outt", "x.onnx"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unrecognized arguments: --outt" in error


def test_command_defaults_to_the_shipped_model() -> None:
    args = build_parser().parse_args(["export-onnx"])
    assert args.checkpoint is None and args.out == Path("mnist_model.onnx")


@pytest.mark.slow
def test_the_inside_export_returns_what_look_inside_computes(
    odd, tmp_path: Path
) -> None:
    checkpoint, model, normalization, plain, _ = odd
    out = tmp_path / "inside.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        command = ["export-onnx", "--checkpoint", str(checkpoint), "--out", str(out)]
        assert main([*command, "--inside"]) == 0
    assert (
        printed.getvalue()
        .rstrip()
        .endswith("(batch, 10), each block's maps, contributions and bias")
    )
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [OUTPUT_NAME, *map(block_name, (1, 2, 3)), CONTRIBUTIONS_NAME, BIAS_NAME]
    assert [output.name for output in session.get_outputs()] == names
    batch = pictures()
    probabilities, *maps, contributions, bias = session.run(names, {INPUT_NAME: batch})
    # The probabilities are the plain export's.
    np.testing.assert_allclose(
        probabilities, onnx_probabilities(plain, batch), atol=1e-6
    )
    view = look_inside(model, normalize(torch.from_numpy(batch[:, 0]), *normalization))
    for actual, expected in zip(maps, view.feature_maps, strict=True):
        np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(contributions, view.contributions.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        bias, np.tile(view.bias.numpy(), (len(batch), 1)), atol=1e-6
    )


@pytest.mark.slow
def test_the_inside_export_of_a_hidden_layer_head_adds_up_to_its_probabilities(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = build_model("cnn_large")
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model(torch.randn(64, 1, 28, 28))
    normalization = (0.5, 0.25)
    checkpoint = save_checkpoint(
        tmp_path / "large.pt", model.eval(), normalization=normalization
    )
    out = export_onnx(checkpoint, tmp_path / "large.onnx", inside=True)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [OUTPUT_NAME, *map(block_name, (1, 2, 3, 4)), CONTRIBUTIONS_NAME, BIAS_NAME]
    assert [output.name for output in session.get_outputs()] == names
    batch = pictures()
    probabilities, *_, contributions, bias = session.run(names, {INPUT_NAME: batch})
    view = look_inside(model, normalize(torch.from_numpy(batch[:, 0]), *normalization))
    np.testing.assert_allclose(contributions, view.contributions.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        bias, np.tile(view.bias.numpy(), (len(batch), 1)), atol=1e-6
    )
    logits = torch.from_numpy(contributions.sum(axis=(2, 3)) + bias)
    np.testing.assert_allclose(logits.softmax(1).numpy(), probabilities, atol=1e-5)


@pytest.mark.slow
def test_the_inside_export_abstains_where_the_predictor_does(tmp_path: Path) -> None:
    out = export_onnx(None, tmp_path / "shipped-inside.onnx", inside=True)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[-1].name == IS_DIGIT_NAME
    pictures = [
        *non_digit_pictures("letters", 40, seed=3),
        *sorted(SAMPLES.glob("*.png")),
    ]
    fields, expected = [], []
    predictor = Predictor()
    for picture in pictures:
        try:
            steps = preprocess_image(picture, predictor.normalization, keep_steps=True)
        except InvalidImageError:
            continue
        fields.append(steps.centred)
        expected.append(predictor.predict_batch(steps.tensor)[0].digit is not None)
    is_digit = session.run([IS_DIGIT_NAME], {INPUT_NAME: np.stack(fields)[:, None]})[0]
    assert is_digit.tolist() == [float(answered) for answered in expected]
    # Both kinds of answer are there: the check can fail either way.
    assert 0 < sum(expected) < len(expected)


def test_only_a_cnn_can_be_exported_with_its_inside(tmp_path: Path) -> None:
    checkpoint = save_checkpoint(
        tmp_path / "mlp.pt", build_model("mlp"), normalization=(0.1, 0.3)
    )
    with pytest.raises(ExportError, match="as in the cnn and cnn_large architectures"):
        export_onnx(checkpoint, tmp_path / "mlp.onnx", inside=True)
    assert not (tmp_path / "mlp.onnx").exists()
