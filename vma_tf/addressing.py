"""Memory addressing: the learned similarity of paper eq. (5), q(a|x), p(a), and drawing addresses.

Every function here costs O(|M|) per row plus O(K log |M|) for K draws, so memories of millions
of entries are addressed without anything of size K x |M|. `address_terms` gives everything a
bound needs of the addresses; past ADDRESS_CHUNK entries it streams the memory in chunks, so
no [B, |M|] row is ever held whole.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import nets
from vma_tf.visibility import grouped_matmul, masked_logits, split_groups, visibility_groups

tfd = tfp.distributions


def similarity(memory_embeddings: tf.Tensor, query_embeddings: tf.Tensor) -> tf.Tensor:
    """S(m_a, x) = <e_a, e_q> / ||e_a||  (paper eq. 5).

    memory_embeddings [M, E], query_embeddings [..., E] -> similarities [..., M].
    """
    return nets.matmul_leading(query_embeddings, memory_embeddings, transpose_matrix=True) / _norms(memory_embeddings)


def grouped_similarity(memory_embeddings: tf.Tensor, query_embeddings: tf.Tensor, groups: int | tf.Tensor) -> tf.Tensor:
    """S(m_a, x) of each query with the entries of its group (models/base.py, grouped visibility):
    memory_embeddings [M, E], query_embeddings [..., B, E] -> similarities [..., B, M / G]."""
    entries = split_groups(memory_embeddings, groups, 1)  # [G, M / G, E]
    return grouped_matmul(query_embeddings, entries / _norms(entries)[..., tf.newaxis], transpose_matrices=True)


def paired_similarity(entry_embeddings: tf.Tensor, query_embeddings: tf.Tensor) -> tf.Tensor:
    """S(m_a, x) of each entry with its own query: entry_embeddings [..., E] and query_embeddings
    broadcastable to them -> [...]."""
    return tf.reduce_sum(entry_embeddings * query_embeddings, -1) / _norms(entry_embeddings)


def _norms(embeddings: tf.Tensor) -> tf.Tensor:
    return tf.norm(embeddings, axis=-1) + 1e-6


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


def mutual_information(posterior: tfd.Categorical, groups: int | tf.Tensor = 1) -> tf.Tensor:
    """I(x; a) between the targets and their addresses, in nats: H[mean_x q(a|x)] - mean_x H[q(a|x)]
    over the rows of a posterior of batch [B] (the empirical distribution of B targets): [], at
    most log B. Zero when every target addresses the memory alike, however peaked q(a|x) is.
    With G groups (a grouped visibility mask), each row spans its own group's entries."""
    probs = posterior.probs_parameter()
    if isinstance(groups, int) and groups == 1:
        mean = tf.reduce_mean(probs, axis=0)
    else:  # the groups' entries are disjoint, and each group holds 1 / G of the targets
        mean = tf.reshape(tf.reduce_mean(split_groups(probs, groups, 1), axis=1), [-1]) / tf.cast(groups, probs.dtype)
    aggregate = tfd.Categorical(probs=mean)
    return aggregate.entropy() - tf.reduce_mean(posterior.entropy())


# Memory entries per chunk when q(a|x) is streamed: bounds the [B, chunk] logits held at once
# (B = 32 queries: 4 MB of float64 per chunk). Memories up to this size are addressed whole.
ADDRESS_CHUNK = 16384


class AddressTerms(NamedTuple):
    """What a bound needs of the addresses of B targets, K draws each (nats).

    addresses int32 [K, B] ~ q(a|x); log_posterior, log_prior [K, B]: log q(a_k|x), log p(a_k);
    kl [B]: KL(q(a|x) || p(a)); entropy [B]: H[q(a|x)]; information []: `mutual_information`.
    """

    addresses: tf.Tensor
    log_posterior: tf.Tensor
    log_prior: tf.Tensor
    kl: tf.Tensor
    entropy: tf.Tensor
    information: tf.Tensor


