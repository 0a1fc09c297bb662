"""A two-hidden-layer perceptron trained without autograd (chapter 7).

Its forward pass, backward pass and Adam are written out by hand. Everything here works
on plain tensors under ``torch.no_grad()``; PyTorch is used only as a fast array
library. Weights are stored (fan_in, fan_out), so a layer is ``x @ W + b`` with one
image per row of ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import Split, normalize

Parameters = dict[str, Tensor]
LAYER_SIZES = (784, 256, 128, 10)


def init_parameters(
    sizes: Sequence[int] = LAYER_SIZES,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Parameters:
    """Return weights W1-W3 drawn from N(0, 2 / fan_in), and zero biases b1-b3.

    The weights have shape (fan_in, fan_out).
    """
    if len(sizes) != 4:
        raise ValueError(
            "the network has two hidden layers, so sizes needs 4 entries, "
            f"got {len(sizes)}"
        )
    parameters: Parameters = {}
    for layer, (fan_in, fan_out) in enumerate(pairwise(sizes), start=1):
        # He initialisation: a ReLU zeroes half its inputs, so variance 2 / fan_in
        # keeps the activations' scale the same from layer to layer.
        parameters[f"W{layer}"] = torch.randn(
            fan_in, fan_out, generator=generator, dtype=dtype
        ) * math.sqrt(2 / fan_in)
        parameters[f"b{layer}"] = torch.zeros(fan_out, dtype=dtype)
    return parameters


def flatten(split: Split, normalization: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Return a split's images as normalised float32 rows of 784 pixels, and labels."""
    return normalize(split.images, *normalization).flatten(1), split.labels


# ----- The three building blocks: forward and backward --------------------------------


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Return x W + b for a batch x of shape (N, fan_in)."""
    return x @ weight + bias


def linear_backward(
    grad_output: Tensor, x: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Return the gradients of the loss with respect to x, W and b.

    ``grad_output`` is the loss's gradient with respect to x W + b.
    """
    return grad_output @ weight.T, x.T @ grad_output, grad_output.sum(0)


def relu(x: Tensor) -> Tensor:
    """Return max(x, 0), element by element."""
    return x.clamp_min(0)


def relu_backward(grad_output: Tensor, x: Tensor) -> Tensor:
    """Return the gradient with respect to the ReLU's input.

    It is passed through where x > 0, and zero elsewhere.
    """
    return grad_output * (x > 0)


def cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Return the mean softmax cross-entropy of a batch, and its gradient.

    The gradient is with respect to the logits.
    """
    # Subtracting each row's maximum changes no probability
    # and keeps exp() from overflowing.
    shifted = logits - logits.amax(1, keepdim=True)
    log_probabilities = shifted - shifted.exp().sum(1, keepdim=True).log()
    rows = torch.arange(len(labels))
    loss = -log_probabilities[rows, labels].mean()
    grad_logits = log_probabilities.exp()
    grad_logits[rows, labels] -= 1
    return loss, grad_logits / len(labels)


# ----- The network: forward pass, backward pass ---------------------------------------


class Activations(NamedTuple):
    """What the forward pass keeps for the backward pass.

    The input, and each hidden layer before and after its ReLU.
    """

    x: Tensor
    z1: Tensor
    h1: Tensor
    z2: Tensor
    h2: Tensor


def forward(parameters: Parameters, x: Tensor) -> tuple[Tensor, Activations]:
    """Return the logits (N, 10) for a batch of rows x, and the saved activations.

    The activations are what the backward pass needs.
    """
    z1 = linear(x, parameters["W1"], parameters["b1"])
    h1 = relu(z1)
    z2 = linear(h1, parameters["W2"], parameters["b2"])
    h2 = relu(z2)
    logits = linear(h2, parameters["W3"], parameters["b3"])
    return logits, Activations(x, z1, h1, z2, h2)


def backward(
    parameters: Parameters, saved: Activations, grad_logits: Tensor
) -> Parameters:
    """Return the gradient of the loss with respect to every parameter.

    It starts from the loss's gradient with respect to the logits.
    """
    grad_h2, grad_w3, grad_b3 = linear_backward(grad_logits, saved.h2, parameters["W3"])
    grad_z2 = relu_backward(grad_h2, saved.z2)
    grad_h1, grad_w2, grad_b2 = linear_backward(grad_z2, saved.h1, parameters["W2"])
    grad_z1 = relu_backward(grad_h1, saved.z1)
    # Nothing upstream learns from the pixels' gradient,
    # so only W1 and b1 are needed here.
    grad_w1, grad_b1 = saved.x.T @ grad_z1, grad_z1.sum(0)
    return {
        "W1": grad_w1,
        "b1": grad_b1,
        "W2": grad_w2,
        "b2": grad_b2,
        "W3": grad_w3,
        "b3": grad_b3,
    }


def loss_and_gradients(
    parameters: Parameters, x: Tensor, labels: Tensor
) -> tuple[Tensor, Parameters]:
    """Return the batch's mean loss and its gradient with respect to every parameter."""
    logits, saved = forward(parameters, x)
    loss, grad_logits = cross_entropy(logits, labels)
    return loss, backward(parameters, saved, grad_logits)


