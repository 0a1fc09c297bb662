"""Recipe search: candidates for the shipped single model, chosen on validation.

    python benchmarks/recipe_search.py [VARIANT ...] [--seeds 0,1,2] [--epochs N]

Trains each variant (see --help for the list) once per seed on the training split,
with coarse scans as the cnn shipped until 2026-12-04, evening, was (30% of each batch
unless the variant says otherwise), and prints a Markdown row per run: training
seconds, the best epoch's validation accuracy, the test accuracy, and the "not a
digit" rule that benchmarks/novelty.py chooses for the run, with the share of held-out
non-digits it rejects at the threshold that answers 99% of the test digits (the
target: 80%). Then
it chooses the variant with the highest mean validation accuracy, reads its mean test
accuracy, and exits with 1 when that is below the 99.70% target (asked of the shipped
run; the mean of three seeds is asked for 99.68%, so a mean at 99.70% meets both).
Every variant is laid out so that the live demo's inside view and the "not a digit" rule
can read it (conv blocks, then a head of linear, BatchNorm and ReLU layers:
``model.conv_blocks_and_head``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from novelty import choose, measure_rules, pictures_to_judge
from torch import nn

from mnist_tutorial import build_model, load_mnist
from mnist_tutorial.coarse import with_coarse_scans
from mnist_tutorial.evaluate import accuracy, predict_split
from mnist_tutorial.model import (
    Architecture,
    Network,
    conv_block,
)
from mnist_tutorial.records import RECIPES, TrainConfig
from mnist_tutorial.train import fit

TARGET = 0.997
#: Non-digits drawn per kind to measure each run's "not a digit" rule.
NOVELTY_COUNT = 1000
#: The settings every variant changes: those of the cnn's recipe when the search was
#: run, the defaults with 30% coarse scans (the recipe ``shipped`` has moved on since).
SHIPPED = TrainConfig(coarse_scans=0.3)


def four_convolutions(dropout_inside: float, dropout_head: float) -> nn.Sequential:
    """Return cnn_large's four convolutions under the cnn's single linear head."""

    def pooled(channels_in: int, channels_out: int) -> nn.Sequential:
        block = conv_block(channels_in, channels_out, pool=True)
        return (
            nn.Sequential(*block, nn.Dropout(dropout_inside))
            if dropout_inside
            else block
        )

    return nn.Sequential(
        conv_block(1, 32),
        pooled(32, 32),
        conv_block(32, 64),
        pooled(64, 64),
        nn.Flatten(),
        nn.Dropout(dropout_head),
        nn.Linear(64 * 7 * 7, 10),
    )


def cnn_with_hidden_layer(
    widths: tuple[int, int, int] = (24, 48, 96), hidden: int = 256
) -> nn.Sequential:
    """Return the cnn's three blocks under cnn_large's head: a hidden ReLU layer."""
    first, second, third = widths
    return nn.Sequential(
        conv_block(1, first, pool=True),
        conv_block(first, second, pool=True),
        conv_block(second, third),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(third * 7 * 7, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(hidden, 10),
    )


def network(name: str, layers: nn.Sequential) -> Network:
    """Return layers built here as a Network, named for the record."""
    architecture: Architecture = {"name": name, "kwargs": {}}
    return Network(architecture, layers)


Variant = tuple[str, Callable[[], nn.Module], TrainConfig]


def variant(about: str, new_model: Callable[[], nn.Module], **changes: Any) -> Variant:
    """Return a variant: what it is, a new model, the shipped settings with changes."""
    return about, new_model, replace(SHIPPED, **changes)


def registered(name: str, **arguments: Any) -> Callable[[], nn.Module]:
    """Return a maker of new models of a registered architecture and arguments."""
    return lambda: build_model(name, **arguments)


def four_conv(
    dropout_inside: float = 0.0, dropout_head: float = 0.1
) -> Callable[[], nn.Module]:
    """Return a maker of new four-convolution networks with this dropout."""
    name = "four_conv_dropout" if dropout_inside else "four_conv"
    return lambda: network(name, four_convolutions(dropout_inside, dropout_head))


WIDER, WIDEST, LEAN = (32, 64, 128), (48, 96, 192), (16, 32, 64)
VARIANTS: dict[str, Variant] = {
    "shipped": variant(
        "the cnn's recipe then: cnn, 30% coarse scans, 15 epochs", registered("cnn")
    ),
    "shipped-30": variant("the same, 30 epochs", registered("cnn"), epochs=30),
    "scans-10": variant(
        "10% coarse scans instead of 30%", registered("cnn"), coarse_scans=0.1
    ),
    "wider": variant("cnn widths 32, 64, 128", registered("cnn", widths=WIDER)),
    "wider-10": variant(
        "the same, 10% coarse scans", registered("cnn", widths=WIDER), coarse_scans=0.1
    ),
    "widest": variant("cnn widths 48, 96, 192", registered("cnn", widths=WIDEST)),
    "four-conv": variant("four convolutions, one linear layer", four_conv()),
    "four-conv-10": variant(
        "four convolutions, 10% coarse scans", four_conv(), coarse_scans=0.1
    ),
    "four-conv-dropout": variant(
        "four convolutions with cnn_large's dropout", four_conv(0.25, 0.5)
    ),
    "hidden-10": variant(
        "cnn blocks, a hidden layer of 256 in the head, 10% coarse scans",
        lambda: network("cnn_hidden", cnn_with_hidden_layer()),
        coarse_scans=0.1,
    ),
    "hidden-lean-10": variant(
        "the same on the fast recipe's widths 16, 32, 64",
        lambda: network("cnn_hidden", cnn_with_hidden_layer(LEAN)),
        coarse_scans=0.1,
    ),
    "large-half-10": variant(
        "cnn_large_half (cnn_large at half its widths), 10% coarse scans",
        registered("cnn_large_half"),
        coarse_scans=0.1,
    ),
    "cnn_large": variant(
        "cnn_large (a hidden layer in the head)", registered("cnn_large")
    ),
    "cnn_large-10": variant(
        "cnn_large, 10% coarse scans", registered("cnn_large"), coarse_scans=0.1
    ),
    "accurate": (
        "the recipe accurate: cnn_large without coarse scans in training, its rule "
        "counting 10% of them as digits",
        registered(RECIPES["accurate"].model),
        RECIPES["accurate"].config,
    ),
}


def main() -> int:
    """Return the exit code, after training and scoring the variants asked for.

    The variant is chosen on validation; the code is 1 when it misses the target on
    test.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="variants: "
        + "; ".join(f"{name}: {about}" for name, (about, _, _) in VARIANTS.items()),
    )
    parser.add_argument(
        "variants", nargs="*", default=["shipped"], help="variants to train"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="run every variant this many epochs instead, as a quick check",
    )
    args = parser.parse_args()
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(
            f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}"
        )
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(
            f"--seeds takes whole numbers separated by commas, got {args.seeds}"
        )
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")

    started = time.perf_counter()
    data = with_coarse_scans(load_mnist())
    print(f"coarse scans of the training digits: {time.perf_counter() - started:.0f} s")
    pictures = pictures_to_judge(NOVELTY_COUNT, data.normalization)
    print(
        "\n| variant | seed | train, s | best validation | test | 'not a digit' rule "
        "| held out rejected at 99% of test answered |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    scores: dict[str, list[tuple[float, float]]] = {}
    for name in args.variants:
        _, new_model, config = VARIANTS[name]
        for seed in seeds:
            torch.manual_seed(seed)
            model = new_model()
            started = time.perf_counter()
            settings = replace(config, seed=seed, epochs=args.epochs or config.epochs)
            run = fit(model, data, settings, progress=False, log=None)
            seconds = time.perf_counter() - started
            validation = run.history.best_epoch.val_accuracy
            test = accuracy(predict_split(model, data.test, data.normalization))
            scores.setdefault(name, []).append((validation, test))
            rule = choose(
                measure_rules(
                    model,
                    data.normalization,
                    data,
                    pictures,
                    coarse_share=settings.rule_scans,
                    seed=seed,
                )
            )
            print(
                f"| {name} | {seed} | {seconds:.0f} | {validation:.2%} | {test:.2%} | "
                f"{rule.name} | {rule.held_out(at_target=True):.1%} |",
                flush=True,
            )
    chosen = max(
        scores, key=lambda name: statistics.mean(val for val, _ in scores[name])
    )
    test_mean = statistics.mean(test for _, test in scores[chosen])
    met = test_mean >= TARGET
    verdict = "met" if met else "missed"
    print(
        f"\nchosen on validation: {chosen}, mean test accuracy {test_mean:.2%} over "
        f"{len(scores[chosen])} seed(s); target {TARGET:.2%}: {verdict}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
