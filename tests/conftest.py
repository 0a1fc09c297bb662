"""Session setup shared by the tests and the notebooks that pytest --nbval runs.

Two tiers: ``python -m pytest -m "not slow"`` runs in under a minute on small tensors
and a tiny synthetic MNIST (``synthetic_root``, ``synthetic_mnist``) and never downloads
or reads the real one; the full run adds the tests marked ``slow``: the real MNIST
(``mnist``), the built book (``built_html``), the notebooks (nbval), Chromium, fuzzing
and anything longer than a few seconds.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
#: Fixtures that need the real MNIST or the built book: a test that uses one is slow.
SLOW_FIXTURES = {"mnist", "built_html"}
#: The synthetic set: 60 training and 10 test images of each digit, 10 of the training
#: images of each digit held out for validation (as load_mnist's stratified split does).
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_VALIDATION = 600, 100, 100
#: Seven-segment strokes of each digit: a top, b upper right, c lower right, d bottom,
#: e lower left, f upper left, g middle.
SEGMENTS = {
    0: "abcdef",
    1: "bc",
    2: "abged",
    3: "abgcd",
    4: "fgbc",
    5: "afgcd",
    6: "afgedc",
    7: "abc",
    8: "abcdefg",
    9: "abcdfg",
}


def pytest_configure(config: pytest.Config) -> None:
    """Give each pytest-xdist worker's notebook kernels an equal share of the cores.

    Kernels started by nbval inherit this environment. Without it every kernel's PyTorch
    uses all cores, and two workers on two cores fight over them: small matrix products
    then run many times slower. An OMP_NUM_THREADS already set (e.g. by CI) wins.
    """
    # The controller (no PYTEST_XDIST_WORKER_COUNT yet) must decide too: the workers
    # inherit its environment, and setdefault would then keep its value.
    workers = int(
        os.environ.get("PYTEST_XDIST_WORKER_COUNT")
        or getattr(config.option, "numprocesses", None)
        or 1
    )
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers))
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Mark slow what the fast tier must leave out, whatever its module says.

    The notebooks' cells (nbval collects them from book/*.ipynb) and every test that
    uses the real MNIST or the built book.
    """
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if item.path.suffix == ".ipynb" or uses & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
    # Longest first: pytest-xdist's --dist loadfile hands out whole files in this order
    # (pyproject.toml turns off its reordering by test count), so the notebooks that
    # take many minutes start at once and the short test files fill in around them.
    items.sort(key=lambda item: -recorded_seconds(item.path))


def recorded_seconds(path: Path) -> float:
    """Return how long a notebook's cells took when it was last executed; 0 otherwise."""
    if path.suffix != ".ipynb":
        return 0.0
    return _notebook_seconds(path)


@functools.cache
def _notebook_seconds(path: Path) -> float:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    times = [cell["metadata"].get("execution", {}) for cell in cells]
    return sum(
        (
            datetime.fromisoformat(time["shell.execute_reply"])
            - datetime.fromisoformat(time["iopub.execute_input"])
        ).total_seconds()
        for time in times
        if {"shell.execute_reply", "iopub.execute_input"} <= time.keys()
    )


def _is_local(host: object) -> bool:
    """Return True for this machine's own addresses (and for Unix sockets)."""
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _fast_tests_never_reach_mnist(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Keep a test that is not marked slow off the real MNIST and off the network.

    Its default data root is an empty folder, connections leave only to this machine
    (the download tests serve their mirrors on 127.0.0.1), and npm works offline: a test
    that loads or downloads MNIST by mistake fails at once instead of reading the real
    files or fetching them.
    """
    if request.node.get_closest_marker("slow"):
        return
    monkeypatch.setenv("MNIST_TUTORIAL_DATA", str(tmp_path_factory.mktemp("no-mnist")))
    monkeypatch.setenv("npm_config_offline", "true")
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _is_local(host):
            raise OSError(f"a fast test must not use the network (asked for {host})")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if self.family != socket.AF_UNIX and not _is_local(host):
            raise OSError(f"a fast test must not use the network (asked for {address})")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="session")
def mnist():
    """The real splits, loaded once per test process (a test that uses them is slow)."""
    # Imported here, not at the top: torch must not start before pytest_configure has
    # set OMP_NUM_THREADS, or each worker would use every core.
    from mnist_tutorial.data import load_mnist

    return load_mnist()


# --- a tiny synthetic MNIST -------------------------------------------------------


def synthetic_digits(count: int, seed: int) -> tuple[bytes, bytes]:
    """Return ``count`` 28x28 uint8 digits and their labels (0-9 in turn), as raw bytes.

    Each digit is drawn with its seven-segment strokes, white on black as in MNIST,
    shifted, scaled and thickened at random (seeded): a small model tells them apart in
    an epoch.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    labels = np.arange(count, dtype=np.uint8) % 10
    for index, digit in enumerate(labels):
        left, top = 9 + rng.integers(-2, 3), 5 + rng.integers(-2, 3)
        width, height = 9 + rng.integers(-1, 3), 16 + rng.integers(-2, 3)
        right, bottom, middle = left + width, top + height, top + height // 2
        ends = {
            "a": ((left, top), (right, top)),
            "b": ((right, top), (right, middle)),
            "c": ((right, middle), (right, bottom)),
            "d": ((left, bottom), (right, bottom)),
            "e": ((left, middle), (left, bottom)),
            "f": ((left, top), (left, middle)),
            "g": ((left, middle), (right, middle)),
        }
        picture = Image.new("L", (28, 28), 0)
        pen = ImageDraw.Draw(picture)
        stroke = int(rng.integers(2, 4))
        for segment in SEGMENTS[int(digit)]:
            (x0, y0), (x1, y1) = ends[segment]
            pen.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=255, width=stroke)
        images[index] = np.asarray(picture)
    return images.tobytes(), labels.tobytes()


