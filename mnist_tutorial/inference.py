"""Fast inference: the same answers in less time, and what each way costs (chapter 8).

An *engine* is a function from a normalised batch (N, 1, 28, 28) to its (N, 10) logits.
``build_engine`` makes one of ENGINES from a trained network:

- ``eager``: the network as trained, run by PyTorch as ``predict_split`` runs it;
- ``channels_last``: the same with the channels stored last in memory;
- ``folded``: that, with each BatchNorm folded into the convolution before it;
- ``compiled``: the folded network compiled by ``torch.compile`` (slow to start);
- ``bfloat16``: the folded network computing in 16-bit brain floats, large batches in
  chunks; fast only on a CPU with bfloat16 matrix units (Intel's AMX), slower elsewhere;
- ``onnx``: the network exported to ONNX and run by ONNX Runtime;
- ``int8``: that ONNX model with 8-bit weights and activations, calibrated on
  pictures you pass (take them from the training split).
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import ConfigError

Engine = Callable[[torch.Tensor], torch.Tensor]
ENGINES = ("eager", "channels_last", "folded", "compiled", "bfloat16", "onnx", "int8")
#: Pictures given to ONNX Runtime's quantiser to choose each activation's range.
CALIBRATION_BATCH = 100
#: Pictures the bfloat16 engine runs at once: the feature maps of a chunk stay in the
#: CPU's caches, where a batch of 1,000 took twice as long (benchmarks/README.md).
BFLOAT16_CHUNK = 256


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """Return a copy of the network, each BatchNorm folded into its conv (chapter 8).

    In eval mode a BatchNorm is a fixed scale and shift per channel: it can become
    the convolution's weights and bias. A max-pool between them commutes with the
    scale only where it is positive; any other layout raises ValueError.
    """
    folded = copy.deepcopy(network).eval()
    for block in folded.modules():
        if not isinstance(block, nn.Sequential):
            continue
        layers = list(block)
        for index, layer in enumerate(layers):
            if not isinstance(layer, nn.BatchNorm2d):
                continue
            between = layers[max(0, index - 2) : index]
            conv = next(
                (item for item in reversed(between) if isinstance(item, nn.Conv2d)),
                None,
            )
            others = [item for item in between if item is not conv]
            if conv is None or not all(isinstance(o, nn.MaxPool2d) for o in others):
                raise ValueError(
                    "a BatchNorm that does not follow a convolution (or a convolution "
                    "and a max-pool) cannot be folded"
                )
            assert layer.running_var is not None  # eval-mode BatchNorm keeps them
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            if others and not bool((scale > 0).all()):
                raise ValueError(
                    "a BatchNorm with a negative scale after a max-pool cannot be "
                    "folded: the pool would take the minimum"
                )
            layers[layers.index(conv)] = fuse_conv_bn_eval(conv, layer)
            layers[index] = nn.Identity()
        for position, layer in enumerate(layers):
            block[position] = layer
    return folded


def build_engine(
    network: nn.Module,
    engine: str = "folded",
    *,
    calibration: torch.Tensor | None = None,
    threads: int | None = None,
) -> Engine:
    """Return a function from normalised batches to logits, run by ``engine`` (ch. 8).

    ``int8`` needs ``calibration``: normalised pictures (N, 1, 28, 28) from the
    training split. ``threads`` limits ONNX Runtime (default: as many as PyTorch uses).
    """
    if engine not in ENGINES:
        raise ConfigError(
            f"engine={engine!r} is not one of {', '.join(ENGINES)}; choose one of them"
        )
    if engine == "int8" and calibration is None:
        raise ConfigError(
            "engine='int8' needs calibration pictures; pass calibration= a normalised "
            "batch from the training split"
        )
    network = copy.deepcopy(network).eval().cpu()
    if engine == "eager":
        return _pytorch_engine(network, torch.contiguous_format)
    if engine == "channels_last":
        return _pytorch_engine(network)
    folded = fold_batch_norm(network)
    if engine == "folded":
        return _pytorch_engine(folded)
    if engine == "compiled":
        return _pytorch_engine(cast(nn.Module, torch.compile(folded)))
    if engine == "bfloat16":
        return _bfloat16_engine(folded)
    onnx_model = export_logits(folded)
    if engine == "int8":
        assert calibration is not None  # checked above
        onnx_model = quantize(onnx_model, calibration)
    return _onnx_engine(onnx_model, threads or torch.get_num_threads())


def _pytorch_engine(
    network: nn.Module, layout: torch.memory_format = torch.channels_last
) -> Engine:
    """Return an engine that runs the network in PyTorch, tensors in ``layout``."""
    network = network.to(memory_format=layout)

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = network(batch.to(memory_format=layout))
        return logits.float()

    return run


def _bfloat16_engine(network: nn.Module) -> Engine:
    """Return an engine running the network in bfloat16, BFLOAT16_CHUNK at a time."""
    network = network.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> torch.Tensor:
        # Autocast keeps the weights in float32 and rounds each convolution's and
        # matrix product's inputs to bfloat16: 8 bits of mantissa, float32's range.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            chunks = [
                network(chunk.contiguous(memory_format=torch.channels_last))
                for chunk in torch.split(batch, BFLOAT16_CHUNK)
            ]
        return torch.cat(chunks).float()

    return run


def export_logits(network: nn.Module) -> bytes:
    """Return the network as an ONNX model from normalised pictures to logits."""
    example = torch.zeros(1, 1, 28, 28)
    with torch.no_grad():
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=18,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns the program
    model_bytes: bytes = program.model_proto.SerializeToString()
    return model_bytes


def quantize(onnx_model: bytes, calibration: torch.Tensor) -> bytes:
    """Return the ONNX model with int8 weights and activations (chapter 8).

    Each activation's range is chosen on the calibration pictures; the weights get a
    scale per output channel.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Pictures(CalibrationDataReader):
        """Feeds the calibration pictures to the quantiser, a batch at a time."""

        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(
                torch.split(calibration, CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch.numpy()}

    with tempfile.TemporaryDirectory() as folder:
        plain, prepared, quantized = (
            Path(folder) / name for name in ("plain.onnx", "prepared.onnx", "q.onnx")
        )
        plain.write_bytes(onnx_model)
        quant_pre_process(str(plain), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            Pictures(),
            # Quantise-dequantise pairs, which ONNX Runtime fuses into its int8
            # kernels: the QOperator form read 17 % of the test digits right here.
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return quantized.read_bytes()


def _onnx_engine(onnx_model: bytes, threads: int) -> Engine:
    """Return an engine that runs an ONNX model with ONNX Runtime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        onnx_model, options, providers=["CPUExecutionProvider"]
    )

    def run(batch: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {"image": batch.float().contiguous().numpy()})
        return torch.from_numpy(logits)

    return run


def onnx_operator_shares(
    onnx_model: bytes, images: torch.Tensor, threads: int | None = None
) -> dict[str, float]:
    """Return each operator type's share of ONNX Runtime's time on images (chapter 8).

    The largest share first: what limits the engine.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = onnxruntime.InferenceSession(
            onnx_model, options, providers=["CPUExecutionProvider"]
        )
        for batch in torch.split(images, 1000):
            session.run(None, {"image": batch.float().contiguous().numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    whole = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return {name: time / whole for name, time in ranked}
