"""Variational Memory Addressing (Bornschein et al. 2017, section 2): the part every architecture shares.

    p(x | M) = sum_a p(a | M) ∫ p(z | m_a) p(x | z, m_a) dz
    q(a, z | x, M) = q(a | x, M) q(z | x, m_a)

Subclasses supply the nets (conv.py: section 4.2; mlp.py: section 4.1) through a few hooks
that work on a *memory encoding*: everything the model needs of each memory entry, computed
once per entry. The K x B sampled addresses gather those encodings, so per-entry work is never
repeated per (sample, target) pair.

The memory is either passed in (few-shot and recall: images [M, S, S, 1]) or, with
`config.memory == "learned"`, the model's own trainable `learned_memory`; such a model takes
memory=None everywhere.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import addressing
from vma_tf.config import ModelConfig
from vma_tf.models.terms import LogWeightTerms

tfd = tfp.distributions


class VariationalMemoryAddressing(keras.Model):
    """The VMA math: addressing, the log-weight terms and sampling. Subclasses implement
    `encode`, `target_features`, `z_posterior`, `z_prior`, `likelihood` (and may override
    `features`)."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(name="vma", **kwargs)
        self.model_config = config
        self.prior_query = (
            self.add_weight(shape=(config.embed_dim,), initializer="random_normal", name="prior_query")
            if config.prior == "learned"
            else None
        )
        self.learned_memory = None
        if config.memory == "learned":
            size = config.image_size
            entry_shape = (config.memory_dim,) if config.memory_dim else (size, size, 1)
            # Images start as uniform noise in [0, 1], the range of the data; vectors as N(0, 1).
            # (Keras's "random_normal" and "random_uniform" have a scale of 0.05: entries that
            # alike give the addresses nothing to tell apart.)
            initializer = (
                keras.initializers.RandomNormal(stddev=1.0)
                if config.memory_dim
                else keras.initializers.RandomUniform(0.0, 1.0)
            )
            self.learned_memory = self.add_weight(
                shape=(config.memory_size, *entry_shape), initializer=initializer, name="learned_memory"
            )

    # -- hooks -------------------------------------------------------------------------------

    def features(self, x: tf.Tensor, memory: tf.Tensor) -> tuple[Any, tf.Tensor, Any]:
        """(the targets' features, their query embeddings [B, E], the memory encoding) for
        x [B, S, S, 1] and memory [M, ...]; may share work between targets and memory."""
        x_features, query_embeddings = self.target_features(x)
        return x_features, query_embeddings, self.encode(memory)

    def encode(self, memory: tf.Tensor) -> Any:
        """The encoding of memory [M, ...]; it has `embeddings` [M, E]."""
        raise NotImplementedError

    def target_features(self, x: tf.Tensor) -> tuple[Any, tf.Tensor]:
        """(what q(z|x, m_a) needs of x [B, S, S, 1], the query embeddings h_q(x) [B, E])."""
        raise NotImplementedError

    def z_posterior(self, x_features: Any, encoding: Any, addresses: tf.Tensor) -> tfd.MultivariateNormalDiag:
        """q(z | x, m_a) for addresses [K, B]: batch [K, B], event [Z]."""
        raise NotImplementedError

    def z_prior(self, encoding: Any, addresses: tf.Tensor) -> tfd.MultivariateNormalDiag:
        """p(z | m_a) for addresses [...]: batch [...], event [Z]."""
        raise NotImplementedError

    def likelihood(self, z: tf.Tensor, encoding: Any, addresses: tf.Tensor) -> tfd.Independent:
        """p(x | z, m_a) for z [..., Z] and addresses [...]: batch [...], event [S, S, 1]."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------

    def memory_or_learned(self, memory: tf.Tensor | None) -> tf.Tensor:
        """The memory to read: `memory`, or the learned memory when it is None.

        A learned-memory model refuses a memory and a few-shot one needs one, so a caller
        cannot silently read the wrong memory.
        """
        if self.learned_memory is None:
            if memory is None:
                raise ValueError("this model's memory is not learned: pass a memory")
            return memory
        if memory is not None:
            raise ValueError("this model reads its learned memory: pass memory=None")
        return tf.convert_to_tensor(self.learned_memory)

    def encode_memory(self, memory: tf.Tensor | None) -> Any:
        """Encodes memory [M, ...] (None: the learned memory) for sampling or repeated queries."""
        return self.encode(self.memory_or_learned(memory))

    def address_prior(self, encoding: Any) -> tfd.Categorical:
        """p(a | M): batch [], event [], over range(M)."""
        return addressing.address_prior(encoding.embeddings, self.prior_query)

    def address_posterior(self, x: tf.Tensor, encoding: Any) -> tfd.Categorical:
        """q(a | x, M) for x [B, S, S, 1]: batch [B], event []."""
        return addressing.address_posterior(encoding.embeddings, self.target_features(x)[1])

    def log_weight_terms(
        self, x: tf.Tensor, memory: tf.Tensor | None, num_samples: int, seed: tf.Tensor
    ) -> LogWeightTerms:
        """The terms of log w for K = num_samples draws (a_k, z_k) ~ q(a, z | x, M).

        x [B, S, S, 1], memory [M, ...] or None (learned), seed int [2] (stateless).
        Returns [K, B] terms. The training path.
        """
        x_features, query_embeddings, encoding = self.features(x, self.memory_or_learned(memory))
        return self._log_weight_terms(x, x_features, query_embeddings, encoding, num_samples, seed)

    def log_weight_terms_encoded(
        self, x: tf.Tensor, encoding: Any, num_samples: int, seed: tf.Tensor
    ) -> LogWeightTerms:
        """`log_weight_terms` against a memory encoded once by `encode_memory`: for evaluation,
        where many chunks of samples and batches of targets share one (possibly large) memory."""
        x_features, query_embeddings = self.target_features(x)
        return self._log_weight_terms(x, x_features, query_embeddings, encoding, num_samples, seed)

    def _log_weight_terms(
        self,
        x: tf.Tensor,
        x_features: Any,
        query_embeddings: tf.Tensor,
        encoding: Any,
        num_samples: int,
        seed: tf.Tensor,
    ) -> LogWeightTerms:
        address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        q_a = addressing.address_posterior(encoding.embeddings, query_embeddings)
        p_a = self.address_prior(encoding)
        addresses = tf.cast(q_a.sample(num_samples, seed=address_seed), tf.int32)  # [K, B]

        q_z = self.z_posterior(x_features, encoding, addresses)
        p_z = self.z_prior(encoding, addresses)
        z = q_z.sample(seed=z_seed)  # [K, B, Z], reparameterised
        likelihood = self.likelihood(z, encoding, addresses)

        return LogWeightTerms(
            log_likelihood=likelihood.log_prob(x),
            log_prior_z=p_z.log_prob(z),
            log_posterior_z=q_z.log_prob(z),
            log_prior_a=p_a.log_prob(addresses),
            log_posterior_a=q_a.log_prob(addresses),
            kl_a=tfd.kl_divergence(q_a, p_a),
            kl_z=tfd.kl_divergence(q_z, p_z),
            entropy_a=q_a.entropy(),
            addresses=addresses,
            likelihood=likelihood,
        )

    def sample(
        self, memory: tf.Tensor | None, num_samples: int, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Draws from p(x | M): returns Bernoulli means float32 [N, S, S, 1] and addresses int32 [N]."""
        address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        encoding = self.encode_memory(memory)
        addresses = tf.cast(self.address_prior(encoding).sample(num_samples, seed=address_seed), tf.int32)
        return self.sample_at(encoding, addresses, z_seed), addresses

    def sample_at(self, encoding: Any, addresses: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Draws from p(x | m_a) at given addresses [...]: Bernoulli means float32 [..., S, S, 1]."""
        z = self.z_prior(encoding, addresses).sample(seed=seed)
        return self.likelihood(z, encoding, addresses).mean()
