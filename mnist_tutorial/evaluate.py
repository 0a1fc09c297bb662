"""Evaluation: a split's predictions and the metrics that explain them (chapter 4)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import (
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.metrics import log_loss as sklearn_log_loss
from torch import nn

from .checkpoint import TEMPERATURE_RANGE
from .data import DeviceLoader, Split
from .device import select_device
from .errors import ConfigError
from .inference import build_engine


@dataclass(frozen=True)
class Predictions:
    """Per-image results over a split.

    Softmax probabilities (N, 10), predicted and true labels (N,).
    """

    probabilities: np.ndarray
    predicted: np.ndarray
    labels: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """Return the probability of the predicted class for each image."""
        confidence: np.ndarray = self.probabilities.max(axis=1)
        return confidence

    @property
    def correct(self) -> np.ndarray:
        """Return a boolean mask of the right predictions."""
        correct: np.ndarray = self.predicted == self.labels
        return correct


@torch.no_grad()
def split_logits(
    model: nn.Module,
    split: Split,
    normalization: tuple[float, float],
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1000,
    engine: str = "eager",
) -> torch.Tensor:
    """Return the model's (N, 10) float32 logits for a split, on the CPU (chapter 4).

    The model is put in eval mode first; it runs where it is, or is moved to ``device``.
    Another ``engine`` than eager PyTorch runs a copy of it on the CPU (chapter 8).
    """
    if device is None:
        device = next(model.parameters()).device
    device = select_device(device)
    model.eval().to(device)
    loader = DeviceLoader(
        split, batch_size=batch_size, normalization=normalization, device=device
    )
    if engine == "eager":
        return torch.cat([model(images).float().cpu() for images, _ in loader])
    if device.type != "cpu":
        raise ConfigError(
            f"engine={engine!r} runs on the CPU only; use device='cpu' or "
            "engine='eager'"
        )
    run = build_engine(model, engine)
    return torch.cat([run(images) for images, _ in loader])


def predict_split(
    model: nn.Module,
    split: Split,
    normalization: tuple[float, float],
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1000,
    temperature: float = 1.0,
    engine: str = "eager",
) -> Predictions:
    """Return the model's probabilities and predictions for a split (chapter 4).

    The logits are divided by ``temperature`` before the softmax, and another
    ``engine`` than eager PyTorch may run the model (both chapter 8); the defaults
    leave the model and its logits as they are.
    """
    logits = split_logits(
        model,
        split,
        normalization,
        device=device,
        batch_size=batch_size,
        engine=engine,
    )
    return predictions_from_logits(logits, split.labels, temperature)


def predictions_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> Predictions:
    """Return the Predictions of (N, 10) logits divided by a temperature (chapter 8)."""
    probabilities = (logits.float() / temperature).softmax(1).numpy()
    return Predictions(probabilities, probabilities.argmax(1), labels.numpy())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the temperature minimising the cross-entropy of logits / T (chapter 8).

    Fit it on the validation split: on the test split it would be chosen to look good
    on the very images that report it.
    """
    logits64, labels64 = logits.double(), labels.long()

    def loss(log_temperature: float) -> float:
        scaled = logits64 / math.exp(log_temperature)
        return float(nn.functional.cross_entropy(scaled, labels64))

    low, high = TEMPERATURE_RANGE
    # One minimum: the loss is convex in 1/T, and so unimodal in log T.
    best = minimize_scalar(
        loss, bounds=(math.log(low), math.log(high)), method="bounded"
    )
    return float(math.exp(best.x))


