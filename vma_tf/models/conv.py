"""VMA with convolutional nets (paper section 4.2; Omniglot).

Every conv net runs once per *image* (the B targets and the M memory entries), never once
per (sample, target) pair. q(z|x, m_a) sees concat(x, m_a) as the concatenation of their
tied-pyramid features, which is also what makes the pyramid of q(z|·) and p(x|·) the same
set of weights. Only the upscaler runs K x B times.
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


class ConvMemoryEncoding(NamedTuple):
    """embeddings [M, E]; levels: the pyramid levels below full resolution [M, s, s, C];
    logits [M, S, S, 1]: m_a's own term of the decoder's logits; top [M, F] flattened top
    level; prior_z_params [M, 2Z]; code [M, Z]. A read at addresses [...] has every field but
    the embeddings, each with leading shape [...]."""

    embeddings: tf.Tensor
    levels: tuple[tf.Tensor, ...]
    logits: tf.Tensor
    top: tf.Tensor
    prior_z_params: tf.Tensor
    code: tf.Tensor


class ConvVMA(VariationalMemoryAddressing):
    """Memory entries are images [M, S, S, 1]; target features are the flattened top of the pyramid [B, F]."""

    @classmethod
    def check_config(cls, config: ModelConfig, image_size: int) -> None:
        super().check_config(config, image_size)
        if config.memory_dim:
            raise UserInputError("--memory_dim (vector memory entries) needs --model_arch=mlp; conv nets read images")

    def __init__(self, config: ModelConfig, image_size: int, **kwargs):
        super().__init__(config, image_size, **kwargs)
        channels = config.conv_channels
        self.memory_embedder = nets.Embedder(channels, config.embed_dim, name="memory_embedder")
        self.query_embedder = (
            self.memory_embedder
            if config.tie_embeddings
            else nets.Embedder(channels, config.embed_dim, name="query_embedder")
        )
        self.pyramid = nets.ConvPyramid(channels, name="pyramid")
        self.flatten = keras.layers.Flatten()
        self.posterior_z = nets.GaussianHead(config.hidden_units, config.latent_dim, name="posterior_z")
        self.prior_z = nets.GaussianHead(config.hidden_units, config.latent_dim, name="prior_z")
        self.memory_code = keras.layers.Dense(config.latent_dim, name="memory_code")
        self.decoder = nets.Upscaler(channels, image_size, name="decoder")

    def features(self, x: tf.Tensor, memory: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, ConvMemoryEncoding]:
        """Runs the conv nets once over targets and memory together (the training path)."""
        # tf.split, not slicing: a strided slice's gradient is slow on the CPU.
        sizes = tf.stack([tf.shape(x)[0], tf.shape(memory)[0]])
        both = tf.concat([x, memory], axis=0)
        levels = [tf.split(level, sizes) for level in self.pyramid(both)]
        x_top = self.flatten(levels[-1][0])
        if self.model_config.tie_embeddings:
            query_embeddings, memory_embeddings = tf.split(self.memory_embedder(both), sizes)
        else:
            query_embeddings, memory_embeddings = self.query_embedder(x), self.memory_embedder(memory)
        return x_top, query_embeddings, self._encoding(memory, [m for _, m in levels], memory_embeddings)

    def context_features(self, memory: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, ConvMemoryEncoding]:
        """Runs the conv nets once over the memory, whose entries are the targets too."""
        levels = self.pyramid(memory)
        memory_embeddings = self.memory_embedder(memory)
        query_embeddings = memory_embeddings if self.model_config.tie_embeddings else self.query_embedder(memory)
        return self.flatten(levels[-1]), query_embeddings, self._encoding(memory, levels, memory_embeddings)

    def embed_memory(self, memory: tf.Tensor) -> tf.Tensor:
        return self.memory_embedder(memory)

    def entry_features(self, memory: tf.Tensor) -> ConvMemoryEncoding:
        return self._encoding(memory, self.pyramid(memory), None)

    def _encoding(
        self, memory: tf.Tensor, levels: list[tf.Tensor], embeddings: tf.Tensor | None
    ) -> ConvMemoryEncoding:
        top = self.flatten(levels[-1])
        return ConvMemoryEncoding(
            embeddings=embeddings,
            levels=tuple(levels[1:]),
            logits=self.decoder.memory_logits(levels[0], memory),
            top=top,
            prior_z_params=self.prior_z(top),
            code=tf.cast(self.memory_code(top), tf.float32),
        )

    def target_features(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.flatten(self.pyramid(x)[-1]), self.query_embedder(x)

    def z_prior(self, entries: ConvMemoryEncoding) -> tfd.MultivariateNormalDiag:
        return nets.diag_gaussian(entries.prior_z_params)

    def z_posterior(self, x_features: tf.Tensor, entries: ConvMemoryEncoding) -> tfd.MultivariateNormalDiag:
        x_top = tf.broadcast_to(x_features, tf.shape(entries.top))
        return nets.diag_gaussian(self.posterior_z(tf.concat([x_top, entries.top], axis=-1)))

    def likelihood(self, z: tf.Tensor, entries: ConvMemoryEncoding) -> tfd.Independent:
        code = tf.concat([nets.flatten_leading(z, 1), nets.flatten_leading(entries.code, 1)], axis=-1)
        levels = [nets.flatten_leading(level, 3) for level in entries.levels]
        logits = self.decoder(code, levels, nets.flatten_leading(entries.logits, 3))
        return nets.bernoulli_image(nets.unflatten_samples(logits, tf.shape(z)[:-1]))
