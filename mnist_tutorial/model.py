"""The book's architectures, one registry, and tools to inspect them (chapter 2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypedDict, cast, overload

import torch
from torch import nn

ModelBuilder = Callable[..., nn.Sequential]
MODELS: dict[str, ModelBuilder] = {}
DEFAULT_MODEL = "cnn"


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Return a decorator that adds a model builder to the registry under ``name``."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder

    return add


def available_models() -> list[str]:
    """Return the registered architecture names."""
    return sorted(MODELS)


class Architecture(TypedDict):
    """How to rebuild a model: a registered name and its builder's arguments."""

    name: str
    kwargs: dict[str, Any]


class Network(nn.Sequential):
    """A model of the book: layers and the architecture that rebuilds it (chapter 2)."""

    def __init__(self, architecture: Architecture, layers: nn.Sequential) -> None:
        super().__init__(*layers)
        # Saved with the weights, so that a checkpoint can rebuild the model.
        self.architecture = architecture

    @overload
    def __getitem__(self, idx: slice) -> nn.Sequential: ...
    @overload
    def __getitem__(self, idx: int) -> nn.Module: ...
    def __getitem__(self, idx: slice | int) -> nn.Sequential | nn.Module:
        """Return a layer, or for a slice the layers as a plain nn.Sequential.

        A slice is not the whole architecture, so it is no Network.
        """
        if isinstance(idx, slice):
            return nn.Sequential(*list(self)[idx])
        return super().__getitem__(idx)


def build_model(name: str = DEFAULT_MODEL, **kwargs: Any) -> Network:
    """Return a freshly initialised model of a registered architecture (chapter 2)."""
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(available_models())}"
        )
    return Network({"name": name, "kwargs": dict(kwargs)}, MODELS[name](**kwargs))


@register("mlp")
def mlp(hidden: tuple[int, int] = (256, 128), dropout: float = 0.0) -> nn.Sequential:
    """Return a 784-256-128-10 perceptron (chapter 2's baseline)."""
    first, second = hidden
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, first),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(first, second),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(second, 10),
    )


@register("lenet5")
def lenet5() -> nn.Sequential:
    """Return LeCun et al.'s 1998 LeNet-5: tanh, average pooling (chapter 2)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, 10),
    )


def conv_block(
    in_channels: int, out_channels: int, pool: bool = False
) -> nn.Sequential:
    """Return a 3x3 convolution (no bias), optional 2x2 max-pool, BatchNorm, ReLU."""
    # Pooling before BatchNorm is a speed trick: BatchNorm and ReLU then touch a quarter
    # of the values, and that work dominates on a CPU. It is a different network from
    # the usual conv-BN-ReLU-pool: BatchNorm's statistics are taken over the pooled
    # maxima, and where a channel's learned scale is negative, max-pooling first keeps
    # the other extreme.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        *([nn.MaxPool2d(2)] if pool else []),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@register("cnn")
def cnn(
    widths: tuple[int, int, int] = (24, 48, 96), dropout: float = 0.1
) -> nn.Sequential:
    """Return the default CNN: three conv blocks and a linear head (chapter 2)."""
    first, second, third = widths
    return nn.Sequential(
        conv_block(1, first, pool=True),  # 28 -> 14
        conv_block(first, second, pool=True),  # 14 -> 7
        conv_block(second, third),
        # A linear layer that sees where each feature is learns far faster than one fed
        # a global average, for few multiply-adds.
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(third * 7 * 7, 10),
    )


@register("cnn_large")
def cnn_large(
    widths: tuple[int, int, int, int] = (32, 32, 64, 64), dropout: float = 0.25
) -> nn.Sequential:
    """Return the four-conv CNN with dropout; 870k parameters by default (chapter 2)."""
    first, second, third, fourth = widths
    return nn.Sequential(
        conv_block(1, first),
        conv_block(first, second, pool=True),
        nn.Dropout(dropout),
        conv_block(second, third),
        conv_block(third, fourth, pool=True),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(fourth * 7 * 7, 256, bias=False),
        nn.BatchNorm1d(256),
        nn.ReLU(inplace=True),
        nn.Dropout(2 * dropout),
        nn.Linear(256, 10),
    )


@register("cnn_large_half")
def cnn_large_half(dropout: float = 0.25) -> nn.Sequential:
    """Return cnn_large at half its widths: the book's model (chapter 8)."""
    return cnn_large((16, 16, 32, 32), dropout)


