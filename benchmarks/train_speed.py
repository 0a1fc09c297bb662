"""Time to 99% test accuracy: the reference PyTorch MNIST recipe against our `fit`.

Both run in one process, ours with `fit`'s defaults. The reference is the example most
tutorials copy, written here from its description: two 3x3 convolutions (32, 64),
max-pool, dropout 0.25, a 9216-128 linear layer, dropout 0.5, a linear output; Adadelta
at lr 1.0 with StepLR(gamma 0.7) each epoch; batch 64; torchvision MNIST with ToTensor
and Normalize through a DataLoader.

Both clocks run from the start of training to the end of each epoch and stop while the
test set is scored (scoring is the same work for both and not part of training). Our
clock includes our per-epoch validation pass, which the reference does not do.

    python benchmarks/train_speed.py         # both runs, stop each at 99.0%
    python benchmarks/train_speed.py --full  # our whole default run, for 99.5%+
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_tutorial import TrainConfig, build_model, fit, load_mnist
from mnist_tutorial.data import default_data_root
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


class Stopwatch:
    """A clock that can be paused while the test set is scored."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.started = time.perf_counter()

    def pause(self) -> float:
        self.elapsed += time.perf_counter() - self.started
        return self.elapsed

    def resume(self) -> None:
        self.started = time.perf_counter()


def run_reference(
    max_epochs: int, log: Callable[[str], None]
) -> list[tuple[int, float, float]]:
    """Return (epoch, seconds, test accuracy) of the reference recipe's epochs.

    Training stops at the first epoch that reaches the target.
    """
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
    marks = []
    clock = Stopwatch()
    for epoch in range(1, max_epochs + 1):
        model.train()
        for images, labels in train:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
        seconds = clock.pause()
        model.eval()
        with torch.no_grad():
            correct = sum(
                (model(images).argmax(1) == labels).sum().item()
                for images, labels in test
            )
        marks.append((epoch, seconds, correct / len(test.dataset)))
        log(f"reference epoch {epoch}: {seconds:6.1f} s  test {marks[-1][2]:.2%}")
        if marks[-1][2] >= TARGET:
            break
        clock.resume()
    return marks


def run_ours(full: bool, log: Callable[[str], None]) -> list[tuple[int, float, float]]:
    """Return (epoch, seconds, test accuracy) for `fit` with its defaults."""
    data = load_mnist()
    torch.manual_seed(0)
    model = build_model()
    marks = []
    clock = Stopwatch()

    def score(model: nn.Module, record) -> bool:
        seconds = clock.pause()
        marks.append(
            (
                record.epoch,
                seconds,
                accuracy(predict_split(model, data.test, data.normalization)),
            )
        )
        log(
            f"ours      epoch {record.epoch}: {seconds:6.1f} s  test {marks[-1][2]:.2%}"
        )
        clock.resume()
        return not full and marks[-1][2] >= TARGET

    fit(model, data, TrainConfig(), progress=False, log=None, on_epoch_end=score)
    return marks


def time_to_target(marks: list[tuple[int, float, float]]) -> float | None:
    """Return the seconds at the first epoch that reached the target, or None."""
    return next((seconds for _, seconds, test in marks if test >= TARGET), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="run all of our default epochs, not just to 99%%",
    )
    parser.add_argument(
        "--reference-epochs",
        type=int,
        default=14,
        help="most epochs for the reference (default 14)",
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    ours = run_ours(args.full, print)
    reference = run_reference(args.reference_epochs, print)
    ours_time, reference_time = time_to_target(ours), time_to_target(reference)
    print(f"\ntime to {TARGET:.1%} test accuracy:")
    print(
        f"  reference: {reference_time and f'{reference_time:.1f} s'} "
        "(epoch accuracies: "
        + ", ".join(f"{test:.2%}" for _, _, test in reference)
        + ")"
    )
    print(
        f"  ours:      {ours_time and f'{ours_time:.1f} s'} (epoch accuracies: "
        + ", ".join(f"{test:.2%}" for _, _, test in ours)
        + ")"
    )
    if ours_time and reference_time:
        print(f"  ratio: ours is {reference_time / ours_time:.1f}x faster")


if __name__ == "__main__":
    main()
