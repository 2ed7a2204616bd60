"""Shared test fixtures. Tests that read `../shared` skip when it is absent (users' clones have none)."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

SHARED_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_data_dir() -> pathlib.Path:
    """`../shared/data` beside the checkout: real vocabulary and query files from the authors' repository."""
    data_dir = SHARED_DIR / "data"
    if not data_dir.is_dir():
        pytest.skip(f"{data_dir} is absent: the real reference data files exist only beside the development checkout")
    return data_dir
