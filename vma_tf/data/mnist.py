"""Binarized MNIST (Larochelle & Murray 2011, the fixed binarization): reading and caching.

Reads `<data_dir>/binarized_mnist/binarized_mnist_{train,test}.amat` (rows of 784 0/1 values,
28x28 row-major, ink = 1) or, with data_dir None, TFDS `binarized_mnist`. Training uses the
50,000 training images; the 10,000 validation images are not used.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from vma_tf.config import DataConfig
from vma_tf.data import cache, tfds_source
from vma_tf.errors import UserInputError

IMAGE_SIZE = 28
SPLITS = {"train": 50_000, "test": 10_000}
_PREPROCESSING_VERSION = 1


def load_splits(config: DataConfig) -> dict[str, np.ndarray]:
    """Returns {"train": uint8 [50000, 28, 28], "test": uint8 [10000, 28, 28]} in {0, 1}."""
    if config.image_size != IMAGE_SIZE:
        raise UserInputError(f"binarized MNIST is {IMAGE_SIZE}x{IMAGE_SIZE}; got --image_size={config.image_size}")
    if config.data_dir is not None:
        paths = {split: _amat_path(config.data_dir, split) for split in SPLITS}
        fingerprint = [cache.file_fingerprint(path) for path in paths.values()]

        def build() -> dict[str, np.ndarray]:
            return {split: _read_amat(path, SPLITS[split]) for split, path in paths.items()}
    else:
        fingerprint = ["tfds:binarized_mnist", "by pixels"]
        build = _from_tfds
    key = hashlib.sha256(repr((_PREPROCESSING_VERSION, fingerprint)).encode()).hexdigest()
    shapes = {split: (rows, IMAGE_SIZE, IMAGE_SIZE) for split, rows in SPLITS.items()}
    return cache.load_or_build(cache.cache_path(config.cache_dir, "binarized_mnist", key), build,
                               lambda arrays: cache.arrays_problem(arrays, shapes, dict.fromkeys(SPLITS, "u")))


def _amat_path(data_dir: str, split: str) -> str:
    path = os.path.join(data_dir, "binarized_mnist", f"binarized_mnist_{split}.amat")
    if not os.path.isfile(path):
        raise UserInputError(f"missing binarized MNIST file {path}")
    return path


def _read_amat(path: str, rows: int) -> np.ndarray:
    """Parses an .amat file of `rows` lines of 784 space-separated 0/1 values: uint8 [rows, 28, 28]."""
    with open(path, "rb") as f:
        text = np.frombuffer(f.read(), np.uint8)
    tokens = text[~np.isin(text, np.frombuffer(b" \t\r\n", np.uint8))]
    values = tokens - ord("0")
    lines = int(np.count_nonzero(text == ord("\n"))) + int(text.size > 0 and text[-1] != ord("\n"))
    pixels = IMAGE_SIZE * IMAGE_SIZE
    if values.size and values.max() > 1:
        raise UserInputError(f"{path} holds characters other than 0, 1 and white space: not a binarized MNIST file")
    if lines != rows or values.size != rows * pixels:
        raise UserInputError(
            f"{path} holds {values.size} values on {lines} lines; expected {rows} lines of {pixels}"
        )
    return values.reshape(rows, IMAGE_SIZE, IMAGE_SIZE)


def _from_tfds() -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    builder = tfds_source.prepared_builder("binarized_mnist")
    splits = {}
    for split in SPLITS:
        images = np.concatenate([batch["image"][..., 0] for batch in tfds.as_numpy(
            builder.as_dataset(split=split, batch_size=10_000, shuffle_files=False)
        )]).astype(np.uint8)
        # TFDS shuffles the examples and keeps no index: a canonical order, by pixels.
        splits[split] = images[np.argsort(np.array([image.tobytes() for image in images]), kind="stable")]
    return splits