# ----- Checking against autograd ------------------------------------------------------


def autograd_gradients(parameters: Parameters, x: Tensor, labels: Tensor) -> Parameters:
    """Return the same gradients from PyTorch's autograd and layers: the reference."""
    leaves = {
        name: value.detach().clone().requires_grad_(True)
        for name, value in parameters.items()
    }
    with torch.enable_grad():
        hidden = F.relu(F.linear(x, leaves["W1"].T, leaves["b1"]))
        hidden = F.relu(F.linear(hidden, leaves["W2"].T, leaves["b2"]))
        loss = F.cross_entropy(F.linear(hidden, leaves["W3"].T, leaves["b3"]), labels)
        grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def relative_errors(ours: Parameters, reference: Parameters) -> dict[str, float]:
    """Return, per parameter, |ours - reference| / (|ours| + |reference|).

    The norms are Euclidean; 0 means identical.
    """
    return {
        name: (
            (ours[name] - reference[name]).norm()
            / (ours[name].norm() + reference[name].norm())
        ).item()
        for name in reference
    }


# ----- Adam ---------------------------------------------------------------------------


@dataclass
class Adam:
    """Adam (Kingma and Ba, 2015) over a dict of tensors, updated in place.

    Its defaults are those of torch.optim.Adam.
    """

    parameters: Parameters
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    steps: int = 0
    first_moment: Parameters = field(init=False)
    second_moment: Parameters = field(init=False)

    def __post_init__(self) -> None:
        self.first_moment = {
            name: torch.zeros_like(value) for name, value in self.parameters.items()
        }
        self.second_moment = {
            name: torch.zeros_like(value) for name, value in self.parameters.items()
        }

    def step(self, gradients: Parameters) -> None:
        """Move every parameter one Adam step against its gradient; returns None.

        The parameters are updated in place.
        """
        self.steps += 1
        beta1, beta2 = self.betas
        # The moments start at zero, so early averages are too small
        # by exactly these factors.
        correction1 = 1 - beta1**self.steps
        correction2 = 1 - beta2**self.steps
        for name, parameter in self.parameters.items():
            gradient = gradients[name]
            m = self.first_moment[name].mul_(beta1).add_(gradient, alpha=1 - beta1)
            v = (
                self.second_moment[name]
                .mul_(beta2)
                .addcmul_(gradient, gradient, value=1 - beta2)
            )
            parameter.sub_(
                self.lr * (m / correction1) / ((v / correction2).sqrt() + self.eps)
            )


# ----- Training and evaluation --------------------------------------------------------


@torch.no_grad()
def train_epoch(
    parameters: Parameters,
    optimizer: Adam,
    x: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> float:
    """Return the mean training loss of one pass over shuffled mini-batches.

    The parameters are updated in place.
    """
    order = torch.randperm(len(labels), generator=generator)
    total = 0.0
    for start in range(0, len(labels), batch_size):
        batch = order[start : start + batch_size]
        loss, gradients = loss_and_gradients(parameters, x[batch], labels[batch])
        optimizer.step(gradients)
        total += loss.item() * len(batch)
    return total / len(labels)


@torch.no_grad()
def accuracy(
    parameters: Parameters, x: Tensor, labels: Tensor, *, batch_size: int = 5000
) -> float:
    """Return the share of rows of x whose highest logit is their label."""
    correct = sum(
        (
            forward(parameters, x[start : start + batch_size])[0].argmax(1)
            == labels[start : start + batch_size]
        )
        .sum()
        .item()
        for start in range(0, len(labels), batch_size)
    )
    return correct / len(labels)
