"""The inference engines of chapter 8: the same answers as the network, however run.

The PyTorch engines are fast to build and tested on small networks; the ONNX ones export
the network (seconds), so those tests are slow.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_tutorial import build_model
from mnist_tutorial.errors import ConfigError
from mnist_tutorial.inference import (
    BFLOAT16_CHUNK,
    ENGINES,
    build_engine,
    fold_batch_norm,
)
from mnist_tutorial.predict import AUTO_ENGINE, Predictor, choose_engine

NORMALIZATION = (0.1307, 0.3081)


def trained_looking(widths: tuple[int, int, int] = (8, 16, 16)) -> nn.Module:
    """Return a small cnn whose BatchNorms hold statistics and scales a run could give."""
    torch.manual_seed(0)
    model = build_model("cnn", widths=widths)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
            layer.weight.data.uniform_(0.2, 1.5)
            layer.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def batch(count: int = 6, seed: int = 1) -> torch.Tensor:
    """Return normalised-looking pictures (count, 1, 28, 28)."""
    return torch.randn(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_folding_keeps_the_logits_and_removes_every_batch_norm() -> None:
    model = trained_looking()
    folded = fold_batch_norm(model)
    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in folded.modules())
    assert any(isinstance(layer, nn.BatchNorm2d) for layer in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(
            folded(batch()), model(batch()), atol=1e-4, rtol=1e-4
        )


def test_a_negative_scale_after_a_max_pool_is_not_folded() -> None:
    model = trained_looking()
    first_norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    first_norm.weight.data[0] = -0.5
    with pytest.raises(ValueError, match="negative scale after a max-pool"):
        fold_batch_norm(model)
    assert choose_engine(model, torch.device("cpu"), "auto") == "channels_last"


def test_a_batch_norm_without_a_convolution_before_it_is_not_folded() -> None:
    model = nn.Sequential(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(1))).eval()
    with pytest.raises(ValueError, match="does not follow a convolution"):
        fold_batch_norm(model)


@pytest.mark.parametrize("engine", ["eager", "channels_last", "folded"])
def test_the_pytorch_engines_give_the_networks_logits(engine: str) -> None:
    model = trained_looking()
    with torch.no_grad():
        expected = model(batch())
    run = build_engine(model, engine)
    torch.testing.assert_close(run(batch()), expected, atol=1e-4, rtol=1e-4)
    assert not model.training and model[0][0].weight.is_contiguous()


def test_the_bfloat16_engine_gives_the_networks_answers_in_chunks() -> None:
    model = trained_looking()
    pictures = batch(BFLOAT16_CHUNK + 44)
    with torch.no_grad():
        expected = model(pictures)
    logits = build_engine(model, "bfloat16")(pictures)
    assert logits.shape == (BFLOAT16_CHUNK + 44, 10) and logits.dtype == torch.float32
    # Eight bits of mantissa: close to the float32 logits, not equal to them.
    torch.testing.assert_close(logits, expected, atol=0.1, rtol=0.05)
    assert not torch.equal(logits, expected)
    assert (logits.argmax(1) == expected.argmax(1)).float().mean() >= 0.95


def test_an_unknown_engine_and_int8_without_pictures_are_config_errors() -> None:
    model = trained_looking()
    with pytest.raises(ConfigError, match=r"^engine='fast' is not one of eager, "):
        build_engine(model, "fast")
    with pytest.raises(ConfigError, match="engine='int8' needs calibration pictures"):
        build_engine(model, "int8")
    with pytest.raises(ConfigError, match=r"^engine='fast' is not one of auto, "):
        Predictor(model, NORMALIZATION, engine="fast")


def test_a_predictor_resolves_auto_and_keeps_its_answers() -> None:
    model = trained_looking()
    auto = Predictor(model, NORMALIZATION)
    assert auto.engine == AUTO_ENGINE and AUTO_ENGINE in ENGINES
    plain = Predictor(model, NORMALIZATION, engine="eager")
    assert plain.engine == "eager"
    torch.testing.assert_close(
        torch.from_numpy(auto.probabilities(batch())),
        torch.from_numpy(plain.probabilities(batch())),
        atol=1e-5,
        rtol=1e-4,
    )


def test_off_the_cpu_only_pytorch_runs_the_model() -> None:
    model = trained_looking()
    meta = torch.device("meta")
    assert choose_engine(model, meta, "auto") == "channels_last"
    with pytest.raises(ConfigError, match="engine='onnx' runs on the CPU only"):
        choose_engine(model, meta, "onnx")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onnx", "int8"])
def test_the_onnx_engines_give_the_networks_answers(engine: str) -> None:
    model = trained_looking()
    pictures = batch(200)
    with torch.no_grad():
        expected = model(pictures)
    run = build_engine(model, engine, calibration=batch(200, seed=2))
    logits = run(pictures)
    assert logits.shape == (200, 10) and logits.dtype == torch.float32
    if engine == "onnx":
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    else:
        # Eight bits per number: close, and the same digit for almost every picture.
        agree = (logits.argmax(1) == expected.argmax(1)).float().mean()
        assert agree >= 0.9 and not torch.equal(logits, expected)
