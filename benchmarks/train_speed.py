"""Time to 99% test accuracy: the reference PyTorch MNIST recipe against ours.

Ours is a recipe of `mnist_tutorial.RECIPES` (default: fast). The reference is the
example most tutorials copy, written here from its description: two 3x3 convolutions
(32, 64), max-pool, dropout 0.25, a 9216-128 linear layer, dropout 0.5, a linear
output; Adadelta at lr 1.0 with StepLR(gamma 0.7) each epoch; batch 64; torchvision
MNIST with ToTensor and Normalize through a DataLoader.

Each run is timed twice: on the wall clock and in process CPU seconds (all threads).
Both clocks run from the start of training to the end of each epoch and pause while the
test set is scored (the same work for both, and not training). Ours includes its
per-epoch validation pass, which the reference does not do.

The machine is shared, so the runs are interleaved, ours first and last: ours,
reference, ours, ..., ours, for --rounds reference runs. Each recipe's time is the
median of its runs, so load that comes and goes weighs on both alike. CPU seconds
move less with load than wall seconds: they count only this process's work.

    python benchmarks/train_speed.py                   # 3 runs of ours, 2 reference
    python benchmarks/train_speed.py --recipe default  # the 15-epoch default run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_tutorial import RECIPES, fit, load_mnist
from mnist_tutorial.data import MnistData, default_data_root
from mnist_tutorial.evaluate import accuracy, predict_split

TARGET = 0.99


class ReferenceNet(nn.Module):
    """The reference example's network."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        return self.fc2(self.dropout2(F.relu(self.fc1(x))))


@dataclass
class Mark:
    """The clocks at the end of one epoch, and the test accuracy there."""

    epoch: int
    wall: float
    cpu: float
    test_accuracy: float


class Stopwatch:
    """Wall and process CPU clocks that pause while the test set is scored."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.resume()

    def resume(self) -> None:
        self.wall_started, self.cpu_started = time.perf_counter(), time.process_time()

    def pause(self) -> tuple[float, float]:
        self.wall += time.perf_counter() - self.wall_started
        self.cpu += time.process_time() - self.cpu_started
        return self.wall, self.cpu


def run_reference(max_epochs: int, log: Callable[[str], None]) -> list[Mark]:
    """Return the reference recipe's epochs; it stops at the first that reaches 99%."""
    torch.manual_seed(1)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    root = default_data_root()
    train = DataLoader(
        datasets.MNIST(root, train=True, transform=transform),
        batch_size=64,
        shuffle=True,
    )
    test = DataLoader(
        datasets.MNIST(root, train=False, transform=transform), batch_size=1000
    )
    model = ReferenceNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    marks: list[Mark] = []
    clock = Stopwatch()
    for epoch in range(1, max_epochs + 1):
        model.train()
        for images, labels in train:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
        wall, cpu = clock.pause()
        model.eval()
        with torch.no_grad():
            correct = sum(
                (model(images).argmax(1) == labels).sum().item()
                for images, labels in test
            )
        marks.append(Mark(epoch, wall, cpu, correct / len(test.dataset)))
        log(f"  reference epoch {epoch}: {describe(marks[-1])}")
        if marks[-1].test_accuracy >= TARGET:
            break
        clock.resume()
    return marks


def run_ours(data: MnistData, recipe: str, log: Callable[[str], None]) -> list[Mark]:
    """Return our recipe's epochs; it stops at the first that reaches 99%."""
    chosen = RECIPES[recipe]
    torch.manual_seed(chosen.config.seed)
    model = chosen.new_model()
    marks: list[Mark] = []
    clock = Stopwatch()

    def score(model: nn.Module, record) -> bool:
        wall, cpu = clock.pause()
        test = accuracy(predict_split(model, data.test, data.normalization))
        marks.append(Mark(record.epoch, wall, cpu, test))
        log(f"  ours ({recipe}) epoch {record.epoch}: {describe(marks[-1])}")
        clock.resume()
        return test >= TARGET

    fit(model, data, chosen.config, progress=False, log=None, on_epoch_end=score)
    return marks


def describe(mark: Mark) -> str:
    """Return one epoch's clocks and test accuracy as a line."""
    return (
        f"{mark.wall:6.1f} s wall {mark.cpu:6.1f} s CPU  test {mark.test_accuracy:.2%}"
    )


def reached(marks: list[Mark]) -> Mark:
    """Return the first epoch at the target; SystemExit when no epoch reached it."""
    for mark in marks:
        if mark.test_accuracy >= TARGET:
            return mark
    raise SystemExit(
        f"a run ended at {marks[-1].test_accuracy:.2%} without reaching {TARGET:.0%}; "
        "raise --reference-epochs or choose another --recipe"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="fast",
        help="our recipe (default: fast)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="reference runs, each between two of ours (default 2)",
    )
    parser.add_argument(
        "--reference-epochs",
        type=int,
        default=14,
        help="most epochs for the reference (default 14)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    data = load_mnist()
    ours: list[Mark] = []
    reference: list[Mark] = []
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number} of {args.rounds}")
        ours.append(reached(run_ours(data, args.recipe, print)))
        reference.append(reached(run_reference(args.reference_epochs, print)))
    print("last run of ours")
    ours.append(reached(run_ours(data, args.recipe, print)))

    print(f"\ntime to {TARGET:.0%} test accuracy, median of each recipe's runs:")
    print("| run | epochs | wall s (median) | CPU s (median) | test accuracy |")
    print("| --- | --- | --- | --- | --- |")
    medians = {}
    for name, marks in (("reference", reference), (f"ours ({args.recipe})", ours)):
        medians[name] = (
            statistics.median(mark.wall for mark in marks),
            statistics.median(mark.cpu for mark in marks),
        )
        print(
            f"| {name} | {', '.join(str(m.epoch) for m in marks)} "
            f"| {medians[name][0]:.1f} ({', '.join(f'{m.wall:.1f}' for m in marks)}) "
            f"| {medians[name][1]:.1f} ({', '.join(f'{m.cpu:.1f}' for m in marks)}) "
            f"| {', '.join(f'{m.test_accuracy:.2%}' for m in marks)} |"
        )
    (ref_wall, ref_cpu), (our_wall, our_cpu) = medians.values()
    print(
        f"\nratio, reference / ours: {ref_wall / our_wall:.1f}x on the wall clock, "
        f"{ref_cpu / our_cpu:.1f}x in CPU seconds"
    )


if __name__ == "__main__":
    main()