#: Test-time shifts (dx, dy) in pixels: the image itself and one pixel each way.
TTA_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shift_images(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Return uint8 images (N, 28, 28) moved dx pixels right and dy pixels down.

    The pixels uncovered are filled with black.
    """
    margin = max(abs(dx), abs(dy))
    height, width = images.shape[-2:]
    padded = torch.nn.functional.pad(images, (margin, margin, margin, margin))
    return padded[
        ..., margin - dy : margin - dy + height, margin - dx : margin - dx + width
    ]


def average_predictions(members: list[Predictions]) -> Predictions:
    """Return the predictions of several predictions' mean probabilities (chapter 6).

    All of them must be predictions of the same images.
    """
    if not members or any((m.labels != members[0].labels).any() for m in members):
        raise ValueError(
            "average_predictions needs one or more predictions of the same images"
        )
    probabilities = np.mean([m.probabilities for m in members], axis=0)
    return Predictions(probabilities, probabilities.argmax(1), members[0].labels)


def predict_with_tta(
    model: nn.Module,
    split: Split,
    normalization: tuple[float, float],
    *,
    shifts: tuple[tuple[int, int], ...] = TTA_SHIFTS,
    device: torch.device | str | None = None,
    temperature: float = 1.0,
) -> Predictions:
    """Return predictions averaged over shifted copies of each image (chapter 6).

    This is test-time augmentation; each copy's logits are divided by ``temperature``.
    """
    return average_predictions(
        [
            predict_split(
                model,
                Split(shift_images(split.images, dx, dy), split.labels),
                normalization,
                device=device,
                temperature=temperature,
            )
            for dx, dy in shifts
        ]
    )


def accuracy(predictions: Predictions) -> float:
    """Return the share of right predictions."""
    return float(predictions.correct.mean())


def log_loss(predictions: Predictions) -> float:
    """Return the mean cross-entropy of the true digits' probabilities (chapter 6).

    Lower is better, and it is finer than accuracy.
    """
    # float32 softmax rows sum to 1 only to within rounding, which sklearn warns about.
    probabilities = predictions.probabilities.astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return float(
        sklearn_log_loss(predictions.labels, probabilities, labels=list(range(10)))
    )


def ensemble_candidates(architectures: Mapping[str, str]) -> dict[str, list[str]]:
    """Return the ensembles to choose from, by name (chapter 6).

    First the models of each architecture that has several, then all of them.
    """
    candidates = {}
    for architecture in dict.fromkeys(architectures.values()):
        names = [name for name, built in architectures.items() if built == architecture]
        if len(names) > 1:
            candidates[f"{len(names)} x {architecture}"] = names
    candidates[f"all {len(architectures)}"] = list(architectures)
    return candidates


def choose_ensemble(
    validation: Mapping[str, Predictions], candidates: Mapping[str, list[str]]
) -> str:
    """Return the candidate with the lowest log loss on validation (chapter 6).

    Each candidate is scored on its members' averaged validation predictions, which
    should be calibrated (each model's temperature applied): label smoothing leaves
    the raw probabilities modest, and averaging modest members scores worse than it is.
    """
    return min(
        candidates,
        key=lambda label: log_loss(
            average_predictions([validation[name] for name in candidates[label]])
        ),
    )


def confusion(predictions: Predictions) -> np.ndarray:
    """Return the 10x10 confusion matrix: rows are true digits, columns predicted."""
    matrix: np.ndarray = confusion_matrix(
        predictions.labels, predictions.predicted, labels=list(range(10))
    )
    return matrix


def per_class_accuracy(predictions: Predictions) -> np.ndarray:
    """Return the accuracy for each true digit 0-9 (the recall of each class)."""
    matrix = confusion(predictions)
    recall: np.ndarray = matrix.diagonal() / matrix.sum(axis=1).clip(min=1)
    return recall


def top_confusions(
    predictions: Predictions, count: int = 5
) -> list[tuple[int, int, int]]:
    """Return the ``count`` most frequent mistakes, most frequent first.

    Each is (true digit, predicted digit, times).
    """
    matrix = confusion(predictions)
    np.fill_diagonal(matrix, 0)
    order = np.argsort(matrix, axis=None, kind="stable")[::-1][:count]
    pairs = [(int(i // 10), int(i % 10), int(matrix.flat[i])) for i in order]
    return [pair for pair in pairs if pair[2] > 0]


def most_confident_mistakes(predictions: Predictions, count: int = 16) -> np.ndarray:
    """Return the indices of wrong predictions, the most confident first."""
    wrong = np.flatnonzero(~predictions.correct)
    return wrong[np.argsort(-predictions.confidence[wrong], kind="stable")][:count]


def reliability(
    predictions: Predictions, bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-bin mean confidence, accuracy and count, for a reliability diagram."""
    confidence = predictions.confidence
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    mean_confidence = np.bincount(
        which, weights=confidence, minlength=bins
    ) / counts.clip(min=1)
    mean_accuracy = np.bincount(
        which, weights=predictions.correct.astype(float), minlength=bins
    ) / counts.clip(min=1)
    return mean_confidence, mean_accuracy, counts


def expected_calibration_error(predictions: Predictions, bins: int = 15) -> float:
    """Return the ECE: the confidence-accuracy gap, averaged over bins by their size."""
    mean_confidence, mean_accuracy, counts = reliability(predictions, bins)
    return float(
        (counts / counts.sum() * np.abs(mean_accuracy - mean_confidence)).sum()
    )


@dataclass(frozen=True)
class Metrics:
    """The headline numbers of an evaluation."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    expected_calibration_error: float
    errors: int
    count: int


def metrics(predictions: Predictions) -> Metrics:
    """Return accuracy, precision/recall/F1 (macro, weighted), ECE and counts."""
    macro = precision_recall_fscore_support(
        predictions.labels, predictions.predicted, average="macro", zero_division=0
    )
    weighted = precision_recall_fscore_support(
        predictions.labels, predictions.predicted, average="weighted", zero_division=0
    )
    return Metrics(
        accuracy=accuracy(predictions),
        precision_macro=float(macro[0]),
        recall_macro=float(macro[1]),
        f1_macro=float(macro[2]),
        precision_weighted=float(weighted[0]),
        recall_weighted=float(weighted[1]),
        f1_weighted=float(weighted[2]),
        expected_calibration_error=expected_calibration_error(predictions),
        errors=int((~predictions.correct).sum()),
        count=len(predictions.labels),
    )


def report(predictions: Predictions) -> str:
    """Return scikit-learn's per-digit classification report as text."""
    text: str = classification_report(
        predictions.labels,
        predictions.predicted,
        labels=list(range(10)),
        target_names=[str(d) for d in range(10)],
        digits=4,
        zero_division=0,
    )
    return text
