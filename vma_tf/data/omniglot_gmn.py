"""The 28x28 Omniglot of Generative Matching Networks (Bartunov & Vetrov 2017): the authors' own
arrays, on which both papers' Table 1 were measured, split as they published them (Lake: the 30
background alphabets train, the 20 evaluation alphabets test).

`<data_dir>/omniglot_gmn/{train,test}_small.npz` hold one uint8 [20, 784] array per character,
keyed `images_background/<Alphabet>/characterNN` (`images_evaluation/...` for the test file),
row-major 28x28 with values 0 and 255 and ink = 0 (thin strokes, about 8% ink). Loading inverts
them (ink = 1, as every dataset here) and keeps the keys' alphabet and character names.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from vma_tf.config import DataConfig
from vma_tf.data.omniglot import CharacterSet
from vma_tf.errors import UserInputError

FILES = {"train": "train_small.npz", "test": "test_small.npz"}
SOURCE = "the GMN authors' repository (github.com/sbos/gmn, data/train_small.npz and data/test_small.npz)"
IMAGE_SIZE = 28
DRAWINGS = 20


def load_splits(config: DataConfig) -> dict[str, CharacterSet]:
    """{"train": CharacterSet, "test": CharacterSet} of the authors' arrays, from config.data_dir."""
    if config.image_size != IMAGE_SIZE:
        raise UserInputError(
            f"--dataset=omniglot_gmn holds 28x28 images: pass --image_size=28, got {config.image_size}"
        )
    if config.split != "lake":
        raise UserInputError(f"--dataset=omniglot_gmn comes split as its authors published it: pass --split=lake, "
                             f"got {config.split}")
    if config.data_dir is None:
        raise UserInputError(f"--dataset=omniglot_gmn is read from --data_dir (<data_dir>/omniglot_gmn/), not TFDS; "
                             f"the files come from {SOURCE}")
    return {split: _read(os.path.join(config.data_dir, "omniglot_gmn", name)) for split, name in FILES.items()}


def _read(path: str) -> CharacterSet:
    if not os.path.isfile(path):
        raise UserInputError(f"missing {path}: the GMN authors' 28x28 Omniglot, from {SOURCE}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            arrays = [archive[key] for key in keys]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserInputError(f"{path} is not a readable .npz of the GMN authors' arrays ({e})") from None
    if not keys:
        raise UserInputError(f"{path} holds no characters")
    alphabets, names = [], []
    for key, array in zip(keys, arrays):
        parts = key.split("/")
        if len(parts) != 3:
            raise UserInputError(f"{path}: unexpected key {key!r} (want images_<set>/<Alphabet>/characterNN)")
        if array.dtype != np.uint8 or array.shape != (DRAWINGS, IMAGE_SIZE * IMAGE_SIZE):
            raise UserInputError(f"{path}: {key} is {array.dtype} {list(array.shape)}, expected uint8 [20, 784]")
        if not np.all((array == 0) | (array == 255)):
            raise UserInputError(f"{path}: {key} holds values other than 0 and 255")
        alphabets.append(parts[1])
        names.append(parts[2])
    ink = (np.stack(arrays) == 0).astype(np.uint8)
    return CharacterSet(
        images=ink.reshape(len(keys), DRAWINGS, IMAGE_SIZE, IMAGE_SIZE),
        character_ids=np.arange(len(keys), dtype=np.int32),
        alphabets=tuple(alphabets),
        names=tuple(names),
    )
