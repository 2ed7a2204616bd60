"""Shared test fixtures. Tests that read `../shared` skip when it is absent (users' clones have none)."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under `make test` (pytest-xdist, a process per core) each process, and every command it starts, computes an op
# on one thread: two processes with two-thread pools each would oversubscribe two cores. The inter-op pool keeps
# its default size (a mirrored strategy's replicas run their collectives side by side).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import pytest

SHARED_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared"

# Files whose tests take minutes, longest first. `make test` (pytest-xdist, --no-loadscope-reorder) hands files out
# in collection order, so these start at once, one per process, and the short files fill the rest of the time:
# started last, one of them would run alone on one core at the end.
SLOWEST_FILES = ("test_learning.py", "test_configs_and_demo.py", "test_export.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FILES)))  # stable: the rest keep their order


@pytest.fixture
def shared_data_dir() -> pathlib.Path:
    """`../shared/data` beside the checkout: real vocabulary and query files from the authors' repository."""
    data_dir = SHARED_DIR / "data"
    if not data_dir.is_dir():
        pytest.skip(f"{data_dir} is absent: the real reference data files exist only beside the development checkout")
    return data_dir
