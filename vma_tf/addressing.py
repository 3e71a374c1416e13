"""Memory addressing: the learned similarity of paper eq. (5), q(a|x), p(a), and drawing addresses.

Every function here costs O(|M|) per row plus O(K log |M|) for K draws, so memories of millions
of entries are addressed without anything of size K x |M|.
"""

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


def sample_addresses(distribution: tfd.Categorical, num_samples: int | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """K = num_samples draws from a Categorical over the memory, batch [...]: int32 [K, ...].

    Inverse-CDF sampling: one cumulative sum per row (in float64, so that entries far below
    float32's resolution of the running total keep their share) and a binary search per draw,
    O(|M| + K log |M|). An entry of probability zero (masked) is never drawn: `side="right"`
    lands on the first entry whose cumulative mass exceeds the uniform draw.
    """
    logits = distribution.logits_parameter()
    batch_shape = tf.shape(logits)[:-1]
    rows = tf.reshape(tf.cast(tf.nn.log_softmax(logits), tf.float64), [-1, tf.shape(logits)[-1]])  # [R, M]
    cumulative = tf.math.cumsum(tf.exp(rows), axis=-1)
    uniform = tf.random.stateless_uniform([tf.shape(rows)[0], num_samples], seed, dtype=tf.float64)
    drawn = tf.searchsorted(cumulative, uniform * cumulative[:, -1:], side="right")  # [R, K]
    drawn = tf.minimum(drawn, tf.shape(rows)[-1] - 1)  # u * total rounding up to the total itself
    return tf.reshape(tf.transpose(drawn), tf.concat([[num_samples], batch_shape], axis=0))


def log_prob_at(distribution: tfd.Categorical, addresses: tf.Tensor) -> tf.Tensor:
    """log p(a) of addresses int32 [K, ...] under a Categorical of batch [...] (or batch [], shared):
    float32 [K, ...]. Gathered from one log-softmax per row, O(|M| + K); the Categorical's own
    log_prob broadcasts its logits to [K, ..., |M|]."""
    log_probs = tf.nn.log_softmax(distribution.logits_parameter())
    if log_probs.shape.rank == 1:
        return tf.gather(log_probs, addresses)
    rows = tf.reshape(log_probs, [-1, tf.shape(log_probs)[-1]])  # [R, M]
    columns = tf.transpose(tf.reshape(addresses, [tf.shape(addresses)[0], -1]))  # [R, K]
    return tf.reshape(tf.transpose(tf.gather(rows, columns, batch_dims=1)), tf.shape(addresses))


def mutual_information(posterior: tfd.Categorical) -> tf.Tensor:
    """I(x; a) between the targets and their addresses, in nats: H[mean_x q(a|x)] - mean_x H[q(a|x)]
    over the rows of a posterior of batch [B] (the empirical distribution of B targets): [], at
    most log B. Zero when every target addresses the memory alike, however peaked q(a|x) is."""
    aggregate = tfd.Categorical(probs=tf.reduce_mean(posterior.probs_parameter(), axis=0))
    return aggregate.entropy() - tf.reduce_mean(posterior.entropy())
