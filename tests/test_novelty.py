"""Tests of mnist_tutorial.novelty: non-digit pictures, the scores and the rule (chapter 8)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mnist_tutorial.data import normalize
from mnist_tutorial.model import build_model
from mnist_tutorial.novelty import (
    DIGIT_LOOKALIKES,
    LETTERS,
    METHODS,
    NON_DIGIT_KINDS,
    Features,
    NoveltyRule,
    block_widths,
    digit_features,
    digit_scores,
    fit_gaussians,
    fit_novelty_rule,
    fit_rule_on_features,
    non_digit_pictures,
    printed_digit_pictures,
    score_features,
    threshold_for,
)
from mnist_tutorial.predict import InvalidImageError, preprocess_image


def same(first: list, second: list) -> bool:
    """Whether two lists of pictures hold the same pixels."""
    return len(first) == len(second) and all(
        a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(first, second, strict=True)
    )


@pytest.mark.parametrize("kind", NON_DIGIT_KINDS)
def test_each_kind_is_the_same_for_a_seed_and_differs_between_seeds(kind: str) -> None:
    first, again = non_digit_pictures(kind, 6, seed=3), non_digit_pictures(kind, 6, 3)
    other = non_digit_pictures(kind, 6, seed=4)
    assert same(first, again)
    assert not same(first, other)


@pytest.mark.parametrize("kind", NON_DIGIT_KINDS)
def test_pictures_look_like_uploads_grey_and_64_to_200_pixels(kind: str) -> None:
    for picture in non_digit_pictures(kind, 8, seed=0):
        assert picture.mode == "L"
        assert all(64 <= side <= 200 for side in picture.size)
        assert np.ptp(np.asarray(picture)) > 0


def test_a_kind_does_not_depend_on_which_kinds_were_drawn_before() -> None:
    alone = non_digit_pictures("scribbles", 3, seed=1)
    non_digit_pictures("letters", 5, seed=1)
    assert same(alone, non_digit_pictures("scribbles", 3, seed=1))


def test_letters_leave_out_every_digit_lookalike_and_keep_the_rest() -> None:
    assert not set(LETTERS) & set(DIGIT_LOOKALIKES)
    for letter in "OoIlSsZzBbgq":
        assert letter in DIGIT_LOOKALIKES
    assert set(LETTERS) | set(DIGIT_LOOKALIKES) == {
        *map(chr, range(ord("A"), ord("Z") + 1)),
        *map(chr, range(ord("a"), ord("z") + 1)),
    }


def test_an_unknown_kind_names_the_kinds() -> None:
    with pytest.raises(ValueError, match="letters, scribbles"):
        non_digit_pictures("cats", 1)


@pytest.mark.parametrize("kind", NON_DIGIT_KINDS)
def test_pictures_go_through_the_users_preprocessing_or_are_refused(kind: str) -> None:
    outcomes = []
    for picture in non_digit_pictures(kind, 10, seed=0):
        try:
            tensor = preprocess_image(picture)
        except InvalidImageError:
            outcomes.append("refused")
            continue
        assert tensor.shape == (1, 1, 28, 28)
        outcomes.append("through")
    # Letters and scribbles are ink on paper: preprocessing must let them through.
    if kind in ("letters", "scribbles"):
        assert outcomes.count("through") >= 9


def test_printed_digits_are_seeded_and_read_by_preprocessing() -> None:
    digits = printed_digit_pictures(5, seed=2)
    assert same(digits, printed_digit_pictures(5, seed=2))
    assert preprocess_image(digits[0]).shape == (1, 1, 28, 28)


def test_the_threshold_answers_the_requested_share() -> None:
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    for keep in (0.5, 0.9, 0.99, 1.0):
        assert (scores >= threshold_for(scores, keep)).double().mean() >= keep
    # Not more than one score above the requested share.
    assert (scores >= threshold_for(scores, 0.9)).sum() <= 901
    with pytest.raises(ValueError, match="keep"):
        threshold_for(scores, 0.0)


def test_scores_are_higher_for_the_more_digit_like_picture() -> None:
    confident = torch.tensor([[10.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    unsure = torch.zeros(1, 10)
    means = torch.zeros(1, 4)
    for method in ("max_softmax", "energy"):
        scores = score_features(
            method, {}, Features(torch.cat([confident, unsure]), means.repeat(2, 1))
        )
        assert scores[0] > scores[1]
    # Near a digit's mean channels is more digit-like than far from every one.
    parameters = {
        "columns": torch.arange(4),
        "means": torch.zeros(10, 4),
        "precision": torch.eye(4),
    }
    near_far = Features(unsure.repeat(2, 1), torch.tensor([[0.1] * 4, [5.0] * 4]))
    scores = score_features("mahalanobis", parameters, near_far)
    assert scores[0] > scores[1]
    assert scores[0] == pytest.approx(-0.04)


@pytest.fixture(scope="module")
def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", widths=(4, 6, 8)).eval()


def normalised(images: torch.Tensor) -> torch.Tensor:
    return normalize(images, 0.1307, 0.3081)


@pytest.mark.parametrize("method", METHODS)
def test_a_fitted_rule_answers_keep_of_the_validation_digits(
    synthetic_mnist, tiny_cnn: torch.nn.Module, method: str
) -> None:
    train, validation = synthetic_mnist.train, synthetic_mnist.validation
    rule = fit_novelty_rule(
        tiny_cnn,
        normalised(train.images),
        train.labels,
        normalised(validation.images),
        method=method,
        keep=0.9,
    )
    scores = digit_scores(rule, tiny_cnn, normalised(validation.images))
    answered = scores >= rule.threshold
    assert answered.double().mean() >= 0.9
    assert answered.double().mean() <= 0.92
    assert rule.size_bytes() < 200_000


def test_the_combined_score_standardises_its_parts_on_the_training_digits(
    synthetic_mnist, tiny_cnn: torch.nn.Module
) -> None:
    train = synthetic_mnist.train
    images = normalised(train.images)
    rule = fit_novelty_rule(tiny_cnn, images, train.labels, images, method="combined")
    scores = digit_scores(rule, tiny_cnn, images)
    # Two standardised parts: mean 0, and a spread between 0 and 2.
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert 0.0 < scores.std().item() <= 2.0 + 1e-4


def test_features_leave_the_model_in_its_mode(tiny_cnn: torch.nn.Module) -> None:
    tiny_cnn.train()
    features = digit_features(tiny_cnn, torch.zeros(3, 1, 28, 28), batch_size=2)
    assert tiny_cnn.training
    tiny_cnn.eval()
    assert features.logits.shape == (3, 10)
    assert features.channel_means.shape == (3, 4 + 6 + 8)


def test_cnn_large_features_read_its_four_blocks_and_its_hidden_layer_head() -> None:
    torch.manual_seed(0)
    model = build_model("cnn_large").eval()
    images = torch.randn(3, 1, 28, 28)
    features = digit_features(model, images)
    assert block_widths(model) == [32, 32, 64, 64]
    assert features.channel_means.shape == (3, 32 + 32 + 64 + 64)
    with torch.no_grad():
        torch.testing.assert_close(features.logits, model(images))


def test_by_default_the_distance_reads_every_block_and_blocks_choose_columns() -> None:
    features = Features(torch.randn(40, 10), torch.randn(40, 18))
    labels = torch.arange(40) % 10
    every = fit_rule_on_features("mahalanobis", features, labels, features, [4, 6, 8])
    assert every.parameters["columns"].tolist() == list(range(18))
    last_two = fit_rule_on_features(
        "mahalanobis", features, labels, features, [4, 6, 8], blocks=(1, 2)
    )
    assert last_two.parameters["columns"].tolist() == list(range(4, 18))


def test_mahalanobis_blocks_must_exist(synthetic_mnist) -> None:
    features = Features(torch.zeros(20, 10), torch.randn(20, 18))
    labels = torch.arange(20) % 10
    with pytest.raises(ValueError, match="blocks"):
        fit_rule_on_features(
            "mahalanobis", features, labels, features, [4, 6, 8], blocks=(3,)
        )
    with pytest.raises(ValueError, match="unknown method"):
        fit_rule_on_features("odin", features, labels, features, [4, 6, 8])


def test_a_rule_survives_a_weights_only_round_trip(
    synthetic_mnist, tiny_cnn: torch.nn.Module
) -> None:
    train = synthetic_mnist.train
    images = normalised(train.images[:200])
    rule = fit_novelty_rule(tiny_cnn, images, train.labels[:200], images)
    buffer = io.BytesIO()
    torch.save(rule.to_dict(), buffer)
    buffer.seek(0)
    again = NoveltyRule.from_dict(torch.load(buffer, weights_only=True))
    assert (again.method, again.threshold) == (rule.method, rule.threshold)
    assert again.parameters.keys() == rule.parameters.keys()
    assert all(
        torch.equal(again.parameters[k], rule.parameters[k]) for k in rule.parameters
    )
    assert torch.equal(
        digit_scores(again, tiny_cnn, images), digit_scores(rule, tiny_cnn, images)
    )


@pytest.mark.parametrize(
    "data",
    [
        {"method": "odin", "threshold": 0.0, "parameters": {}},
        {"method": "energy", "threshold": float("nan"), "parameters": {}},
        {"method": "mahalanobis", "threshold": 0.0, "parameters": {}},
        {"method": "energy", "threshold": 0.0, "parameters": {"x": [1.0]}},
    ],
)
def test_a_malformed_rule_is_refused(data: dict) -> None:
    with pytest.raises(ValueError, match="not a novelty rule"):
        NoveltyRule.from_dict(data)


def test_each_label_gets_its_own_gaussian_also_past_ten() -> None:
    # Digits 2 and 7, and their coarse scans as groups 12 and 17.
    labels = torch.tensor([2, 2, 7, 7, 12, 12, 17, 17])
    channel_means = torch.arange(8.0)[:, None].repeat(1, 3) + torch.tensor([0, 0.5, 1])
    parameters = fit_gaussians(channel_means, labels, torch.tensor([0, 2]))
    assert torch.allclose(parameters["means"][:, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    assert parameters["means"].shape == (4, 2)
    # Each picture lies close to its own group's mean, and far from a stranger.
    stranger = torch.full((1, 3), 30.0)
    features = Features(torch.zeros(9, 10), torch.cat([channel_means, stranger]))
    distances = -score_features("mahalanobis", parameters, features)
    assert distances[:8].max() * 100 < distances[8]
