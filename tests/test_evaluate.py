"""Tests of mnist_tutorial.evaluate on small, hand-checkable predictions and a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from mnist_tutorial.data import Split, normalize
from mnist_tutorial.evaluate import (
    TTA_SHIFTS,
    Predictions,
    accuracy,
    average_predictions,
    choose_ensemble,
    confusion,
    ensemble_candidates,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    metrics,
    most_confident_mistakes,
    per_class_accuracy,
    predict_split,
    predict_with_tta,
    predictions_from_logits,
    reliability,
    report,
    shift_images,
    top_confusions,
)
from mnist_tutorial.model import build_model


def make_predictions(
    labels: list[int], predicted: list[int], confidence: list[float]
) -> Predictions:
    probabilities = np.full((len(labels), 10), 0.0)
    for row, (guess, sure) in enumerate(zip(predicted, confidence, strict=True)):
        probabilities[row] = (1 - sure) / 9
        probabilities[row, guess] = sure
    return Predictions(probabilities, np.array(predicted), np.array(labels))


@pytest.fixture()
def sample() -> Predictions:
    #            right  right  4->9  4->9  7->1  right
    return make_predictions(
        [0, 1, 4, 4, 7, 9], [0, 1, 9, 9, 1, 9], [0.9, 0.8, 0.95, 0.6, 0.7, 0.99]
    )


def test_accuracy_and_counts(sample: Predictions) -> None:
    summary = metrics(sample)
    assert accuracy(sample) == pytest.approx(3 / 6) == summary.accuracy
    assert (summary.errors, summary.count) == (3, 6)
    assert summary.f1_macro == pytest.approx(
        f1_score(sample.labels, sample.predicted, average="macro")
    )
    assert summary.f1_weighted == pytest.approx(
        f1_score(sample.labels, sample.predicted, average="weighted")
    )


def test_confusion_and_per_class_accuracy(sample: Predictions) -> None:
    matrix = confusion(sample)
    assert matrix.shape == (10, 10) and matrix.sum() == 6
    assert matrix[4, 9] == 2 and matrix[7, 1] == 1 and matrix[0, 0] == 1
    per_class = per_class_accuracy(sample)
    assert per_class[0] == 1 and per_class[4] == 0 and per_class[7] == 0
    assert per_class[5] == 0  # a digit that never occurs counts as 0, not NaN


def test_top_confusions_most_frequent_first(sample: Predictions) -> None:
    assert top_confusions(sample) == [(4, 9, 2), (7, 1, 1)]
    assert top_confusions(sample, count=1) == [(4, 9, 2)]


def test_most_confident_mistakes_are_ordered(sample: Predictions) -> None:
    assert most_confident_mistakes(sample).tolist() == [2, 4, 3]


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    calibrated = make_predictions([0, 0, 0, 0], [0, 0, 0, 1], [0.75, 0.75, 0.75, 0.75])
    assert expected_calibration_error(calibrated) == pytest.approx(0.0)


def test_calibration_error_of_overconfidence_by_hand(sample: Predictions) -> None:
    # Bins of width 1/15: 0.95 (wrong) and 0.99 (right) share the top bin, the rest are
    # alone.
    top_bin = 2 * abs(0.5 - (0.95 + 0.99) / 2)
    expected = (abs(1 - 0.9) + abs(1 - 0.8) + 0.6 + 0.7 + top_bin) / 6
    assert expected_calibration_error(sample) == pytest.approx(expected)
    _mean_confidence, mean_accuracy, counts = reliability(sample)
    assert counts.sum() == 6 and mean_accuracy.max() == 1


def test_report_lists_every_digit(sample: Predictions) -> None:
    text = report(sample)
    assert all(f"\n{' ' * 11}{digit}" in text for digit in range(10))
    assert "macro avg" in text


def random_split(count: int = 25) -> Split:
    """Return a split of random pictures labelled 0 to 9 in turn."""
    return Split(
        torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8),
        torch.arange(count) % 10,
    )


def test_predict_split_gives_probabilities_for_every_image() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    split = random_split()
    predictions = predict_split(model, split, (0.13, 0.31), batch_size=10)
    assert predictions.probabilities.shape == (25, 10)
    assert np.allclose(predictions.probabilities.sum(1), 1, atol=1e-5)
    assert (predictions.predicted == predictions.probabilities.argmax(1)).all()
    assert predictions.labels.tolist() == (np.arange(25) % 10).tolist()
    assert not model.training


def test_predict_split_divides_the_logits_by_the_temperature() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    split = random_split()
    plain = predict_split(model, split, (0.13, 0.31))
    sharpened = predict_split(model, split, (0.13, 0.31), temperature=0.5)
    expected = torch.from_numpy(plain.probabilities).log().div(0.5).softmax(1)
    np.testing.assert_allclose(sharpened.probabilities, expected.numpy(), atol=1e-5)
    assert (sharpened.predicted == plain.predicted).all()
    assert (sharpened.confidence > plain.confidence).all()


def test_predictions_from_logits_match_predict_split() -> None:
    torch.manual_seed(0)
    model = build_model("mlp").eval()
    split = random_split()
    from_split = predict_split(model, split, (0.13, 0.31), temperature=0.7)
    with torch.no_grad():
        logits = model(normalize(split.images, 0.13, 0.31))
    from_logits = predictions_from_logits(logits, split.labels, 0.7)
    np.testing.assert_allclose(
        from_logits.probabilities, from_split.probabilities, atol=1e-6
    )
    assert (from_logits.labels == split.labels.numpy()).all()


@pytest.mark.parametrize("true_temperature", [0.4, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_that_made_the_labels(
    true_temperature: float,
) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20_000, 10, generator=generator)
    labels = torch.multinomial(
        (logits / true_temperature).softmax(1), 1, generator=generator
    )[:, 0]
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_shift_images_moves_pixels_and_fills_with_black() -> None:
    images = torch.zeros(1, 28, 28, dtype=torch.uint8)
    images[0, 10, 20] = 255
    assert shift_images(images, 1, 0)[0, 10, 21] == 255
    assert shift_images(images, 0, -2)[0, 8, 20] == 255
    assert shift_images(images, 0, 0).equal(images)
    edge = torch.full((1, 28, 28), 7, dtype=torch.uint8)
    assert (
        shift_images(edge, 1, 0)[0, :, 0].eq(0).all()
        and shift_images(edge, 1, 0)[0, :, 1:].eq(7).all()
    )


def test_average_predictions_averages_probabilities(sample: Predictions) -> None:
    flipped = make_predictions(
        sample.labels.tolist(), sample.labels.tolist(), [0.99] * 6
    )
    averaged = average_predictions([sample, flipped])
    assert np.allclose(
        averaged.probabilities, (sample.probabilities + flipped.probabilities) / 2
    )
    assert (averaged.predicted == averaged.probabilities.argmax(1)).all()
    with pytest.raises(ValueError, match="one or more predictions of the same images"):
        average_predictions([sample, make_predictions([1] * 6, [1] * 6, [0.9] * 6)])


def test_tta_divides_each_copys_logits_by_the_temperature() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    split = Split(
        torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8), torch.arange(12) % 10
    )
    sharper = predict_with_tta(
        model, split, (0.13, 0.31), shifts=((0, 0),), temperature=0.5
    )
    expected = predict_split(model, split, (0.13, 0.31), temperature=0.5)
    assert np.allclose(sharper.probabilities, expected.probabilities)
    plain = predict_with_tta(model, split, (0.13, 0.31), shifts=((0, 0),))
    assert not np.allclose(sharper.probabilities, plain.probabilities)


def test_tta_averages_the_shifted_copies() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    split = Split(
        torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8), torch.arange(12) % 10
    )
    plain = predict_split(model, split, (0.13, 0.31))
    assert np.allclose(
        predict_with_tta(model, split, (0.13, 0.31), shifts=((0, 0),)).probabilities,
        plain.probabilities,
    )
    shifted = predict_with_tta(model, split, (0.13, 0.31))
    by_hand = np.mean(
        [
            predict_split(
                model,
                Split(shift_images(split.images, dx, dy), split.labels),
                (0.13, 0.31),
            ).probabilities
            for dx, dy in TTA_SHIFTS
        ],
        axis=0,
    )
    assert np.allclose(shifted.probabilities, by_hand)


def test_log_loss_is_the_mean_negative_log_probability_of_the_true_digit(
    sample: Predictions,
) -> None:
    by_hand = -np.mean(
        np.log(sample.probabilities[np.arange(len(sample.labels)), sample.labels])
    )
    assert log_loss(sample) == pytest.approx(by_hand)
    sure_and_right = make_predictions(
        sample.labels.tolist(), sample.labels.tolist(), [0.99] * 6
    )
    assert log_loss(sure_and_right) == pytest.approx(-np.log(0.99)) and log_loss(
        sure_and_right
    ) < log_loss(sample)


def test_ensemble_candidates_group_by_architecture_then_all() -> None:
    architectures = {
        "cnn": "cnn",
        "cnn_seed1": "cnn",
        "mlp": "mlp",
        "big": "cnn_large",
        "big_seed1": "cnn_large",
    }
    assert ensemble_candidates(architectures) == {
        "2 x cnn": ["cnn", "cnn_seed1"],
        "2 x cnn_large": ["big", "big_seed1"],
        "all 5": ["cnn", "cnn_seed1", "mlp", "big", "big_seed1"],
    }
    assert ensemble_candidates({"only": "cnn"}) == {"all 1": ["only"]}


def test_choose_ensemble_takes_the_lowest_validation_log_loss(
    sample: Predictions,
) -> None:
    labels = sample.labels.tolist()
    validation = {
        "sure": make_predictions(labels, labels, [0.99] * 6),
        "unsure": make_predictions(labels, labels, [0.8] * 6),
        "wrong": sample,
    }
    assert (
        choose_ensemble(
            validation, {"sure and unsure": ["sure", "unsure"], "sure": ["sure"]}
        )
        == "sure"
    )
    assert (
        choose_ensemble(
            validation, {"unsure": ["unsure"], "sure and wrong": ["sure", "wrong"]}
        )
        == "unsure"
    )
