"""Stateless seeds: every random draw in training and evaluation is a function of
(the run's seed, an index such as the step, and a stream naming the purpose)."""

from __future__ import annotations

import tensorflow as tf


def seed_for(seed: int, index: int | tf.Tensor, stream: int) -> tf.Tensor:
    """A stateless seed int32 [2] (the dtype TFP samplers take) for one purpose at one index."""
    return tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(seed, tf.int32), tf.cast(index, tf.int32)]), stream
    )
