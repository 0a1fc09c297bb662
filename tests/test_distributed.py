"""Data-parallel training: the loader's shards, fit in a process group, and torchrun.

The fast tests deal batches out without any process group and run fit inside a Gloo
group of one process (every collective runs, over one member). The slow ones start two
CPU processes with torchrun, as a reader would, and compare them with one process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mnist_tutorial import MnistData, TrainConfig, build_model, fit, load_checkpoint
from mnist_tutorial.data import DeviceLoader, Split
from mnist_tutorial.distributed import (
    any_process,
    data_parallel,
    launched_by_torchrun,
    process_rank,
    sum_over_processes,
)

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("ddp_worker.py")
#: Two processes that train the same steps on the same images differ only by the order
#: in which float32 sums are taken: a few units in the 5th decimal after two epochs.
WEIGHT_TOLERANCE = 1e-4
#: A hung run is cut off here; a failing rank ends one in seconds.
RUN_TIMEOUT_S = 180


def loader(split: Split, shard: tuple[int, int], batch_size: int, **options):
    return DeviceLoader(
        split, batch_size=batch_size, normalization=(0.13, 0.31), shard=shard, **options
    )


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("elastic", [0.0, 34.0])
def test_shards_deal_out_the_one_process_batches(
    synthetic_mnist: MnistData, processes: int, elastic: float
) -> None:
    options = {
        "shuffle": True,
        "augment": True,
        "elastic": elastic,
        "drop_last": True,
        "seed": 7,
    }
    whole = loader(synthetic_mnist.train, (0, 1), 10 * processes, **options)
    shards = [
        loader(synthetic_mnist.train, (rank, processes), 10, **options)
        for rank in range(processes)
    ]
    assert all(len(shard) == len(whole) == 500 // (10 * processes) for shard in shards)
    for _ in range(2):  # the second epoch draws a new order, alike everywhere
        for batch, *parts in zip(whole, *shards, strict=True):
            for rank, (images, labels) in enumerate(parts):
                # Every processes-th image of the batch, augmented as one process would.
                torch.testing.assert_close(images, batch[0][rank::processes])
                assert torch.equal(labels, batch[1][rank::processes])


def test_unshuffled_shards_cover_each_image_once(synthetic_mnist: MnistData) -> None:
    split = synthetic_mnist.validation  # 100 images in batches of 3 x 7 = 21
    seen = [labels for rank in range(3) for _, labels in loader(split, (rank, 3), 7)]
    total = sum(len(labels) for labels in seen)
    assert total == len(split.labels)
    assert torch.equal(torch.cat(seen).sort().values, split.labels.sort().values)


def test_a_shard_outside_the_run_is_refused(synthetic_mnist: MnistData) -> None:
    with pytest.raises(ValueError, match=r"shard must be \(rank, processes\)"):
        loader(synthetic_mnist.train, (2, 2), 10)


def test_one_process_is_not_data_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_torchrun() and process_rank() == 0
    with data_parallel(torch.device("cpu")) as (processes, device):
        assert processes is None and device == torch.device("cpu")
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(sum_over_processes(values), torch.tensor([1.0, 2.0]))
    assert any_process(True, device) and not any_process(False, device)


def test_fit_in_a_process_group_trains_as_one_process(
    synthetic_mnist: MnistData, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrainConfig(epochs=2, batch_size=50, device="cpu")
    torch.manual_seed(0)
    alone = build_model("lenet5")
    alone_run = fit(alone, synthetic_mnist, config, progress=False, log=None)
    # A Gloo group with this process as its only member: every collective runs.
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        torch.manual_seed(0)
        grouped = build_model("lenet5")
        grouped_run = fit(grouped, synthetic_mnist, config, progress=False)
        # The group is the caller's: fit uses it and leaves it open.
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
    described = capsys.readouterr().out.splitlines()[0]
    assert described == (
        "training lenet5 data-parallel on 1 process (cpu, gloo): 500 images, 10 "
        "steps per epoch of 50 = 1 x 50 per process, peak lr 1.00e-02, as for one "
        "process"
    )
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(grouped.state_dict()[name], value, msg=name)
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert grouped_run.history.column(column) == pytest.approx(
            alone_run.history.column(column), rel=1e-5
        )


# --- two processes started by torchrun ---------------------------------------------


def torchrun(
    *args: str, processes: int = 2
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``torchrun --nproc-per-node processes`` with ARGS; return it and its seconds."""
    # One thread each: two processes on two cores.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    return result, time.perf_counter() - started


