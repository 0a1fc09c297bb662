"""Ensembles of many members: train them (minutes on a GPU), choose on validation.

    python benchmarks/ensemble_members.py train OUT [--architecture cnn_large]
        [--members 12] [--epochs 30] [--workers 4] [--data ROOT]
    python benchmarks/ensemble_members.py choose OUT [OUT ...]

``train`` trains members with seeds 0 to N-1 on the default recipe (with --epochs
instead of its 15), ``--workers`` at a time on the machine's accelerator (else the
CPU), and writes each member's validation and test probabilities to
OUT/member_SEED.pt as soon as it is done. ``choose`` reads one or more such folders,
calibrates each member by a temperature fitted on validation, averages the first k
members of each, for every mix of k's, and chooses the mix with the lowest validation
log loss; it prints the ten best mixes by that loss, then the chosen one's test
accuracy and cost, and exits with 1 below 99.78%.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from mnist_tutorial import build_model, load_mnist, summarize
from mnist_tutorial.evaluate import (
    Predictions,
    accuracy,
    average_predictions,
    fit_temperature,
    log_loss,
    predict_split,
    predictions_from_logits,
)
from mnist_tutorial.records import recipe
from mnist_tutorial.train import fit

TARGET = 0.9978


def train_members(
    seeds: list[int], out: Path, architecture: str, epochs: int, data_root: str | None
) -> None:
    """Train one member per seed and save its probabilities."""
    data = load_mnist(data_root)
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model(architecture)
        config = replace(recipe("default").config, seed=seed, epochs=epochs)
        started = time.perf_counter()
        fit(model, data, config, progress=False, log=None)
        seconds = time.perf_counter() - started
        splits = {
            name: predict_split(model, split, data.normalization)
            for name, split in (("validation", data.validation), ("test", data.test))
        }
        torch.save(
            {
                "seed": seed,
                "architecture": architecture,
                "epochs": epochs,
                "seconds": seconds,
                "device": str(next(model.parameters()).device),
                **{
                    name: torch.from_numpy(predictions.probabilities)
                    for name, predictions in splits.items()
                },
            },
            out / f"member_{seed}.part",
        )
        # Renamed once whole, so that a run stopped mid-save leaves no torn member.
        (out / f"member_{seed}.part").replace(out / f"member_{seed}.pt")
        print(
            f"member {seed}: {seconds:.0f} s, test {accuracy(splits['test']):.2%}",
            flush=True,
        )


def calibrated(
    member: dict[str, Any], labels: dict[str, torch.Tensor]
) -> dict[str, Predictions]:
    """Return a member's Predictions per split at a temperature fitted on validation.

    The stored probabilities' logarithms are the logits up to a constant per image,
    which the softmax ignores.
    """
    logits = {split: member[split].double().log() for split in labels}
    temperature = fit_temperature(logits["validation"], labels["validation"])
    return {
        split: predictions_from_logits(logits[split], labels[split], temperature)
        for split in labels
    }


def load_members(out: Path) -> list[dict[str, Any]]:
    """Return the members saved in a folder, by seed."""
    files = sorted(out.glob("member_*.pt"), key=lambda path: int(path.stem[7:]))
    return [torch.load(path, weights_only=True) for path in files]


def choose(folders: list[Path]) -> int:
    """Print the ensembles of the first k members of each folder; choose one.

    Every mix (k1 members of the first folder's, k2 of the second's, ...) is a
    candidate; the one with the lowest validation log loss is chosen.
    """
    groups = [load_members(folder) for folder in folders]
    empty = [
        str(folder) for folder, group in zip(folders, groups, strict=True) if not group
    ]
    if empty:
        print(
            f"no member_*.pt in {empty[0]}; run the train command first",
            file=sys.stderr,
        )
        return 2
    data = load_mnist()
    labels = {"validation": data.validation.labels, "test": data.test.labels}
    stored = [[calibrated(member, labels) for member in group] for group in groups]
    for group, members in zip(groups, stored, strict=True):
        single = [accuracy(member["test"]) for member in members]
        print(
            f"{len(group)} members of {group[0]['architecture']}, "
            f"{group[0]['epochs']} epochs each, trained on {group[0]['device']}: "
            f"{min(m['seconds'] for m in group):.0f} to "
            f"{max(m['seconds'] for m in group):.0f} s each; test accuracy "
            f"{min(single):.2%} to {max(single):.2%} (mean {np.mean(single):.2%})"
        )
    rows = []
    for counts in itertools.product(*(range(len(group) + 1) for group in groups)):
        chosen = [
            member
            for group, count in zip(stored, counts, strict=True)
            for member in group[:count]
        ]
        if not chosen:
            continue
        averaged = {
            split: average_predictions([member[split] for member in chosen])
            for split in labels
        }
        rows.append(
            (
                counts,
                log_loss(averaged["validation"]),
                accuracy(averaged["validation"]),
                accuracy(averaged["test"]),
            )
        )
    names = " + ".join(group[0]["architecture"] for group in groups)
    print(f"\n| members ({names}) | validation log loss | validation | test |")
    print("| --- | ---: | ---: | ---: |")
    shown = sorted(rows, key=lambda row: row[1])[:10]
    for counts, loss, validation, test in shown:
        members = " + ".join(map(str, counts))
        print(f"| {members} | {loss:.4f} | {validation:.2%} | {test:.2%} |")
    counts, _, _, test = shown[0]
    multiply_adds = sum(
        count
        * sum(
            row.multiply_adds
            for row in summarize(build_model(group[0]["architecture"]))
        )
        for group, count in zip(groups, counts, strict=True)
    )
    met = test >= TARGET
    print(
        f"\nchosen on validation log loss among {len(rows)} mixes (the ten lowest "
        f"above): {' + '.join(map(str, counts))} members, test accuracy {test:.2%} "
        f"({round((1 - test) * len(labels['test']))} errors), "
        f"{multiply_adds / 1e6:.0f} M multiply-adds a picture; target "
        f"{TARGET:.2%}: {'met' if met else 'missed'}"
    )
    return 0 if met else 1


def main() -> int:
    """Run the command asked for; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train members, save probabilities")
    train.add_argument("out", type=Path)
    train.add_argument("--architecture", default="cnn_large")
    train.add_argument("--members", type=int, default=12)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--workers", type=int, default=4)
    train.add_argument("--data", help="data root (default: the package's)")
    chosen = commands.add_parser("choose", help="choose an ensemble on validation")
    chosen.add_argument("folders", type=Path, nargs="+", help="train's OUT folders")
    args = parser.parse_args()
    if args.command == "choose":
        return choose(args.folders)
    if args.members < 1 or args.workers < 1 or args.epochs < 1:
        parser.error("--members, --workers and --epochs must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.members))
    workers = [
        mp.get_context("spawn").Process(
            target=train_members,
            args=(
                seeds[start :: args.workers],
                args.out,
                args.architecture,
                args.epochs,
                args.data,
            ),
        )
        for start in range(min(args.workers, args.members))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return 0 if all(worker.exitcode == 0 for worker in workers) else 1


if __name__ == "__main__":
    sys.exit(main())