@dataclass(frozen=True)
class InsideView:
    """What a CNN computes from pictures to logits, position by position (chapter 2).

    ``feature_maps`` holds each conv block's output after its activation. Each digit's
    logit is the sum of ``contributions`` (N, 10, H, W), one per position of the last
    maps, plus ``bias`` (10,), the same for every picture: the head's logits when no
    feature is found anywhere (all maps zero). A head of one linear layer is that sum
    as it stands. For a head with a hidden ReLU layer, each position's contribution
    is how much it moves each logit along the straight path from all-zero maps to the
    picture's (integrated gradients), exact because each unit switches at most once
    on that path (chapter 5).
    """

    feature_maps: list[torch.Tensor]
    contributions: torch.Tensor
    bias: torch.Tensor

    def biases(self) -> torch.Tensor:
        """Return the bias added to the logits, one row per picture (N, 10)."""
        return self.bias.expand(self.contributions.shape[0], -1)


#: Head layers whose logits look_inside splits exactly by position: affine layers
#: (Dropout and BatchNorm as in eval mode) and one ReLU.
HEAD_LAYERS = (nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout)


def conv_blocks_and_head(network: nn.Module) -> tuple[list[nn.Module], nn.Sequential]:
    """Return the conv blocks and the head (the layers after Flatten) of a CNN.

    A block starts at each layer that holds a convolution; the layers between (such as
    dropout) belong to the block before them. Raises ValueError for other layouts: the
    head must end in a Linear layer, hold only Linear, BatchNorm1d, ReLU and Dropout,
    and at most one ReLU.
    """
    layers = list(network) if isinstance(network, nn.Sequential) else []
    flatten = next(
        (index for index, layer in enumerate(layers) if isinstance(layer, nn.Flatten)),
        0,
    )

    def convolutional(layer: nn.Module) -> bool:
        return any(isinstance(part, nn.Conv2d) for part in layer.modules())

    groups: list[list[nn.Module]] = []
    for layer in layers[:flatten]:
        if convolutional(layer) or not groups:
            groups.append([])
        groups[-1].append(layer)
    head = layers[flatten + 1 :]
    if (
        not groups
        or not convolutional(groups[0][0])
        or not head
        or not isinstance(head[-1], nn.Linear)
        or not all(isinstance(layer, HEAD_LAYERS) for layer in head)
        or any(
            isinstance(layer, nn.BatchNorm1d) and not layer.track_running_stats
            for layer in head
        )
        or sum(isinstance(layer, nn.ReLU) for layer in head) > 1
    ):
        raise ValueError(
            "looking inside needs conv blocks, then Flatten and a head of Linear, "
            "BatchNorm1d, Dropout and at most one ReLU layer, ending in a Linear one, "
            "as in the cnn and cnn_large architectures; this model is laid out "
            "otherwise"
        )
    blocks = [
        group[0] if len(group) == 1 else nn.Sequential(*group) for group in groups
    ]
    return blocks, nn.Sequential(*head)


@torch.no_grad()
def look_inside(network: nn.Module, images: torch.Tensor) -> InsideView:
    """Return the feature maps and the head's per-position contributions (chapter 2).

    ``images`` is a normalised batch (N, 1, 28, 28); the network is used in eval mode.
    """
    was_training = network.training
    network.eval()
    try:
        view = inside_view(network, images)
    finally:
        network.train(was_training)
    # A copy of the head's bias, not the parameter itself.
    return replace(view, bias=view.bias.detach().clone())


def inside_view(network: nn.Module, images: torch.Tensor) -> InsideView:
    """Return the InsideView of a batch; a head with hidden layers as in eval mode."""
    blocks, head = conv_blocks_and_head(network)
    feature_maps = []
    maps = images
    for block in blocks:
        maps = block(maps)
        feature_maps.append(maps)
    slopes, bias = path_slopes(head, maps.flatten(1))
    slopes = slopes.reshape(*slopes.shape[:-1], *maps.shape[1:])
    each = "kchw" if slopes.dim() == 4 else "nkchw"  # a linear head's slopes are shared
    contributions = torch.einsum(f"{each},nchw->nkhw", slopes, maps)
    return InsideView(feature_maps, contributions, bias)