def save_splits(data: MnistData, path: Path) -> Path:
    torch.save(
        {
            "train": [data.train.images, data.train.labels],
            "validation": [data.validation.images, data.validation.labels],
            "test": [data.test.images, data.test.labels],
            "mean": data.mean,
            "std": data.std,
        },
        path,
    )
    return path


def fit_spec(tmp_path: Path, data: MnistData, config: dict, **extra: object) -> Path:
    spec = {
        "data": str(save_splits(data, tmp_path / "splits.pt")),
        "architecture": "lenet5",
        "config": config,
        "out": str(tmp_path / "trained.pt"),
        **extra,
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(
    synthetic_mnist: MnistData, tmp_path: Path
) -> None:
    # LeNet-5 has neither BatchNorm nor dropout, the two things a process computes
    # from its own images or its own random numbers: the runs must agree.
    config = {"epochs": 2, "batch_size": 50, "device": "cpu", "seed": 3}
    result, seconds = torchrun(
        str(WORKER), "fit", str(fit_spec(tmp_path, synthetic_mnist, config))
    )
    assert result.returncode == 0, result.stderr[-2000:]
    logs = result.stdout.splitlines()
    # Only rank 0 prints: one description, one line per epoch.
    assert sum("data-parallel on 2 processes (cpu, gloo)" in line for line in logs) == 1
    assert "of 50 = 2 x 25 per process" in logs[0]
    assert sum(line.startswith("epoch ") for line in logs) == 2
    trained = torch.load(tmp_path / "trained.pt", weights_only=True)

    torch.manual_seed(3)
    alone = build_model("lenet5")
    run = fit(alone, synthetic_mnist, TrainConfig(**config), progress=False, log=None)
    difference = max(
        (trained["weights"][name] - value).abs().max().item()
        for name, value in alone.state_dict().items()
    )
    print(
        f"two processes vs one: max weight difference {difference:.1e}, "
        f"torchrun run {seconds:.1f} s"
    )
    assert difference < WEIGHT_TOLERANCE
    assert [epoch["val_accuracy"] for epoch in trained["history"]["epochs"]] == (
        pytest.approx(run.history.column("val_accuracy"), abs=0.011)
    )


@pytest.mark.slow
def test_a_failing_rank_ends_the_run_with_its_error(
    synthetic_mnist: MnistData, tmp_path: Path
) -> None:
    config = {"epochs": 3, "batch_size": 50, "device": "cpu", "seed": 0}
    spec = fit_spec(tmp_path, synthetic_mnist, config, fail_rank=1)
    result, seconds = torchrun(str(WORKER), "fit", str(spec))
    assert result.returncode != 0
    assert "RuntimeError: rank 1 failed on purpose" in result.stderr
    # torchrun names the rank that failed first as the cause, not one it woke.
    assert re.search(r"Root Cause.*?rank\s*: 1 ", result.stderr, re.DOTALL)
    # Rank 0 did not go on to train the other epochs, nor write its weights.
    assert "epoch  2/3" not in result.stdout
    assert not (tmp_path / "trained.pt").exists()
    print(f"the run ended {seconds:.1f} s after it started")


@pytest.mark.slow
def test_the_command_line_under_torchrun(
    synthetic_mnist: MnistData, tmp_path: Path
) -> None:
    splits = save_splits(synthetic_mnist, tmp_path / "splits.pt")
    out = tmp_path / "model.pt"
    command = ["train", "--model", "cnn", "--epochs", "1", "--batch-size", "50"]
    result, _ = torchrun(
        str(WORKER),
        "cli",
        str(splits),
        *command,
        "--no-progress",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "cnn: 99,442 parameters"
    assert (
        "of 50 = 2 x 25 per process, peak lr 1.00e-02, as for one process" in lines[1]
    )
    assert sum(line.startswith("test accuracy") for line in lines) == 1
    assert lines[-1] == f"saved {out} and its model card {out.with_suffix('.json')}"
    # Written by rank 0 alone, it loads in one process as any checkpoint does.
    checkpoint = load_checkpoint(out)
    assert len(checkpoint.history.epochs) == 1
    assert checkpoint.training_state is not None

    odd, _ = torchrun(
        str(WORKER),
        "cli",
        str(splits),
        *command[:-1],
        "51",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "odd.pt"),
    )
    assert odd.returncode != 0
    expected = (
        "mnist-tutorial train: error: --batch-size 51 does not split into 2 equal "
        "per-process batches of at least 2 (BatchNorm needs two images); use a multiple "
        "of 2 such as 52"
    )
    # Each rank says it; their lines may interleave on stderr, so count, not split.
    assert odd.stderr.count(expected) >= 1
    assert odd.stderr.count("error:") == odd.stderr.count(expected)
    assert not (tmp_path / "odd.pt").exists()
