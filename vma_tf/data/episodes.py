"""Few-shot training episodes as tf.data: targets plus a memory of *other* images of their classes.

Every episode is a pure function of (seed, step) through stateless random ops, so a
resumed run sees exactly the episodes an uninterrupted run would have seen: the
sampler's whole state is the step counter stored in the checkpoint.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from vma_tf.config import EpisodeConfig
from vma_tf.data.omniglot import CharacterSet
from vma_tf.errors import UserInputError


class Episode(NamedTuple):
    """targets: float32 [B, H, W, 1] in {0, 1}; target_labels: int32 [B] class indices.
    memory: float32 [M, H, W, 1]; memory_labels: int32 [M]. visible: bool [B, M], which entries
    each target may read, or None: every target reads every entry."""

    targets: tf.Tensor
    target_labels: tf.Tensor
    memory: tf.Tensor
    memory_labels: tf.Tensor
    visible: tf.Tensor | None = None


def validate(characters: CharacterSet, config: EpisodeConfig) -> None:
    """Raises UserInputError when `characters` cannot supply episodes shaped by `config`."""
    if config.memory_per_class < 1:
        raise UserInputError(f"--memory_per_class must be at least 1, got {config.memory_per_class}")
    if config.classes_per_batch < 1 or config.targets_per_class < 1:
        raise UserInputError("--classes_per_batch and --targets_per_class must be at least 1")
    if config.confounding_classes < 0:
        raise UserInputError(f"--confounding_classes must be >= 0, got {config.confounding_classes}")
    classes = config.classes_per_batch + config.confounding_classes
    if classes > characters.num_classes:
        raise UserInputError(
            f"an episode needs {classes} classes (--classes_per_batch + --confounding_classes) "
            f"but the split has {characters.num_classes}"
        )
    per_class = config.targets_per_class + config.memory_per_class
    if per_class > characters.images_per_class:
        raise UserInputError(
            f"--targets_per_class + --memory_per_class = {per_class} but each class has only "
            f"{characters.images_per_class} images"
        )


def _random_subset(seed: tf.Tensor, shape: list[int], k: int) -> tf.Tensor:
    """Indices int32 [*shape[:-1], k]: k distinct draws from range(shape[-1]), uniformly."""
    return tf.math.top_k(tf.random.stateless_uniform(shape, seed), k=k, sorted=True).indices


def sample_episode(images: tf.Tensor, config: EpisodeConfig, seed: tf.Tensor) -> Episode:
    """Draws one episode from images uint8 [C, N, H, W] with a stateless seed int [2].

    Classes are drawn without replacement; within each of the first
    `classes_per_batch` classes the targets and the memory images are disjoint draws.
    Confounding classes contribute memory images only.
    """
    num_classes, per_class = images.shape[0], images.shape[1]
    class_seed, image_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    classes = _random_subset(class_seed, [num_classes], config.classes_per_batch + config.confounding_classes)
    draws = _random_subset(
        image_seed, [classes.shape[0], per_class], config.targets_per_class + config.memory_per_class
    )
    chosen = tf.gather(tf.gather(images, classes), draws, batch_dims=1)  # [C', T+Mc, H, W]
    chosen = tf.cast(chosen, tf.float32)[..., tf.newaxis]
    labels = tf.broadcast_to(classes[:, tf.newaxis], draws.shape)

    target_classes = config.classes_per_batch
    targets = chosen[:target_classes, : config.targets_per_class]
    memory = chosen[:, config.targets_per_class :]
    image_shape = images.shape[2:].as_list() + [1]
    return Episode(
        targets=tf.reshape(targets, [-1, *image_shape]),
        target_labels=tf.reshape(labels[:target_classes, : config.targets_per_class], [-1]),
        memory=tf.reshape(memory, [-1, *image_shape]),
        memory_labels=tf.reshape(labels[:, config.targets_per_class :], [-1]),
    )


def sample_sequence(
    images: tf.Tensor,
    num_classes: int,
    length: int,
    seed: tf.Tensor,
    with_replacement: bool = False,
    classes_first: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """A sequence of `length` images from `num_classes` classes drawn from images uint8 [C, N, H, W]:
    the protocol of the papers' conditional likelihood tables (Bartunov & Vetrov 2017, section 3).
    Each position's class is uniform over the sequence's classes.

    Distinct (the default): the classes are drawn without replacement and no drawing repeats.
    With replacement (the GMN authors' `put_new_data`): the classes, and each position's drawing
    among its class's N, are drawn with replacement. classes_first: positions 0..num_classes-1
    hold one drawing of each class, in the order the classes were drawn (the GMN authors' layout
    for models without a pseudo-input). Returns images float32 [length, H, W, 1] and class indices
    int32 [length].
    """
    num_images, per_class = images.shape[0], images.shape[1]
    class_seed, slot_seed, image_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    leading = num_classes if classes_first else 0
    slot_classes = tf.concat([
        tf.range(leading, dtype=tf.int32),
        tf.random.stateless_uniform([length - leading], slot_seed, maxval=num_classes, dtype=tf.int32),
    ], axis=0)
    if with_replacement:
        classes = tf.random.stateless_uniform([num_classes], class_seed, maxval=num_images, dtype=tf.int32)
        drawings = tf.random.stateless_uniform([length], image_seed, maxval=per_class, dtype=tf.int32)
    else:
        if length > per_class:
            raise ValueError(f"a sequence of {length} may need {length} drawings of a class; there are {per_class}")
        classes = _random_subset(class_seed, [num_images], num_classes)
        drawing_order = _random_subset(image_seed, [num_classes, per_class], per_class)  # a permutation per class
        # The j-th image of a class in the sequence is that class's j-th drawing in drawing_order.
        one_hot = tf.one_hot(slot_classes, num_classes, dtype=tf.int32)
        rank = tf.reduce_sum(tf.cumsum(one_hot, axis=0, exclusive=True) * one_hot, axis=-1)
        drawings = tf.gather_nd(drawing_order, tf.stack([slot_classes, rank], axis=-1))
    labels = tf.gather(classes, slot_classes)
    chosen = tf.gather_nd(images, tf.stack([labels, drawings], axis=-1))
    return tf.cast(chosen, tf.float32)[..., tf.newaxis], labels


def causal_visibility(num_sequences: int, length: int, first_target: int = 0) -> tf.Tensor:
    """Which images of its own sequence each target of num_sequences flattened sequences of `length`
    may read, as a grouped mask (models/base.py), one group per sequence: bool
    [num_sequences * (length - first_target), length], true where the entry is an earlier image of
    the target's sequence. Targets are the positions t >= first_target."""
    target_position = tf.tile(tf.range(first_target, length), [num_sequences])
    return tf.range(length)[tf.newaxis, :] < target_position[:, tf.newaxis]


def sample_sequence_episode(
    images: tf.Tensor,
    num_sequences: int,
    num_classes: int,
    length: int,
    seed: tf.Tensor,
    first_target: int = 0,
    with_replacement: bool = False,
    classes_first: bool = False,
) -> Episode:
    """num_sequences sequences (`sample_sequence`) as one Episode: the memory is every image of every
    sequence [S * T, H, W, 1], the targets are the positions t >= first_target
    [S * (T - first_target), H, W, 1], and each target reads the earlier images of its sequence
    (`visible` grouped by sequence, [S * (T - first_target), T]). with_replacement, classes_first:
    `sample_sequence`'s."""
    seeds = tf.random.experimental.stateless_split(seed, num_sequences)
    sequences, labels = tf.map_fn(
        lambda one_seed: sample_sequence(images, num_classes, length, one_seed, with_replacement, classes_first),
        seeds,
        fn_output_signature=(tf.float32, tf.int32),
    )  # [S, T, H, W, 1], [S, T]
    image_shape = sequences.shape[2:]
    return Episode(
        targets=tf.reshape(sequences[:, first_target:], [-1, *image_shape]),
        target_labels=tf.reshape(labels[:, first_target:], [-1]),
        memory=tf.reshape(sequences, [-1, *image_shape]),
        memory_labels=tf.reshape(labels, [-1]),
        visible=causal_visibility(num_sequences, length, first_target),
    )


def sequence_dataset(
    characters: CharacterSet, config: EpisodeConfig, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """An endless dataset of sequence Episodes; element i is the batch of training step start_step + i."""
    images = tf.constant(characters.images)

    def episode_at(step: tf.Tensor) -> Episode:
        return sample_sequence_episode(
            images, config.sequences_per_batch, config.sequence_classes, config.sequence_length,
            tf.stack([tf.constant(seed, tf.int64), step]),
            with_replacement=config.sequence_sampling == "with_replacement",
            classes_first=config.sequence_classes_first,
        )

    return (
        tf.data.Dataset.counter(start=start_step)
        .map(episode_at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def episode_dataset(
    characters: CharacterSet, config: EpisodeConfig, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """An endless dataset of Episodes; element i is the episode of training step start_step + i."""
    validate(characters, config)
    images = tf.constant(characters.images)

    def episode_at(step: tf.Tensor) -> Episode:
        return sample_episode(images, config, tf.stack([tf.constant(seed, tf.int64), step]))

    return (
        tf.data.Dataset.counter(start=start_step)
        .map(episode_at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
