"""Importance-sampled bounds: against exact likelihoods by quadrature, monotone in K, and
streaming over chunks equal to one log-sum-exp over all the samples."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import objectives
from vma_tf.config import ModelConfig
from vma_tf.evaluation.bounds import BoundEvaluator
from vma_tf.models import LogWeights, build_model

tfd = tfp.distributions
S = 26
TRAPEZOID_GRID = np.linspace(-12.0, 12.0, 48_001)


def _binary_images(count, seed, density=0.15):
    return tf.constant((np.random.default_rng(seed).random((count, S, S, 1)) < density).astype(np.float32))


def _trapezoid_log_integral(log_integrand):
    """log ∫ exp(f(z)) dz over TRAPEZOID_GRID for log_integrand [..., G]."""
    assert log_integrand[..., [0, -1]].max() < log_integrand.max() - 50  # the grid holds the mass
    log_rule = np.log(np.r_[0.5, np.ones(TRAPEZOID_GRID.size - 2), 0.5] * (TRAPEZOID_GRID[1] - TRAPEZOID_GRID[0]))
    return np.logaddexp.reduce(log_integrand + log_rule, axis=-1)


def _bernoulli_log_prob(patterns, logits):
    """log p(x | logits) [P, G] for binary patterns [P, D] and logits [G, D], in float64."""
    return patterns @ logits.T - np.logaddexp(0.0, logits).sum(-1)


class TwoEntryModel:
    """A model small enough to integrate exactly, behind the same interface as the real ones.

    Memory: 2 entries m_a in {0, 1}^D. p(a) = (0.3, 0.7); p(z|m_a) = N(mean(m_a), 1), z in R;
    p(x|z, m_a) = prod_d Bernoulli(x_d; logit = 10 z u_d + 3 (2 m_a,d - 1)), u evenly in [-1, 1].
    The proposal is poor on purpose but has heavier tails than the posterior, so the weights
    are bounded: q(a|x) uniform, q(z|x, m_a) = N(0, 40). Var(w / p(x)) is then ~200, which makes
    the bias of the K = 5000 bound (~Var / 2K = 0.02 nats) visible above its noise.
    """

    prior_a = np.array([0.3, 0.7])
    DIAGNOSTICS = ("kl_a",)
    reads_context = True

    def __init__(self, pixels: int):
        self.u = tf.constant(np.linspace(-1.0, 1.0, pixels), tf.float32)

    def encode_context(self, memory):
        return memory

    def _likelihood(self, z, memory_rows):
        return tfd.Independent(tfd.Bernoulli(logits=10.0 * z[..., None] * self.u + 3.0 * (2.0 * memory_rows - 1.0)), 1)

    def log_weights(self, x, memory, num_samples, seed, visible=None):
        address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        q_a = tfd.Categorical(logits=tf.zeros([x.shape[0], 2]))
        p_a = tfd.Categorical(probs=tf.constant(self.prior_a, tf.float32))
        addresses = tf.cast(q_a.sample(num_samples, seed=address_seed), tf.int32)  # [K, B]
        rows = tf.gather(memory, addresses)  # [K, B, D]
        p_z = tfd.Normal(tf.reduce_mean(rows, -1), 1.0)
        q_z = tfd.Normal(tf.zeros(tf.shape(addresses)), 40.0)
        z = q_z.sample(seed=z_seed)
        likelihood = self._likelihood(z, rows)
        log_likelihood, log_q_a = likelihood.log_prob(x), q_a.log_prob(addresses)
        log_weights = log_likelihood + p_z.log_prob(z) - q_z.log_prob(z) + p_a.log_prob(addresses) - log_q_a
        return LogWeights(
            log_weights=log_weights, log_likelihood=log_likelihood, score_log_prob=log_q_a,
            diagnostics={"kl_a": tf.broadcast_to(tfd.kl_divergence(q_a, p_a), tf.shape(log_weights))},
            reads=addresses, likelihood=likelihood,
        )

    def exact_log_likelihood(self, x, memory):
        """log p(x|M) [B]: a sum over both addresses of integrals over z by the trapezoid rule."""
        patterns, which = np.unique(x.numpy(), axis=0, return_inverse=True)
        per_address = []
        for a in range(2):
            rows = tf.broadcast_to(memory[a], [TRAPEZOID_GRID.size, memory.shape[1]])
            logits = self._likelihood(tf.constant(TRAPEZOID_GRID, tf.float32), rows).distribution.logits
            log_prior_z = -0.5 * (TRAPEZOID_GRID - memory[a].numpy().mean()) ** 2 - 0.5 * np.log(2 * np.pi)
            log_integrand = _bernoulli_log_prob(patterns, logits.numpy().astype(np.float64)) + log_prior_z
            per_address.append(np.log(self.prior_a[a]) + _trapezoid_log_integral(log_integrand))
        return np.logaddexp.reduce(per_address, axis=0)[which.ravel()]


def test_k5000_bound_is_just_below_the_exact_likelihood():
    batch = 4000
    model = TwoEntryModel(pixels=6)
    memory = tf.constant([[1, 0, 1, 0, 1, 1], [0, 0, 1, 1, 0, 0]], tf.float32)
    x = tf.constant((np.random.default_rng(0).random((batch, 6)) < 0.5).astype(np.float32))
    exact = model.exact_log_likelihood(x, memory)
    estimate = BoundEvaluator(model, pairs_per_call=2_000_000)(x, memory, 5000, tf.constant([1, 2]))
    gap = exact + estimate.nll  # log p(x) - L_K: >= 0 in expectation
    standard_error = gap.std() / np.sqrt(batch)
    assert 3 * standard_error < gap.mean() < 0.05, (gap.mean(), standard_error)
    assert np.mean(exact + estimate.elbo) > 10 * gap.mean()  # K = 1 is far looser


def test_k5000_bound_of_the_real_model_matches_quadrature():
    """The VMA model itself with |z| = 1 and two memory entries: its densities and the
    estimator together reproduce the exact marginal likelihood."""
    model = build_model(ModelConfig(latent_dim=1, embed_dim=8, conv_channels=4, hidden_units=16), S)
    memory, x = _binary_images(2, 0), _binary_images(16, 1)
    encoded = model.encode_context(memory)
    log_prior_a = np.log(model.address_prior(encoded).probs_parameter().numpy().astype(np.float64))
    grid = tf.constant(TRAPEZOID_GRID[:, None], tf.float32)
    per_address = []
    for a in range(2):
        entries = model.read(encoded, tf.fill([TRAPEZOID_GRID.size], a))
        logits = model.likelihood(grid, entries).distribution.logits.numpy().reshape(grid.shape[0], -1)
        log_prior_z = model.z_prior(entries).log_prob(grid).numpy().astype(np.float64)
        log_integrand = _bernoulli_log_prob(x.numpy().reshape(16, -1), logits.astype(np.float64)) + log_prior_z
        per_address.append(log_prior_a[a] + _trapezoid_log_integral(log_integrand))
    _assert_a_tight_valid_bound(model, x, memory, np.logaddexp.reduce(per_address, axis=0))


@pytest.mark.parametrize("name", ["vae", "soft_attention"])
def test_k5000_bound_of_the_baselines_matches_quadrature(name):
    """The baselines with |z| = 1: p(x|C) = ∫ N(z; 0, 1) p(x | z, C) dz, integrated on a grid."""
    model = build_model(ModelConfig(name=name, latent_dim=1, embed_dim=8, conv_channels=4, hidden_units=16), S)
    memory, x = _binary_images(3, 0), _binary_images(16, 1)
    encoded = model.encode_context(memory if model.reads_context else None)
    grid = tf.constant(TRAPEZOID_GRID[:, None], tf.float32)
    likelihood, _ = model.likelihood(grid, encoded)
    logits = likelihood.distribution.logits.numpy().reshape(grid.shape[0], -1).astype(np.float64)
    log_prior_z = -0.5 * TRAPEZOID_GRID**2 - 0.5 * np.log(2 * np.pi)
    exact = _trapezoid_log_integral(_bernoulli_log_prob(x.numpy().reshape(16, -1), logits) + log_prior_z)
    # An untrained encoder's q(z|x) is a poorer proposal than VMA's: the draws are noisier.
    _assert_a_tight_valid_bound(model, x, memory, exact, tolerance=0.1)


def _assert_a_tight_valid_bound(model, x, memory, exact, tolerance=0.05):
    estimate = BoundEvaluator(model)(x, memory, 5000, tf.constant([3, 4]))
    gap = exact + estimate.nll
    assert np.all(np.abs(gap) < tolerance), gap
    assert gap.mean() > -3 * gap.std() / np.sqrt(gap.size), gap  # not significantly above log p(x)


def test_streaming_over_chunks_equals_one_log_sum_exp():
    model = build_model(ModelConfig(latent_dim=4, embed_dim=8, conv_channels=4, hidden_units=16), S)
    memory, x = _binary_images(5, 4), _binary_images(8, 5)
    num_samples, seed = 100, tf.constant([7, 8])
    evaluator = BoundEvaluator(model, pairs_per_call=8 * 30)  # chunks of 30, 30, 30, 10
    streamed = evaluator(x, memory, num_samples, seed)

    encoded = model.encode_context(memory)
    chunks = [
        model.log_weights(x, encoded, size, tf.random.experimental.stateless_fold_in(seed, i))
        for i, size in enumerate([30, 30, 30, 10])
    ]
    log_weights = tf.concat([c.log_weights for c in chunks], axis=0)  # [100, 8], held at once
    np.testing.assert_allclose(streamed.nll, -objectives.multi_sample_bound(log_weights).numpy(), atol=1e-4)
    np.testing.assert_allclose(streamed.elbo, -tf.reduce_mean(log_weights, 0).numpy(), atol=1e-4)
    log_likelihood = tf.concat([c.log_likelihood for c in chunks], axis=0)
    np.testing.assert_allclose(streamed.recon, -tf.reduce_mean(log_likelihood, 0).numpy(), atol=1e-4)
    kl_z = tf.concat([c.diagnostics["kl_z"] for c in chunks], axis=0)
    np.testing.assert_allclose(streamed.diagnostics["kl_z"], tf.reduce_mean(kl_z, 0).numpy(), atol=1e-4)
    np.testing.assert_allclose(streamed.diagnostics["kl_a"], chunks[0].diagnostics["kl_a"][0].numpy(), atol=1e-5)
