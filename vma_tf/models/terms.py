"""The interface between models and objectives: the terms of the importance log-weights."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class LogWeightTerms(NamedTuple):
    """Per-sample terms of log w_k for K samples of B targets, in nats.

    log_likelihood, log_prior_z, log_posterior_z, log_prior_a, log_posterior_a: [K, B].
    Models without a discrete address leave the two `_a` terms at zero.
    kl_a [B]: exact KL(q(a|x) || p(a)), summed over all addresses.
    kl_z [K, B]: analytic KL(q(z|x, m_a) || p(z|m_a)) at each sampled address.
    entropy_a [B]: entropy of q(a|x).
    addresses [K, B]: the sampled addresses (int32), zeros without an address.
    likelihood: p(x|z_k, m_{a_k}), batch [K, B], event [H, W, 1].
    """

    log_likelihood: tf.Tensor
    log_prior_z: tf.Tensor
    log_posterior_z: tf.Tensor
    log_prior_a: tf.Tensor
    log_posterior_a: tf.Tensor
    kl_a: tf.Tensor
    kl_z: tf.Tensor
    entropy_a: tf.Tensor
    addresses: tf.Tensor
    likelihood: tfd.Distribution

    @property
    def log_weights(self) -> tf.Tensor:
        """log w_k = log p(x, z_k, a_k) - log q(z_k, a_k | x): [K, B]."""
        return (
            self.log_likelihood
            + self.log_prior_z
            - self.log_posterior_z
            + self.log_prior_a
            - self.log_posterior_a
        )