def idx_images(pixels: bytes, count: int) -> bytes:
    """Return an IDX3 file: magic 0x00000803, count, 28, 28 (big-endian), the pixels."""
    return struct.pack(">IIII", 0x00000803, count, 28, 28) + pixels


def idx_labels(labels: bytes) -> bytes:
    """Return an IDX1 file: magic 0x00000801, count (big-endian), then the labels."""
    return struct.pack(">II", 0x00000801, len(labels)) + labels


@dataclass(frozen=True)
class SyntheticMnist:
    """The four synthetic IDX files: their bytes, digests and the data root of them."""

    root: Path
    files: dict[str, bytes]
    digests: dict[str, str]

    @property
    def raw(self) -> Path:
        """Return the folder of the IDX files, <root>/MNIST/raw."""
        return self.root / "MNIST" / "raw"


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticMnist:
    """Return a data root with a tiny synthetic MNIST: 600 training, 100 test images.

    The files are valid IDX files, but not the real ones: the package's SHA-256 check
    refuses them unless a test patches data.MNIST_FILES with ``digests``
    (``synthetic_root`` does).
    """
    train_images, train_labels = synthetic_digits(SYNTHETIC_TRAIN, seed=0)
    test_images, test_labels = synthetic_digits(SYNTHETIC_TEST, seed=1)
    files = {
        "train-images-idx3-ubyte": idx_images(train_images, SYNTHETIC_TRAIN),
        "train-labels-idx1-ubyte": idx_labels(train_labels),
        "t10k-images-idx3-ubyte": idx_images(test_images, SYNTHETIC_TEST),
        "t10k-labels-idx1-ubyte": idx_labels(test_labels),
    }
    root = tmp_path_factory.mktemp("synthetic-mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, content in files.items():
        (raw / name).write_bytes(content)
    digests = {
        name: hashlib.sha256(content).hexdigest() for name, content in files.items()
    }
    return SyntheticMnist(root, files, digests)


@pytest.fixture()
def synthetic_root(synthetic: SyntheticMnist, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The synthetic data root, with the package made to trust its files for this test.

    load_mnist and download_mnist accept only files whose SHA-256 is in
    data.MNIST_FILES; the synthetic files' digests replace the real ones here (and only
    here), so that ``load_mnist(root, download=False, validation_size=...)`` and
    ``--data root`` work on them.
    """
    import mnist_tutorial.data as data

    monkeypatch.setattr(data, "MNIST_FILES", dict(synthetic.digests))
    return synthetic.root


@pytest.fixture(scope="session")
def synthetic_mnist(synthetic: SyntheticMnist):
    """Return the synthetic set as load_mnist splits it: 500, 100 and 100 images."""
    import mnist_tutorial.data as data

    # The digests are patched only while loading (see synthetic_root).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "MNIST_FILES", dict(synthetic.digests))
        return data.load_mnist(
            synthetic.root, validation_size=SYNTHETIC_VALIDATION, download=False
        )


@pytest.fixture(scope="session")
def built_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the html folder of the book built once, warnings as errors (slow).

    Once per run, not per pytest-xdist worker: the workers share the run's temporary
    folder, and a lock keeps the second waiting for the first's build.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    output = root / "book"
    with FileLock(str(root / "book.lock")):
        if not (output / "built").exists():
            _build_book(output)
            (output / "built").touch()
    return output / "_build" / "html"


def _build_book(output: Path) -> None:
    """Build the book into ``output``; fail with the log's end on any warning."""
    executable = shutil.which(
        "jupyter-book", path=str(Path(sys.executable).parent)
    ) or shutil.which("jupyter-book")
    assert executable, "jupyter-book is not installed"
    result = subprocess.run(
        [
            executable,
            "build",
            str(ROOT),
            "-W",
            "--keep-going",
            "--path-output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 0, (
        f"build failed or warned:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )


@pytest.fixture()
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make PyTorch report no accelerator, as on a machine with only a CPU."""
    import torch

    monkeypatch.setattr(
        torch.accelerator, "current_accelerator", lambda check_available=False: None
    )
    yield


def one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """Return the stderr of a failed command: one line, no traceback, every fragment."""
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    for fragment in fragments:
        assert fragment in error, error
    return error
