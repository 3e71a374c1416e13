"""Memory addressing: the learned similarity of paper eq. (5), q(a|x) and p(a)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import nets
from vma_tf.models.base import masked_logits

tfd = tfp.distributions


def similarity(memory_embeddings: tf.Tensor, query_embeddings: tf.Tensor) -> tf.Tensor:
    """S(m_a, x) = <e_a, e_q> / ||e_a||  (paper eq. 5).

    memory_embeddings [M, E], query_embeddings [..., E] -> similarities [..., M].
    """
    memory_norms = tf.norm(memory_embeddings, axis=-1) + 1e-6
    return nets.matmul_leading(query_embeddings, memory_embeddings, transpose_matrix=True) / memory_norms


def address_posterior(
    memory_embeddings: tf.Tensor, query_embeddings: tf.Tensor, visible: tf.Tensor | None = None
) -> tfd.Categorical:
    """q(a|x) = softmax_a S(m_a, x) over the entries visible bool [B, M] shows (None: all):
    batch [B], event [], values in range(M)."""
    return tfd.Categorical(logits=masked_logits(similarity(memory_embeddings, query_embeddings), visible))


def address_prior(
    memory_embeddings: tf.Tensor, prior_query: tf.Tensor | None, visible: tf.Tensor | None = None
) -> tfd.Categorical:
    """p(a): the similarity to a learned query e_p [E], or flat 1/|M| when prior_query is None.

    Batch []: one prior shared by the whole batch, since the memory is shared; batch [B] when
    visible bool [B, M] gives each target its own entries.
    """
    if prior_query is None:
        logits = tf.zeros_like(memory_embeddings[:, 0])
    else:
        logits = similarity(memory_embeddings, prior_query)
    if visible is not None:
        logits = masked_logits(tf.broadcast_to(logits, tf.shape(visible)), visible)
    return tfd.Categorical(logits=logits)
