"""Session setup shared by the tests and the notebooks that pytest --nbval runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Give each pytest-xdist worker's notebook kernels an equal share of the cores.

    Kernels started by nbval inherit this environment. Without it every kernel's PyTorch uses
    all cores, and two workers on two cores fight over them: small matrix products then run
    many times slower. An OMP_NUM_THREADS already set (e.g. by CI) wins.
    """
    # The controller (no PYTEST_XDIST_WORKER_COUNT yet) must decide too: the workers inherit its
    # environment, and setdefault would then keep its value.
    workers = int(
        os.environ.get("PYTEST_XDIST_WORKER_COUNT")
        or getattr(config.option, "numprocesses", None)
        or 1
    )
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers))
    )


@pytest.fixture(scope="session")
def mnist():
    """The real splits, loaded once per test process."""
    # Imported here, not at the top: torch must not start before pytest_configure has set
    # OMP_NUM_THREADS, or each worker would use every core.
    from mnist_tutorial.data import load_mnist

    return load_mnist()


@pytest.fixture(scope="session")
def built_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the book once into a temporary folder, warnings as errors; return its html folder."""
    output = tmp_path_factory.mktemp("book")
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
    return output / "_build" / "html"
