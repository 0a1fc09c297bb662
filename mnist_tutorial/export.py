"""Export a checkpoint to ONNX, for the book's live demo that runs it in the browser.

The exported graph is self-contained: it takes the 28x28 MNIST-style picture as bytes
(uint8, 0 = background, 255 = ink), normalises it with the checkpoint's own mean and
standard deviation, and returns the ten probabilities, calibrated with its temperature.
The browser then only has to make the picture look like MNIST (as
``mnist_tutorial.predict.preprocess_image`` does) and read the answer."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint, load_pretrained
from .errors import MnistTutorialError
from .files import unwritable_folder, write_atomically
from .model import conv_blocks_and_head, inside_view
from .novelty import Features, NoveltyRule, score_features

#: ONNX operator set of the export; onnxruntime-web 1.17 and later run it.
OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
#: The outputs ``--inside`` adds after the probabilities, for the demo's view inside.
CONTRIBUTIONS_NAME = "contributions"
BIAS_NAME = "bias"
IS_DIGIT_NAME = "is_digit"


def block_name(index: int) -> str:
    """Return the ONNX output name of the ``index``-th conv block's maps (from 1)."""
    return f"block{index}"


class ExportError(MnistTutorialError, ValueError):
    """Raised when the model cannot be exported where asked; says why and what to do."""


class PixelsToProbabilities(nn.Module):
    """A model that takes uint8 pictures (N, 1, 28, 28) and returns probabilities."""

    scale: torch.Tensor
    shift: torch.Tensor
    temperature: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        normalization: tuple[float, float],
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        mean, std = normalization
        # Folded into the graph, so the browser cannot normalise or calibrate
        # differently from the checkpoint.
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std)))
        self.register_buffer("shift", torch.tensor(mean / std))
        self.register_buffer("temperature", torch.tensor(temperature))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return calibrated (N, 10) probabilities for uint8 pictures (N, 1, 28, 28)."""
        logits: torch.Tensor = self.model(image.float() * self.scale - self.shift)
        return (logits / self.temperature).softmax(dim=1)


class PixelsToInside(PixelsToProbabilities):
    """Like PixelsToProbabilities, with each block's maps and the head's contributions.

    The outputs: probabilities (N, 10), each conv block's maps after its activation,
    the contributions (N, 10, H, W) of every position of the last maps to each logit,
    and the head's bias (N, 10), the same row for every picture (see
    ``model.look_inside``). With a novelty rule, also ``is_digit`` (N,): 1 where the
    rule answers, 0 where the model abstains, "not a digit" (chapter 8).
    """

    def __init__(
        self,
        model: nn.Module,
        normalization: tuple[float, float],
        temperature: float = 1.0,
        novelty_rule: NoveltyRule | None = None,
    ) -> None:
        super().__init__(model, normalization, temperature)
        self.novelty_rule = novelty_rule

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        """Return the probabilities, the maps, contributions, bias (and is_digit)."""
        view = inside_view(self.model, image.float() * self.scale - self.shift)
        bias = view.biases()
        logits = view.contributions.sum(dim=(2, 3)) + bias
        probabilities = (logits / self.temperature).softmax(dim=1)
        outputs = (probabilities, *view.feature_maps, view.contributions, bias)
        rule = self.novelty_rule
        if rule is None:
            return outputs
        # The same score as novelty.digit_scores, from the maps this pass already made.
        channel_means = torch.cat([maps.mean((2, 3)) for maps in view.feature_maps], 1)
        scores = score_features(
            rule.method, rule.parameters, Features(logits, channel_means)
        )
        return (*outputs, (scores >= rule.threshold).float())


def export_onnx(
    checkpoint: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    inside: bool = False,
) -> Path:
    """Return the ONNX file written for a checkpoint (None: the shipped model).

    With ``inside``, the graph also returns what the live demo shows inside the network:
    each conv block's maps and the head's per-position contributions, and whether the
    checkpoint's novelty rule answers each picture (PixelsToInside).
    """
    out = Path(out)
    if out.is_dir():
        raise ExportError(
            f"{out} is a folder; give a file name such as {out / 'mnist_model.onnx'}"
        )
    if out.suffix != ".onnx":
        raise ExportError(
            f"{out} does not end in .onnx; give a name such as "
            f"{out.with_suffix('.onnx').name}"
        )
    loaded = load_pretrained() if checkpoint is None else load_checkpoint(checkpoint)
    problem = unwritable_folder(out.parent)
    if problem:
        raise ExportError(
            f"{out} cannot be written ({problem}); choose another out path"
        )
    output_names = [OUTPUT_NAME]
    if inside:
        try:
            blocks, _ = conv_blocks_and_head(loaded.model)
        except ValueError as error:
            raise ExportError(
                f"inside=True: {error}; export without it, or a cnn checkpoint"
            ) from None
        output_names += [block_name(index + 1) for index in range(len(blocks))]
        output_names += [CONTRIBUTIONS_NAME, BIAS_NAME]
        if loaded.novelty_rule is not None:
            output_names.append(IS_DIGIT_NAME)
        wrapped: PixelsToProbabilities = PixelsToInside(
            loaded.model, loaded.normalization, loaded.temperature, loaded.novelty_rule
        )
    else:
        wrapped = PixelsToProbabilities(
            loaded.model, loaded.normalization, loaded.temperature
        )
    wrapped.eval()
    example = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            (example,),
            input_names=[INPUT_NAME],
            output_names=output_names,
            # Any batch size: the demo sends one picture, the tests many.
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns the program
    program.model.metadata_props.update(_metadata(loaded, checkpoint))
    return write_atomically(out, program.model_proto.SerializeToString())


def _metadata(
    loaded: Checkpoint, checkpoint: str | os.PathLike[str] | None
) -> dict[str, str]:
    """Return the provenance stored in the ONNX file: model, normalisation, source."""
    mean, std = loaded.normalization
    return {
        "architecture": str(loaded.architecture.get("name")),
        "normalization": f"{mean:.6f},{std:.6f}",
        "temperature": f"{loaded.temperature:.6f}",
        "source": "pretrained" if checkpoint is None else Path(checkpoint).name,
        "input": f"{INPUT_NAME}: uint8 (batch, 1, 28, 28), 0 = background, 255 = ink",
        "output": f"{OUTPUT_NAME}: float32 (batch, 10), softmax over the digits 0-9 of "
        "the logits divided by the temperature",
    }
