"""Which context entries each target may read: masked logits and the grouped layout's math.

A visibility mask is bool [B, M] (batch-wide) or [B, M / G] (grouped: G independent groups of
consecutive entries and targets, each target reading only its own group's entries; the model
interface in `vma_tf.models.base` describes both). These functions sit below the models and the
addressing that use them.
"""

from __future__ import annotations

import tensorflow as tf

# What a masked-out logit becomes: finite, so that a target seeing no entry (whose bound the caller
# discards) yields finite values and gradients rather than NaN.
_MASKED_LOGIT = -1e9


def masked_logits(logits: tf.Tensor, visible: tf.Tensor | None) -> tf.Tensor:
    """logits [..., B, M] with the entries that visible bool [B, M] hides (None: none) pushed to a
    finite -1e9, so a softmax gives them zero weight."""
    if visible is None:
        return logits
    return tf.where(visible, logits, tf.constant(_MASKED_LOGIT, logits.dtype))


def visibility_groups(visible: tf.Tensor, memory_size: int | tf.Tensor) -> int | tf.Tensor:
    """G, the number of independent groups of a visibility mask bool [B, M / G] over memory_size = M
    entries (1 for a batch-wide mask [B, M]); static when both sizes are."""
    width = visible.shape[1]
    if width is not None and isinstance(memory_size, int):
        if memory_size % width:
            raise ValueError(f"a visibility mask of {width} columns cannot group a memory of {memory_size} entries")
        return memory_size // width
    return memory_size // tf.shape(visible)[1]


def split_groups(values: tf.Tensor, groups: int | tf.Tensor, inner_rank: int) -> tf.Tensor:
    """values [..., G * N, *inner] -> [..., G, N, *inner], inner being the last inner_rank dimensions
    (their static sizes kept)."""
    shape = tf.shape(values)
    rows = -inner_rank - 1
    inner = [size if size is not None else shape[rows + 1 + i] for i, size in enumerate(values.shape[rows + 1 :])]
    return tf.reshape(values, tf.concat([shape[:rows], [groups, shape[rows] // groups], inner], axis=0))


def merge_groups(values: tf.Tensor, inner_rank: int) -> tf.Tensor:
    """The inverse of split_groups: [..., G, N, *inner] -> [..., G * N, *inner]."""
    shape = tf.shape(values)
    rows = -inner_rank - 2
    inner = [size if size is not None else shape[rows + 2 + i] for i, size in enumerate(values.shape[rows + 2 :])]
    return tf.reshape(values, tf.concat([shape[:rows], [shape[rows] * shape[rows + 1]], inner], axis=0))


def grouped_matmul(values: tf.Tensor, matrices: tf.Tensor, transpose_matrices: bool = False) -> tf.Tensor:
    """values [..., B, X] times their group's matrix: target b of B takes matrices[b // (B / G)] of
    matrices [G, X, Y] ([G, Y, X] with transpose_matrices) -> [..., B, Y].

    One batched matmul over the G groups, the leading dimensions folded into its rows: oneDNN's
    batched matmul that broadcasts batch dimensions corrupts memory in TensorFlow 2.21 (a [3, 1,
    32, 7] by [1, 7, 96] product crashed the process a few ops later)."""
    values, matrices = tf.convert_to_tensor(values), tf.convert_to_tensor(matrices)
    groups = tf.shape(matrices)[0]
    grouped = split_groups(values, groups, 1)  # [..., G, N, X]
    leading = grouped.shape.rank - 3
    # The rows fold in place with one group or no leading samples; otherwise G moves to the front.
    moves = leading and matrices.shape[0] != 1 and any(size != 1 for size in grouped.shape[:leading])
    if moves:
        grouped = tf.transpose(grouped, [leading, *range(leading), leading + 1, leading + 2])  # [G, ..., N, X]
    rows = tf.reshape(grouped, tf.concat([[groups, -1], tf.shape(grouped)[-1:]], axis=0))
    product = tf.matmul(rows, matrices, transpose_b=transpose_matrices)  # [G, (...) N, Y]
    if moves:
        product = tf.reshape(product, tf.concat([tf.shape(grouped)[:-1], tf.shape(product)[-1:]], axis=0))
        product = tf.transpose(product, [*range(1, leading + 1), 0, leading + 1, leading + 2])  # [..., G, N, Y]
    product = tf.reshape(product, tf.concat([tf.shape(values)[:-1], tf.shape(product)[-1:]], axis=0))
    product.set_shape(values.shape[:-1].concatenate(matrices.shape[-2 if transpose_matrices else -1]))
    return product