def address_terms(
    memory_embeddings: tf.Tensor,
    query_embeddings: tf.Tensor,
    prior_query: tf.Tensor | None,
    visible: tf.Tensor | None,
    num_samples: int | tf.Tensor,
    seed: tf.Tensor,
    chunk_size: int = ADDRESS_CHUNK,
) -> AddressTerms:
    """K = num_samples addresses per query embedding [B, E] drawn from q(a|x) over memory_embeddings
    [M, E] (entries hidden by visible bool [B, M] excluded), with their log-probabilities under q and
    p(a) and the per-target KL and entropy.

    A memory known to hold at most chunk_size entries is addressed whole, through the Categoricals;
    any other (larger, or of unknown size) in two streamed passes over chunks of chunk_size entries:
    the first accumulates the log-normalisers of q and p, the second the KL, the entropies and the
    inverse-CDF draws (the same uniforms and the same float64 cumulative mass as `sample_addresses`,
    carried from chunk to chunk). Peak memory O(B x chunk_size + K x B); time O(B x |M| + K x B x
    (|M| / chunk_size) x log chunk_size).
    """
    size = memory_embeddings.shape[0]
    if visible is not None and visible.shape[1] != size:
        return _grouped_address_terms(memory_embeddings, query_embeddings, prior_query, visible, num_samples, seed)
    if size is not None and size <= chunk_size:
        q_a = address_posterior(memory_embeddings, query_embeddings, visible)
        p_a = address_prior(memory_embeddings, prior_query, visible)
        addresses = sample_addresses(q_a, num_samples, seed)
        return AddressTerms(
            addresses=addresses,
            log_posterior=log_prob_at(q_a, addresses),
            log_prior=log_prob_at(p_a, addresses),
            kl=tfd.kl_divergence(q_a, p_a),
            entropy=q_a.entropy(),
            information=mutual_information(q_a),
        )
    return _streamed_address_terms(
        memory_embeddings, query_embeddings, prior_query, visible, num_samples, seed, chunk_size
    )


def _grouped_address_terms(
    memory_embeddings: tf.Tensor,
    query_embeddings: tf.Tensor,
    prior_query: tf.Tensor | None,
    visible: tf.Tensor,
    num_samples: int | tf.Tensor,
    seed: tf.Tensor,
) -> AddressTerms:
    """`address_terms` under a grouped visibility mask bool [B, M / G] (models/base.py): each target's
    q(a|x) and p(a) span the M / G entries of its group, which is all a target can draw, so the
    terms equal the batch-wide ones at G times less work. Addresses are returned over all M."""
    size = memory_embeddings.shape[0] or tf.shape(memory_embeddings)[0]
    groups = visibility_groups(visible, size)
    posterior = grouped_similarity(memory_embeddings, query_embeddings, groups)  # [B, M / G]
    if prior_query is None:
        prior = tf.zeros_like(posterior)
    else:
        prior = grouped_similarity(memory_embeddings, tf.broadcast_to(prior_query, tf.shape(query_embeddings)), groups)
    q_a = tfd.Categorical(logits=masked_logits(posterior, visible))  # each row over its group's entries
    p_a = tfd.Categorical(logits=masked_logits(prior, visible))
    within_group = sample_addresses(q_a, num_samples, seed)  # [K, B]
    targets = tf.shape(query_embeddings)[0]
    group_start = tf.range(targets) // (targets // groups) * (size // groups)  # [B]
    return AddressTerms(
        addresses=within_group + group_start,
        log_posterior=log_prob_at(q_a, within_group),
        log_prior=log_prob_at(p_a, within_group),
        kl=tfd.kl_divergence(q_a, p_a),
        entropy=q_a.entropy(),
        information=mutual_information(q_a, groups),
    )


