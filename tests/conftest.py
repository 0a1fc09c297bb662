"""Session setup shared by the tests and the notebooks that pytest --nbval runs."""

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Give each pytest-xdist worker's notebook kernels an equal share of the cores.

    Kernels started by nbval inherit this environment. Without it every kernel's PyTorch uses
    all cores, and two workers on two cores fight over them: small matrix products then run
    many times slower. An OMP_NUM_THREADS already set (e.g. by CI) wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
