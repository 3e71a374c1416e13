"""Variational Memory Addressing (Bornschein et al. 2017, section 2 and 4.2).

    p(x | M) = sum_a p(a | M) ∫ p(z | m_a) p(x | z, m_a) dz
    q(a, z | x, M) = q(a | x, M) q(z | x, m_a)

Where the work goes: every conv net runs once per *image* (the B targets and the M
memory entries), never once per (sample, target) pair. Memory entries are encoded once
(embedding, pyramid levels, p(z|m_a), the |z|-d code) and the K x B sampled addresses
gather those encodings. q(z|x, m_a) therefore sees concat(x, m_a) as the concatenation
of their tied-pyramid features, which is also what makes the pyramid of q(z|·) and
p(x|·) the same set of weights. Only the upscaler runs K x B times.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import addressing, nets
from vma_tf.config import ModelConfig
from vma_tf.models.terms import LogWeightTerms

tfd = tfp.distributions


class MemoryEncoding(NamedTuple):
    """Everything the model needs of each memory entry, computed once per entry.

    embeddings [M, E]; levels: the pyramid levels below full resolution [M, s, s, C];
    logits [M, S, S, 1]: m_a's own term of the decoder's logits; top [M, F] flattened top
    level; prior_z_params [M, 2Z]; code [M, Z].
    """

    embeddings: tf.Tensor
    levels: list[tf.Tensor]
    logits: tf.Tensor
    top: tf.Tensor
    prior_z_params: tf.Tensor
    code: tf.Tensor


class VariationalMemoryAddressing(keras.Model):
    """The VMA model of paper section 4.2 (conv nets on Omniglot)."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(name="vma", **kwargs)
        self.model_config = config
        channels = config.conv_channels
        self.memory_embedder = nets.Embedder(channels, config.embed_dim, name="memory_embedder")
        self.query_embedder = (
            self.memory_embedder
            if config.tie_embeddings
            else nets.Embedder(channels, config.embed_dim, name="query_embedder")
        )
        self.prior_query = (
            self.add_weight(shape=(config.embed_dim,), initializer="random_normal", name="prior_query")
            if config.prior == "learned"
            else None
        )
        self.pyramid = nets.ConvPyramid(channels, name="pyramid")
        self.flatten = keras.layers.Flatten()
        self.posterior_z = nets.GaussianHead(config.hidden_units, config.latent_dim, name="posterior_z")
        self.prior_z = nets.GaussianHead(config.hidden_units, config.latent_dim, name="prior_z")
        self.memory_code = keras.layers.Dense(config.latent_dim, name="memory_code")
        self.decoder = nets.Upscaler(channels, config.image_size, name="decoder")

    def features(self, x: tf.Tensor, memory: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, MemoryEncoding]:
        """Runs the conv nets once over targets x [B, S, S, 1] and memory [M, S, S, 1] together.

        Returns the targets' flattened top features [B, F], their query embeddings [B, E]
        and the memory encoding.
        """
        # tf.split, not slicing: a strided slice's gradient is slow on the CPU.
        sizes = tf.stack([tf.shape(x)[0], tf.shape(memory)[0]])
        both = tf.concat([x, memory], axis=0)
        levels = [tf.split(level, sizes) for level in self.pyramid(both)]
        x_top = self.flatten(levels[-1][0])
        if self.model_config.tie_embeddings:
            query_embeddings, memory_embeddings = tf.split(self.memory_embedder(both), sizes)
        else:
            query_embeddings, memory_embeddings = self.query_embedder(x), self.memory_embedder(memory)
        return x_top, query_embeddings, self._memory_encoding(memory, [m for _, m in levels], memory_embeddings)

    def encode_memory(self, memory: tf.Tensor) -> MemoryEncoding:
        """Encodes memory [M, S, S, 1] for sampling or repeated queries."""
        return self._memory_encoding(memory, self.pyramid(memory), self.memory_embedder(memory))

    def _memory_encoding(
        self, memory: tf.Tensor, levels: list[tf.Tensor], embeddings: tf.Tensor
    ) -> MemoryEncoding:
        top = self.flatten(levels[-1])
        return MemoryEncoding(
            embeddings=embeddings,
            levels=levels[1:],
            logits=self.decoder.memory_logits(levels[0], memory),
            top=top,
            prior_z_params=self.prior_z(top),
            code=tf.cast(self.memory_code(top), tf.float32),
        )

    def address_prior(self, encoding: MemoryEncoding) -> tfd.Categorical:
        """p(a | M): batch [], event [], over range(M)."""
        return addressing.address_prior(encoding.embeddings, self.prior_query)

    def address_posterior(self, x: tf.Tensor, encoding: MemoryEncoding) -> tfd.Categorical:
        """q(a | x, M) for x [B, S, S, 1]: batch [B], event []."""
        return addressing.address_posterior(encoding.embeddings, self.query_embedder(x))

    def z_prior(self, encoding: MemoryEncoding, addresses: tf.Tensor) -> tfd.MultivariateNormalDiag:
        """p(z | m_a) for addresses [...]: batch [...], event [Z]."""
        return nets.diag_gaussian(tf.gather(encoding.prior_z_params, addresses))

    def z_posterior(
        self, x_top: tf.Tensor, encoding: MemoryEncoding, addresses: tf.Tensor
    ) -> tfd.MultivariateNormalDiag:
        """q(z | x, m_a) from the targets' top features x_top [B, F] and addresses [K, B]:
        batch [K, B], event [Z]."""
        m_top = tf.gather(encoding.top, addresses)
        x_top = tf.broadcast_to(x_top, tf.shape(m_top))
        return nets.diag_gaussian(self.posterior_z(tf.concat([x_top, m_top], axis=-1)))

    def likelihood(self, z: tf.Tensor, encoding: MemoryEncoding, addresses: tf.Tensor) -> tfd.Independent:
        """p(x | z, m_a) for z [..., Z] and addresses [...]: batch [...], event [S, S, 1]."""
        sample_shape = tf.shape(addresses)
        flat = tf.reshape(addresses, [-1])
        code = tf.concat([tf.reshape(z, [-1, z.shape[-1]]), tf.gather(encoding.code, flat)], axis=-1)
        levels = [tf.gather(level, flat) for level in encoding.levels]
        logits = self.decoder((code, levels, tf.gather(encoding.logits, flat)))
        logits = tf.reshape(logits, tf.concat([sample_shape, tf.shape(logits)[1:]], axis=0))
        return nets.bernoulli_image(logits)

    def log_weight_terms(
        self, x: tf.Tensor, memory: tf.Tensor, num_samples: int, seed: tf.Tensor
    ) -> LogWeightTerms:
        """The terms of log w for K = num_samples draws (a_k, z_k) ~ q(a, z | x, M).

        x [B, S, S, 1], memory [M, S, S, 1], seed int [2] (stateless). Returns [K, B] terms.
        Runs the conv nets over targets and memory in one pass (the training path).
        """
        x_top, query_embeddings, encoding = self.features(x, memory)
        return self._log_weight_terms(x, x_top, query_embeddings, encoding, num_samples, seed)

    def log_weight_terms_encoded(
        self, x: tf.Tensor, encoding: MemoryEncoding, num_samples: int, seed: tf.Tensor
    ) -> LogWeightTerms:
        """`log_weight_terms` against a memory encoded once by `encode_memory`: for evaluation,
        where many chunks of samples and batches of targets share one (possibly large) memory."""
        x_top = self.flatten(self.pyramid(x)[-1])
        return self._log_weight_terms(x, x_top, self.query_embedder(x), encoding, num_samples, seed)

    def _log_weight_terms(
        self,
        x: tf.Tensor,
        x_top: tf.Tensor,
        query_embeddings: tf.Tensor,
        encoding: MemoryEncoding,
        num_samples: int,
        seed: tf.Tensor,
    ) -> LogWeightTerms:
        address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        q_a = addressing.address_posterior(encoding.embeddings, query_embeddings)
        p_a = self.address_prior(encoding)
        addresses = tf.cast(q_a.sample(num_samples, seed=address_seed), tf.int32)  # [K, B]

        q_z = self.z_posterior(x_top, encoding, addresses)
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

    def sample(self, memory: tf.Tensor, num_samples: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Draws from p(x | M): returns Bernoulli means float32 [N, S, S, 1] and addresses int32 [N]."""
        address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        encoding = self.encode_memory(memory)
        addresses = tf.cast(self.address_prior(encoding).sample(num_samples, seed=address_seed), tf.int32)
        z = self.z_prior(encoding, addresses).sample(seed=z_seed)
        return self.likelihood(z, encoding, addresses).mean(), addresses
