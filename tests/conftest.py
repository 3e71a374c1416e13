"""Shared fixtures. Tests that need the real datasets read VMA_DATA_DIR and fail loudly in CI."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def data_dir() -> str:
    path = os.environ.get("VMA_DATA_DIR", os.path.join(REPO, "..", "shared", "data"))
    if not os.path.isfile(os.path.join(path, "omniglot", "images_background.zip")):
        message = f"real Omniglot data not found under VMA_DATA_DIR={path!r}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One preprocessed-array cache for the whole session: PNGs are decoded once."""
    return os.environ.get("VMA_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
