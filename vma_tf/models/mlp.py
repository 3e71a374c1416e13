"""VMA with fully connected nets (paper section 4.1; binarized MNIST).

Every net has ReLU hidden layers of `mlp_units` (the paper: 256, 128; the decoder reverses
them). Memory entries are images, flattened, or, for a learned memory, vectors of
`memory_dim`. The first layer of q(z|x, m_a) on concat(x, m_a) is W_x x + W_m m_a, and that of
p(x|z, m_a) on concat(z, m_a) is W_z z + W_m' m_a: the m_a halves are computed once per entry.
Feeding m_a itself to the decoder (rather than a narrow code of it) and adding a linear map of
m_a to the logits is what lets the address carry the target (in a prototype, with only a
narrow path, MNIST train-to-recall with |M| = 16 stalled at KL_a ≈ 0.9 nats; with m_a fed in,
KL_a reached 2.5 of log 16 = 2.77).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import nets
from vma_tf.config import ModelConfig
from vma_tf.errors import UserInputError
from vma_tf.models.vma import VariationalMemoryAddressing

tfd = tfp.distributions


class MlpMemoryEncoding(NamedTuple):
    """embeddings [M, E]; posterior_input [M, H]: m_a's term of q(z|x, m_a)'s first layer;
    prior_z_params [M, 2Z]; decoder_input [M, H']: m_a's term of the decoder's first layer;
    logits [M, S * S]: m_a's linear term of the Bernoulli logits."""

    embeddings: tf.Tensor
    posterior_input: tf.Tensor
    prior_z_params: tf.Tensor
    decoder_input: tf.Tensor
    logits: tf.Tensor


def _flat(entries: tf.Tensor) -> tf.Tensor:
    """[N, ...] -> [N, prod(...)], the last dimension static (the dense layers need it)."""
    return tf.reshape(entries, [-1, entries.shape[1:].num_elements()])


class MlpVMA(VariationalMemoryAddressing):
    """Target features are x's term of q(z|x, m_a)'s first layer [B, H]."""

    @classmethod
    def check_config(cls, config: ModelConfig, image_size: int) -> None:
        super().check_config(config, image_size)
        if config.memory_dim and config.tie_embeddings:
            raise UserInputError("vector memory entries (--memory_dim) need --tie_embeddings=false: h(m) and h_q(x) "
                                 "read different inputs")
        if not config.mlp_units or min(config.mlp_units) < 1:
            raise UserInputError(f"--mlp_units must be a list of positive integers, got {list(config.mlp_units)}")

    def __init__(self, config: ModelConfig, image_size: int, **kwargs):
        super().__init__(config, image_size, **kwargs)
        units, pixels = tuple(config.mlp_units), image_size**2
        self.memory_embedder = nets.MLP(units, config.embed_dim, name="memory_embedder")
        self.query_embedder = (
            self.memory_embedder
            if config.tie_embeddings
            else nets.MLP(units, config.embed_dim, name="query_embedder")
        )
        self.posterior_x = keras.layers.Dense(units[0], use_bias=False, name="posterior_x")
        self.posterior_m = keras.layers.Dense(units[0], name="posterior_m")
        self.posterior_z = nets.MLP(units[1:], 2 * config.latent_dim, name="posterior_z")
        self.prior_z = nets.MLP(units, 2 * config.latent_dim, name="prior_z")
        decoder_units = units[::-1]
        self.decoder_z = keras.layers.Dense(decoder_units[0], use_bias=False, name="decoder_z")
        self.decoder_m = keras.layers.Dense(decoder_units[0], name="decoder_m")
        self.decoder = nets.MLP(decoder_units[1:], pixels, name="decoder")
        self.memory_to_logits = keras.layers.Dense(pixels, use_bias=False, name="memory_to_logits")

    def embed_memory(self, memory: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.memory_embedder(_flat(memory)), tf.float32)

    def entry_features(self, memory: tf.Tensor) -> MlpMemoryEncoding:
        entries = _flat(memory)
        return MlpMemoryEncoding(
            embeddings=None,
            posterior_input=self.posterior_m(entries),
            prior_z_params=tf.cast(self.prior_z(entries), tf.float32),
            decoder_input=self.decoder_m(entries),
            logits=self.memory_to_logits(entries),
        )

    def target_features(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pixels = _flat(x)
        return self.posterior_x(pixels), tf.cast(self.query_embedder(pixels), tf.float32)

    def z_prior(self, entries: MlpMemoryEncoding) -> tfd.MultivariateNormalDiag:
        return nets.diag_gaussian(entries.prior_z_params)

    def z_posterior(self, x_features: tf.Tensor, entries: MlpMemoryEncoding) -> tfd.MultivariateNormalDiag:
        hidden = tf.nn.relu(x_features + entries.posterior_input)  # [K, B, H]
        return nets.diag_gaussian(tf.cast(self.posterior_z(hidden), tf.float32))

    def likelihood(self, z: tf.Tensor, entries: MlpMemoryEncoding) -> tfd.Independent:
        hidden = tf.nn.relu(self.decoder_z(z) + entries.decoder_input)
        logits = self.decoder(hidden) + entries.logits
        size = self.image_size
        return nets.bernoulli_image(tf.reshape(logits, tf.concat([tf.shape(z)[:-1], [size, size, 1]], axis=0)))
