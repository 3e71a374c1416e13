"""VMA's addressing (paper eq. 5 and the address posterior and prior), against independent
computations: similarities, inverse-CDF draws, their log-probabilities, streamed chunks against the
whole memory and numpy, and the address information."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import addressing

B, M = 5, 7


def test_address_information_is_zero_for_alike_rows_and_log_b_for_distinct_one_hot_rows():
    def information(logits):
        return float(addressing.mutual_information(tfp.distributions.Categorical(logits=tf.constant(logits))))

    assert information([[0.0, 50.0, 0.0, 0.0]] * 3) == pytest.approx(0.0, abs=1e-6)  # KL to a flat p(a): log 4
    assert information([[50.0, 0, 0, 0], [0, 50.0, 0, 0], [0, 0, 50.0, 0]]) == pytest.approx(np.log(3), abs=1e-5)
    halves = [[0.0, 0.0, -np.inf, -np.inf], [-np.inf, -np.inf, 0.0, 0.0]]  # masked entries: one bit
    assert information(halves) == pytest.approx(np.log(2), abs=1e-6)


def test_addresses_are_drawn_by_inverse_cdf_with_the_right_frequencies():
    probs = np.array([[0.5, 0.0, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0], [1e-3, 0.0, 0.0, 0.0, 0.999]])
    visible = probs > 0
    logits = tf.where(visible, tf.math.log(tf.constant(probs, tf.float32)), -1e9)
    draws = addressing.sample_addresses(tfp.distributions.Categorical(logits=logits), 20_000, tf.constant([4, 2]))
    assert draws.shape == (20_000, 3) and draws.dtype == tf.int32
    counts = np.stack([np.bincount(draws.numpy()[:, row], minlength=5) for row in range(3)]) / 20_000
    assert not np.any(counts[~visible])  # a masked entry is never drawn
    np.testing.assert_allclose(counts, probs, atol=0.015)  # > 4 standard errors
    prior = addressing.sample_addresses(tfp.distributions.Categorical(logits=tf.zeros([1000])), 7, tf.constant([0, 1]))
    assert prior.shape == (7,)


@pytest.mark.parametrize("batch", [(), (3,)], ids=["shared", "per-target"])
def test_address_log_probs_are_gathered_like_the_categoricals_own(batch):
    distribution = tfp.distributions.Categorical(logits=tf.random.stateless_normal([*batch, 50], [1, 2]) * 3)
    addresses = addressing.sample_addresses(distribution, 6, tf.constant([5, 6]))
    np.testing.assert_allclose(addressing.log_prob_at(distribution, addresses).numpy(),
                               distribution.log_prob(addresses).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("learned_prior", [False, True], ids=["flat_prior", "learned_prior"])
def test_streamed_addressing_equals_the_whole_memory_and_numpy(learned_prior):
    """address_terms over 1,000 entries in 7-entry chunks (143 chunks, the last short), and with an
    unknown memory size (one chunk), against the whole-memory Categoricals and against numpy."""
    memory_size, queries, embed_dim, draws = 1000, 4, 6, 50
    rng = np.random.default_rng(3)
    memory = tf.constant(rng.normal(size=(memory_size, embed_dim)) * 2, tf.float32)
    query = tf.constant(rng.normal(size=(queries, embed_dim)), tf.float32)
    prior_query = tf.constant(rng.normal(size=embed_dim), tf.float32) if learned_prior else None
    visible = rng.random((queries, memory_size)) < 0.7
    seed = tf.constant([8, 9])

    def terms(memory, query, chunk_size):
        return addressing.address_terms(memory, query, prior_query, tf.constant(visible), draws, seed, chunk_size)

    def with_gradients(chunk_size, signature=None):
        @tf.function(input_signature=signature)
        def run(memory, query):
            with tf.GradientTape() as tape:
                tape.watch([memory, query])
                result = terms(memory, query, chunk_size)
                # What a bound differentiates; the KL and entropies are diagnostics.
                objective = tf.reduce_sum(result.log_posterior) + tf.reduce_sum(result.log_prior)
            return result, tape.gradient(objective, [memory, query])
        return run(memory, query)

    whole, whole_gradients = with_gradients(chunk_size=memory_size)
    unknown_size = [tf.TensorSpec([None, embed_dim]), tf.TensorSpec([queries, embed_dim])]
    for streamed, gradients in (with_gradients(chunk_size=7), with_gradients(memory_size, unknown_size)):
        np.testing.assert_array_equal(streamed.addresses.numpy(), whole.addresses.numpy())
        for name in ("log_posterior", "log_prior", "kl", "entropy", "information"):
            np.testing.assert_allclose(getattr(streamed, name).numpy(), getattr(whole, name).numpy(),
                                       rtol=1e-4, atol=1e-4, err_msg=name)
        for got, expected in zip(gradients, whole_gradients):
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4)

    def log_softmax(logits):
        logits = np.where(visible, logits, -np.inf)
        top = logits.max(-1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))

    m, e = memory.numpy().astype(np.float64), query.numpy().astype(np.float64)
    norms = np.linalg.norm(m, axis=1) + 1e-6
    log_q = log_softmax(e @ m.T / norms)
    log_p = log_softmax(np.broadcast_to(prior_query.numpy() @ m.T / norms if learned_prior else 0.0, log_q.shape))
    q = np.exp(log_q)
    aggregate = q.mean(0)
    columns = whole.addresses.numpy().T  # [B, K]
    assert visible[np.arange(queries)[:, None], columns].all()
    np.testing.assert_allclose(whole.log_posterior.numpy().T, np.take_along_axis(log_q, columns, 1), atol=1e-4)
    np.testing.assert_allclose(whole.log_prior.numpy().T, np.take_along_axis(log_p, columns, 1), atol=1e-4)
    # Invisible entries have q = 0 and -inf logs: their terms are 0, so their logs may be anything finite.
    visible_log_q, visible_log_p = np.where(visible, log_q, 0.0), np.where(visible, log_p, 0.0)
    np.testing.assert_allclose(whole.kl.numpy(), np.sum(q * (visible_log_q - visible_log_p), -1), rtol=1e-4)
    np.testing.assert_allclose(whole.entropy.numpy(), -np.sum(q * visible_log_q, -1), rtol=1e-4)
    used = aggregate > 0
    information = -np.sum(aggregate[used] * np.log(aggregate[used])) + np.sum(q * visible_log_q, -1).mean()
    np.testing.assert_allclose(whole.information.numpy(), information, rtol=1e-4, atol=1e-5)


def test_similarity_is_inner_product_over_memory_norm():
    rng = np.random.default_rng(0)
    memory, queries = rng.normal(size=(M, 4)), rng.normal(size=(B, 4))
    expected = queries @ memory.T / np.linalg.norm(memory, axis=1)
    got = addressing.similarity(tf.constant(memory, tf.float32), tf.constant(queries, tf.float32))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_flat_prior_is_uniform():
    prior = addressing.address_prior(tf.ones([M, 4]), None)
    np.testing.assert_allclose(prior.probs_parameter().numpy(), np.full(M, 1 / M), rtol=1e-6)
