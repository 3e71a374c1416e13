"""The datasets of labelled characters, by name: what the few-shot and sequence tasks and the
evaluation modes that need classes read."""

from __future__ import annotations

from collections.abc import Callable

from vma_tf.config import DataConfig
from vma_tf.data import omniglot, omniglot_gmn
from vma_tf.data.omniglot import CharacterSet

LOADERS: dict[str, Callable[[DataConfig], dict[str, CharacterSet]]] = {
    "omniglot": omniglot.load_splits,
    "omniglot_gmn": omniglot_gmn.load_splits,
}


def has_classes(dataset: str) -> bool:
    return dataset in LOADERS


def load_splits(config: DataConfig) -> dict[str, CharacterSet]:
    """{"train": CharacterSet, "test": CharacterSet} of a labelled dataset."""
    return LOADERS[config.dataset](config)
