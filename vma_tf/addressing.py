"""Memory addressing: the learned similarity of paper eq. (5), q(a|x) and p(a)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def similarity(memory_embeddings: tf.Tensor, query_embeddings: tf.Tensor) -> tf.Tensor:
    """S(m_a, x) = <e_a, e_q> / ||e_a||  (paper eq. 5).

    memory_embeddings [M, E], query_embeddings [..., E] -> similarities [..., M].
    """
    memory_norms = tf.norm(memory_embeddings, axis=-1) + 1e-6
    return tf.einsum("...e,me->...m", query_embeddings, memory_embeddings) / memory_norms


def address_posterior(memory_embeddings: tf.Tensor, query_embeddings: tf.Tensor) -> tfd.Categorical:
    """q(a|x) = softmax_a S(m_a, x): batch [B], event [], values in range(M)."""
    return tfd.Categorical(logits=similarity(memory_embeddings, query_embeddings))


def address_prior(memory_embeddings: tf.Tensor, prior_query: tf.Tensor | None) -> tfd.Categorical:
    """p(a): the similarity to a learned query e_p [E], or flat 1/|M| when prior_query is None.

    Batch [], event []: one prior shared by the whole batch, since the memory is shared.
    """
    if prior_query is None:
        return tfd.Categorical(logits=tf.zeros_like(memory_embeddings[:, 0]))
    return tfd.Categorical(logits=similarity(memory_embeddings, prior_query))