def _streamed_address_terms(
    memory_embeddings, query_embeddings, prior_query, visible, num_samples, seed, chunk_size
) -> AddressTerms:
    size = tf.shape(memory_embeddings)[0]
    num_queries = tf.shape(query_embeddings)[0]
    num_chunks = (size + chunk_size - 1) // chunk_size

    def chunk_logits(index):
        """Masked logits of q and p over the chunk's entries [B, c] (float64), and its first entry."""
        start = index * chunk_size
        stop = tf.minimum(start + chunk_size, size)
        embeddings = memory_embeddings[start:stop]
        chunk_visible = None if visible is None else visible[:, start:stop]
        posterior = address_posterior(embeddings, query_embeddings, chunk_visible).logits_parameter()
        prior = address_prior(embeddings, prior_query, chunk_visible).logits_parameter()
        prior = tf.broadcast_to(prior, tf.shape(posterior))
        return tf.cast(posterior, tf.float64), tf.cast(prior, tf.float64), start

    def accumulate_normalisers(index, log_norm_q, log_norm_p):
        posterior, prior, _ = chunk_logits(index)
        return (
            index + 1,
            tf.reduce_logsumexp(tf.stack([log_norm_q, tf.reduce_logsumexp(posterior, -1)]), 0),
            tf.reduce_logsumexp(tf.stack([log_norm_p, tf.reduce_logsumexp(prior, -1)]), 0),
        )

    minus_inf = tf.fill([num_queries], tf.constant(-float("inf"), tf.float64))
    _, log_norm_q, log_norm_p = tf.while_loop(
        lambda index, *_: index < num_chunks, accumulate_normalisers, (0, minus_inf, minus_inf),
        parallel_iterations=1,
    )

    # The draws: the uniforms of `sample_addresses`, each landing where the running cumulative mass
    # of q first exceeds it; one that rounding carries past the total keeps the last entry, as there.
    uniform = tf.random.stateless_uniform([num_queries, num_samples], seed, dtype=tf.float64)  # [B, K]
    zeros = tf.zeros([num_queries], tf.float64)

    def accumulate_terms(index, mass_before, drawn, kl, entropy, aggregate_entropy):
        posterior, prior, start = chunk_logits(index)
        log_q = posterior - log_norm_q[:, None]
        log_p = prior - log_norm_p[:, None]
        q = tf.exp(log_q)
        cumulative = mass_before[:, None] + tf.math.cumsum(q, axis=-1)  # [B, c]
        position = tf.searchsorted(cumulative, uniform, side="right")  # [B, K]
        lands_here = (uniform >= mass_before[:, None]) & (position < tf.shape(cumulative)[1])
        aggregate = tf.reduce_mean(q, axis=0)  # [c]: mean_x q(a|x)
        return (
            index + 1,
            cumulative[:, -1],
            tf.where(lands_here, start + position, drawn),
            kl + tf.reduce_sum(tf.math.multiply_no_nan(log_q - log_p, q), -1),
            entropy - tf.reduce_sum(tf.math.multiply_no_nan(log_q, q), -1),
            aggregate_entropy - tf.reduce_sum(tf.math.xlogy(aggregate, aggregate)),
        )

    last_entry = tf.fill([num_queries, num_samples], size - 1)
    zero = tf.constant(0.0, tf.float64)
    _, _, drawn, kl, entropy, aggregate_entropy = tf.while_loop(
        lambda index, *_: index < num_chunks,
        accumulate_terms,
        (0, zeros, last_entry, zeros, zeros, zero),
        parallel_iterations=1,
    )
    addresses = tf.transpose(drawn)  # [K, B]

    # log q and log p at the drawn entries, from their embeddings alone: O(K x B x E).
    drawn_embeddings = tf.gather(memory_embeddings, addresses)  # [K, B, E]
    posterior_at = paired_similarity(drawn_embeddings, query_embeddings)
    prior_at = (
        tf.zeros_like(posterior_at) if prior_query is None else paired_similarity(drawn_embeddings, prior_query)
    )
    return AddressTerms(
        addresses=addresses,
        log_posterior=posterior_at - tf.cast(log_norm_q, tf.float32),
        log_prior=prior_at - tf.cast(log_norm_p, tf.float32),
        kl=tf.cast(kl, tf.float32),
        entropy=tf.cast(entropy, tf.float32),
        information=tf.cast(aggregate_entropy - tf.reduce_mean(entropy), tf.float32),
    )
