"""One process of the data-parallel tests, started by torchrun.

``ddp_worker.py fit SPEC``: SPEC is a JSON file naming the splits to train on (a file
saved with torch.save), the architecture, the TrainConfig fields, where rank 0 writes
the trained weights and history, and optionally a rank that raises after its first
epoch.

``ddp_worker.py cli SPLITS ARGS...``: the command line with ARGS, on those splits
whatever its --data says.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mnist_tutorial import MnistData, Split, TrainConfig, build_model, cli, fit
from mnist_tutorial.distributed import process_rank


def load_splits(path: str) -> MnistData:
    """Return the splits saved in ``path`` by the test."""
    splits = torch.load(path, weights_only=True)
    return MnistData(
        train=Split(*splits["train"]),
        validation=Split(*splits["validation"]),
        test=Split(*splits["test"]),
        mean=splits["mean"],
        std=splits["std"],
    )


def train(spec_path: str) -> None:
    """Train as SPEC says; rank 0 saves the weights and the history."""
    spec = json.loads(Path(spec_path).read_text())
    data = load_splits(spec["data"])
    torch.manual_seed(spec["config"]["seed"])
    model = build_model(spec["architecture"])

    def fail(*_: object) -> None:
        if process_rank() == spec.get("fail_rank"):
            raise RuntimeError(f"rank {process_rank()} failed on purpose")

    run = fit(
        model, data, TrainConfig(**spec["config"]), progress=False, on_epoch_end=fail
    )
    if process_rank() == 0:
        torch.save(
            {"weights": model.state_dict(), "history": run.history.to_dict()},
            spec["out"],
        )


if __name__ == "__main__":
    if sys.argv[1] == "fit":
        train(sys.argv[2])
    else:
        splits = load_splits(sys.argv[2])
        cli.load_mnist = lambda root=None: splits  # type: ignore[assignment]
        sys.exit(cli.main(sys.argv[3:], prog="mnist-tutorial"))
