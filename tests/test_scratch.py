"""The from-scratch network of chapter 7: its gradients, its Adam and its training agree with PyTorch."""

import pytest
import torch

from mnist_tutorial import scratch


@pytest.fixture
def problem() -> tuple[scratch.Parameters, torch.Tensor, torch.Tensor]:
    """A small float64 network (12-8-6-10) and a batch of 16 random rows with labels."""
    generator = torch.Generator().manual_seed(0)
    parameters = scratch.init_parameters(
        (12, 8, 6, 10), generator=generator, dtype=torch.float64
    )
    # Non-zero biases, so that their gradients and the ReLU masks are exercised too.
    for name in ("b1", "b2", "b3"):
        parameters[name] = 0.1 * torch.randn(
            parameters[name].shape, generator=generator, dtype=torch.float64
        )
    x = torch.randn(16, 12, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (16,), generator=generator)
    return parameters, x, labels


def test_init_shapes_and_scale() -> None:
    parameters = scratch.init_parameters(generator=torch.Generator().manual_seed(0))
    assert {name: tuple(value.shape) for name, value in parameters.items()} == {
        "W1": (784, 256),
        "b1": (256,),
        "W2": (256, 128),
        "b2": (128,),
        "W3": (128, 10),
        "b3": (10,),
    }
    assert parameters["W1"].std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02)
    with pytest.raises(ValueError, match="4 entries"):
        scratch.init_parameters((784, 10))


def test_cross_entropy_matches_torch_and_is_stable() -> None:
    logits = torch.tensor(
        [[1000.0, 0.0, -1000.0], [0.5, 0.25, 0.0]],
        dtype=torch.float64,
        requires_grad=True,
    )
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        loss, grad = scratch.cross_entropy(logits, labels)
    expected = torch.nn.functional.cross_entropy(logits, labels)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, expected_grad)


def test_gradients_match_autograd(problem) -> None:
    parameters, x, labels = problem
    with torch.no_grad():
        _loss, ours = scratch.loss_and_gradients(parameters, x, labels)
    reference = scratch.autograd_gradients(parameters, x, labels)
    errors = scratch.relative_errors(ours, reference)
    assert set(errors) == set(parameters)
    assert max(errors.values()) < 1e-10, errors


def test_gradients_are_not_computed_with_autograd(problem) -> None:
    parameters, x, labels = problem
    with torch.no_grad():
        loss, gradients = scratch.loss_and_gradients(parameters, x, labels)
    assert not loss.requires_grad
    assert all(gradient.grad_fn is None for gradient in gradients.values())


def test_relative_error_sees_a_wrong_gradient(problem) -> None:
    parameters, x, labels = problem
    reference = scratch.autograd_gradients(parameters, x, labels)
    wrong = dict(reference, W2=reference["W2"] * 1.01)
    errors = scratch.relative_errors(wrong, reference)
    assert errors["W2"] > 1e-3 and errors["W1"] == 0.0


def test_adam_matches_torch_optim_adam(problem) -> None:
    parameters, x, labels = problem
    ours = {name: value.clone() for name, value in parameters.items()}
    theirs = {
        name: value.clone().requires_grad_(True) for name, value in parameters.items()
    }
    optimizer = scratch.Adam(ours, lr=0.01)
    reference = torch.optim.Adam(theirs.values(), lr=0.01)
    for _ in range(5):
        with torch.no_grad():
            _, gradients = scratch.loss_and_gradients(ours, x, labels)
        optimizer.step(gradients)
        reference.zero_grad()
        for name, gradient in scratch.autograd_gradients(theirs, x, labels).items():
            theirs[name].grad = gradient
        reference.step()
    assert optimizer.steps == 5
    for name in parameters:
        torch.testing.assert_close(
            ours[name], theirs[name].detach(), rtol=1e-10, atol=1e-12
        )


def test_a_short_training_run_lowers_the_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    # Two Gaussian blobs per class in 20 dimensions: learnable in a few epochs.
    centres = 2 * torch.randn(10, 20, generator=generator)
    labels = torch.arange(10).repeat(40)
    x = centres[labels] + torch.randn(len(labels), 20, generator=generator)
    parameters = scratch.init_parameters((20, 32, 16, 10), generator=generator)
    optimizer = scratch.Adam(parameters, lr=0.01)
    losses = [
        scratch.train_epoch(
            parameters, optimizer, x, labels, batch_size=32, generator=generator
        )
        for _ in range(5)
    ]
    assert losses[-1] < 0.5 * losses[0]
    assert scratch.accuracy(parameters, x, labels, batch_size=64) > 0.9
