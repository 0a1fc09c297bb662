"""Export a checkpoint to ONNX, for the book's live demo that runs the model in the browser.

The exported graph is self-contained: it takes the 28x28 MNIST-style picture as bytes (uint8,
0 = background, 255 = ink), normalises it with the checkpoint's own mean and standard deviation,
and returns the ten probabilities. The browser then only has to make the picture look like
MNIST (as ``mnist_tutorial.predict.preprocess_image`` does) and read the answer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import unwritable_folder
from .errors import MnistTutorialError
from .train import load_checkpoint, load_pretrained

#: ONNX operator set of the export; onnxruntime-web 1.17 and later run it.
OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
DEFAULT_OUT = Path("mnist_model.onnx")


class ExportError(MnistTutorialError, ValueError):
    """Raised when the model cannot be exported where asked; the message says why and what to do."""


class PixelsToProbabilities(nn.Module):
    """A trained model wrapped to take uint8 pictures (N, 1, 28, 28) and return softmax probabilities (N, 10)."""

    def __init__(self, model: nn.Module, normalization: tuple[float, float]) -> None:
        super().__init__()
        self.model = model
        mean, std = normalization
        # Folded into the graph, so the browser cannot normalise differently from the checkpoint.
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std)))
        self.register_buffer("shift", torch.tensor(mean / std))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the (N, 10) probabilities of a uint8 batch (N, 1, 28, 28)."""
        return self.model(image.float() * self.scale - self.shift).softmax(dim=1)


def export_onnx(
    checkpoint: str | os.PathLike[str] | None, out: str | os.PathLike[str] = DEFAULT_OUT
) -> Path:
    """Return the path of the ONNX file written for a checkpoint (None: the shipped pretrained model)."""
    out = Path(out)
    if out.is_dir():
        raise ExportError(
            f"{out} is a folder; give a file name such as {out / DEFAULT_OUT.name}"
        )
    if out.suffix != ".onnx":
        raise ExportError(
            f"{out} does not end in .onnx; give a name such as {out.with_suffix('.onnx').name}"
        )
    loaded = load_pretrained() if checkpoint is None else load_checkpoint(checkpoint)
    problem = unwritable_folder(out.parent)
    if problem:
        raise ExportError(
            f"{out} cannot be written ({problem}); choose another out path"
        )
    wrapped = PixelsToProbabilities(loaded.model, loaded.normalization).eval()
    example = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    temporary = out.with_name(f".{out.name}.part")
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                wrapped,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                # Any batch size: the demo sends one picture, the tests many.
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        program.model.metadata_props.update(
            _metadata(loaded.architecture, loaded.normalization, checkpoint)
        )
        program.save(temporary, external_data=False)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def _metadata(
    architecture: dict[str, Any],
    normalization: tuple[float, float],
    checkpoint: str | os.PathLike[str] | None,
) -> dict[str, str]:
    """Return the provenance stored in the ONNX file: architecture, normalisation and source checkpoint."""
    return {
        "architecture": str(architecture.get("name")),
        "normalization": f"{normalization[0]:.6f},{normalization[1]:.6f}",
        "source": "pretrained" if checkpoint is None else Path(checkpoint).name,
        "input": f"{INPUT_NAME}: uint8 (batch, 1, 28, 28), 0 = background, 255 = ink",
        "output": f"{OUTPUT_NAME}: float32 (batch, 10), softmax over the digits 0-9",
    }


def run_export(args: argparse.Namespace) -> int:
    """Export the checkpoint named on the command line and report the file; return the exit code."""
    path = export_onnx(args.checkpoint, args.out)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {INPUT_NAME} uint8 (batch, 1, 28, 28) -> "
        f"{OUTPUT_NAME} (batch, 10)"
    )
    return 0


def add_export_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Return the ``export-onnx`` subcommand after adding it to the CLI's subparsers."""
    export = commands.add_parser(
        "export-onnx",
        help="export a checkpoint to ONNX for the browser demo",
        description="Write a checkpoint as a self-contained ONNX model: uint8 28x28 pictures in, the ten "
        "probabilities out (normalisation and softmax included).",
    )
    export.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a checkpoint written by `train` (default: the shipped pretrained model)",
    )
    export.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"ONNX file to write; its folder is created (default: {DEFAULT_OUT})",
    )
    export.set_defaults(handler=run_export)
    return export
