"""Unlabelled images, recall episodes and plain batches (paper section 4.1).

Like the few-shot episodes, every batch is a pure function of (seed, step) through stateless
random ops, so a resumed run continues the exact sequence of an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vma_tf.config import DataConfig
from vma_tf.data import labelled, mnist, omniglot
from vma_tf.data.episodes import Episode
from vma_tf.errors import UserInputError

DATASETS = (*labelled.LOADERS, "mnist")


def load_splits(config: DataConfig) -> dict[str, np.ndarray]:
    """{"train": uint8 [N, S, S], "test": uint8 [N', S, S]} in {0, 1}, ink = 1, without labels
    (a labelled dataset's characters, flattened)."""
    if config.dataset == "mnist":
        return mnist.load_splits(config)
    if labelled.has_classes(config.dataset):
        return {name: flattened(characters) for name, characters in labelled.load_splits(config).items()}
    raise UserInputError(f"--dataset must be one of {DATASETS}, got {config.dataset!r}")


def flattened(test: omniglot.CharacterSet | np.ndarray) -> np.ndarray:
    """Images uint8 [N, S, S]: a CharacterSet's images without their classes, or the array itself."""
    if isinstance(test, omniglot.CharacterSet):
        return test.images.reshape(-1, *test.images.shape[2:])
    return test


def _as_images(pixels: tf.Tensor) -> tf.Tensor:
    """uint8 [N, S, S] -> float32 [N, S, S, 1]."""
    return tf.cast(pixels, tf.float32)[..., tf.newaxis]


def sample_recall_episode(images: tf.Tensor, memory_size: int, batch_size: int, seed: tf.Tensor) -> Episode:
    """Train-to-recall (Figure 2A): memory_size distinct images of images uint8 [N, S, S], and
    batch_size targets drawn uniformly, with replacement, from that memory.

    Labels are indices into `images`, so target_labels[i] is in memory_labels.
    """
    memory_seed, target_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    in_memory = tf.math.top_k(tf.random.stateless_uniform([images.shape[0]], memory_seed), k=memory_size).indices
    slots = tf.random.stateless_uniform([batch_size], target_seed, maxval=memory_size, dtype=tf.int32)
    memory = _as_images(tf.gather(images, in_memory))
    return Episode(
        targets=tf.gather(memory, slots),
        target_labels=tf.gather(in_memory, slots),
        memory=memory,
        memory_labels=in_memory,
    )


def sample_batch(images: tf.Tensor, batch_size: int, seed: tf.Tensor) -> Episode:
    """batch_size images drawn uniformly with replacement from images uint8 [N, S, S], for a model
    whose memory is learned or absent: the episode's memory is empty ([0, S, S, 1])."""
    indices = tf.random.stateless_uniform([batch_size], seed, maxval=images.shape[0], dtype=tf.int32)
    size = images.shape[1]
    return Episode(
        targets=_as_images(tf.gather(images, indices)),
        target_labels=indices,
        memory=tf.zeros([0, size, size, 1]),
        memory_labels=tf.zeros([0], tf.int32),
    )


def batch_dataset(
    images: np.ndarray, memory_size: int, batch_size: int, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """An endless dataset of Episodes: recall episodes with a memory of memory_size images, or, with
    memory_size 0, batches without a memory; element i is the batch of training step start_step + i."""
    if memory_size > images.shape[0]:
        raise UserInputError(f"--memory_size={memory_size} but the training split has {images.shape[0]} images")
    pixels = tf.constant(images)

    def batch_at(step: tf.Tensor) -> Episode:
        step_seed = tf.stack([tf.constant(seed, tf.int64), step])
        if memory_size:
            return sample_recall_episode(pixels, memory_size, batch_size, step_seed)
        return sample_batch(pixels, batch_size, step_seed)

    return (
        tf.data.Dataset.counter(start=start_step)
        .map(batch_at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


# Perturbations of the copies `tiled_images` makes beyond the first.
TILE_MAX_SHIFT = 2
TILE_FLIP_RATE = 0.01


def tiled_images(images: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A set of `size` images made of images uint8 [N, S, S] in {0, 1}, for memories larger than a
    test split: (uint8 [size, S, S], the index in `images` of each one's source, int64 [size]).

    The first N are the images themselves; every later copy of an image is shifted by up to
    TILE_MAX_SHIFT pixels in each direction (the vacated border blank) and has TILE_FLIP_RATE of
    its pixels flipped, so copies are distinct images of the same character. Deterministic in seed.
    """
    count, side = len(images), images.shape[1]
    sources = np.arange(size) % count
    tiled = images[sources].copy()
    rng = np.random.default_rng([seed, size])
    for start in range(count, size, count):
        block = tiled[start : start + count]
        shifts = rng.integers(-TILE_MAX_SHIFT, TILE_MAX_SHIFT + 1, size=(len(block), 2))
        for dy, dx in {tuple(s) for s in shifts}:
            chosen = np.all(shifts == (dy, dx), axis=1)
            shifted = np.zeros_like(block[chosen])
            shifted[:, max(dy, 0) : side + min(dy, 0), max(dx, 0) : side + min(dx, 0)] = block[
                chosen, max(-dy, 0) : side + min(-dy, 0), max(-dx, 0) : side + min(-dx, 0)
            ]
            block[chosen] = shifted
        block ^= (rng.random(block.shape) < TILE_FLIP_RATE).astype(np.uint8)
    return tiled, sources