def path_slopes(
    head: nn.Sequential, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the head's mean slopes from zero to each input, and its output at zero.

    The slopes (N, outputs, inputs) are averaged over the straight path from all-zero
    inputs to each input, so that slopes times inputs sum to the head's output there
    minus its output at zero (outputs,). A head without a ReLU has the same slopes
    everywhere, returned once (outputs, inputs). BatchNorm1d and Dropout act as in
    eval mode; conv_blocks_and_head lets through at most one ReLU.
    """
    relu = next(
        (index for index, layer in enumerate(head) if isinstance(layer, nn.ReLU)), None
    )
    zero = inputs.new_zeros(1, inputs.shape[1])
    if relu is None:
        return affine_slopes(head, inputs), head(zero)[0]
    before, after = head[:relu], head[relu + 1 :]
    start, end = before(zero), before(inputs)
    # Before the ReLU the head is affine, so each unit's input moves in a straight
    # line, start + t * rise for t from 0 to 1, and is above zero on a share of it.
    rise = end - start
    crossing = -start / torch.where(rise == 0, torch.ones_like(rise), rise)
    share_on = torch.where(
        rise > 0,
        (1 - crossing).clamp(0, 1),
        torch.where(rise < 0, crossing.clamp(0, 1), (start > 0).to(rise.dtype)),
    )
    slopes = affine_slopes(after, rise) * share_on[:, None, :]
    return slopes @ affine_slopes(before, inputs), after(torch.relu(start))[0]


def affine_slopes(layers: nn.Sequential, inputs: torch.Tensor) -> torch.Tensor:
    """Return the matrix (outputs, width) of Linear, BatchNorm1d and Dropout layers.

    ``inputs`` (N, width) says the width, device and dtype the layers read.
    """
    slopes: torch.Tensor | None = None
    for layer in layers:
        if isinstance(layer, nn.Linear):
            slopes = layer.weight if slopes is None else layer.weight @ slopes
        elif isinstance(layer, nn.BatchNorm1d):
            # conv_blocks_and_head only lets through BatchNorm with running statistics.
            scale = torch.rsqrt(cast(torch.Tensor, layer.running_var) + layer.eps)
            if layer.weight is not None:
                scale = scale * layer.weight
            slopes = torch.diag(scale) if slopes is None else scale[:, None] * slopes
    if slopes is None:
        return torch.eye(inputs.shape[1], device=inputs.device, dtype=inputs.dtype)
    return slopes


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Return the number of (trainable) parameters."""
    return sum(
        p.numel() for p in model.parameters() if p.requires_grad or not trainable_only
    )


@dataclass(frozen=True)
class LayerSummary:
    """One leaf layer: name, type, output shape, parameters, multiply-adds per image."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    multiply_adds: int


def _multiply_adds(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kernel = (
            module.kernel_size[0]
            * module.kernel_size[1]
            * module.in_channels
            // module.groups
        )
        return output[0].numel() * kernel
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def summarize(
    model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)
) -> list[LayerSummary]:
    """Return a per-layer summary, from one zero batch run through the model."""
    rows: list[LayerSummary] = []
    hooks = []
    for name, module in model.named_modules():
        if list(module.children()):
            continue

        def record(
            module: nn.Module, inputs: Any, output: torch.Tensor, name: str = name
        ) -> None:
            rows.append(
                LayerSummary(
                    name=name,
                    kind=type(module).__name__,
                    output_shape=tuple(output.shape[1:]),
                    parameters=sum(p.numel() for p in module.parameters()),
                    multiply_adds=_multiply_adds(module, output),
                )
            )

        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(input_shape, device=parameter.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return rows


def format_summary(rows: list[LayerSummary]) -> str:
    """Return the summary as an aligned text table with totals."""
    lines = [
        f"{'layer':<8} {'type':<18} {'output shape':<16} "
        f"{'parameters':>11} {'mult-adds':>11}"
    ]
    for row in rows:
        shape = "x".join(map(str, row.output_shape))
        lines.append(
            f"{row.name:<8} {row.kind:<18} {shape:<16} "
            f"{row.parameters:>11,} {row.multiply_adds:>11,}"
        )
    lines.append(
        f"{'total':<44} {sum(r.parameters for r in rows):>11,} "
        f"{sum(r.multiply_adds for r in rows):>11,}"
    )
    return "\n".join(lines)
