"""Shared fixtures. Tests that need the real datasets read VMA_DATA_DIR and fail loudly in CI."""

import hashlib
import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dataset_root(required_file: str, what: str) -> str:
    """VMA_DATA_DIR (default ../shared/data) if it holds required_file; in CI a missing file fails
    the test, elsewhere it skips it."""
    path = os.environ.get("VMA_DATA_DIR", os.path.join(REPO, "..", "shared", "data"))
    if not os.path.isfile(os.path.join(path, required_file)):
        message = f"{what} not found under VMA_DATA_DIR={path!r}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def seeded_initialisation():
    """Every test builds its models from the same initial weights, so none depends on the order it runs in."""
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def data_dir() -> str:
    return _dataset_root(os.path.join("omniglot", "images_background.zip"), "real Omniglot data")


@pytest.fixture(scope="session")
def gmn_data_dir() -> str:
    """The dataset root holding omniglot_gmn/ (the GMN authors' arrays; the same VMA_DATA_DIR)."""
    return _dataset_root(os.path.join("omniglot_gmn", "train_small.npz"), "the GMN authors' Omniglot arrays")


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    """The dataset root holding binarized_mnist/ (the same VMA_DATA_DIR)."""
    return _dataset_root(os.path.join("binarized_mnist", "binarized_mnist_test.amat"), "binarized MNIST")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One preprocessed-array cache for the whole session: PNGs are decoded once."""
    return os.environ.get("VMA_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def smoke_run(data_dir, cache_dir, tmp_path_factory) -> str:
    """The logdir of `train.py --flagfile=smoke.flags --steps=150`, trained once per session (given
    the data folder relative to the working directory, as a user would)."""
    logdir = str(tmp_path_factory.mktemp("smoke") / "run")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--flagfile=smoke.flags",
         f"--data_dir={os.path.relpath(data_dir, REPO)}",
         f"--cache_dir={cache_dir}", f"--logdir={logdir}", "--steps=150"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return logdir


# The smoke flagfile of each model that smoke.flags' few-shot episodes cannot train.
SMOKE_FLAGFILES = {"gmn": "smoke_gmn.flags"}


@pytest.fixture(scope="session")
def baseline_runs(data_dir, cache_dir, tmp_path_factory) -> dict[str, str]:
    """{name: logdir} of every registered model but VMA trained by its smoke flagfile for 40 steps,
    each trained on first use."""

    class Runs(dict):
        def __missing__(self, name):
            logdir = str(tmp_path_factory.mktemp(f"smoke_{name}") / "run")
            result = subprocess.run(
                [sys.executable, os.path.join(REPO, "train.py"),
                 f"--flagfile={SMOKE_FLAGFILES.get(name, 'smoke.flags')}", f"--model={name}",
                 f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={logdir}", "--steps=40",
                 "--log_every=20", "--checkpoint_every=40", "--image_summary_every=40"],
                cwd=REPO, capture_output=True, text=True, timeout=900,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            self[name] = logdir
            return logdir

    return Runs()


def checkpoint_digest(logdir: str) -> str:
    """A hash of every file in logdir/checkpoints: equal before and after means untouched."""
    folder = os.path.join(logdir, "checkpoints")
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            digest.update(name.encode() + f.read())
    return digest.hexdigest()
