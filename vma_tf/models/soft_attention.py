"""The soft-attention memory baseline of the VMA paper (section 4.2, Figure 5A).

z is the top latent, and the memory is read by attention that depends on z alone (the
attention may not look at x, or the decoder could not use it):

    p(z) = N(0, I),  q(z|x),  p(x | z, r(z)),
    r(z) = sum_a softmax_a(S(h(m_a), f(z))) * enc(m_a)

with S VMA's similarity (paper eq. 5), h VMA's memory embedding net, f an MLP on z, and enc(m_a)
everything VMA's decoder reads of an entry (its pyramid levels, its term of the logits and a
|z|-d code): the read feeds the decoder where VMA feeds m_a. Every read costs all M entries,
where VMA's hard read costs one.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import addressing, nets
from vma_tf.config import ModelConfig
from vma_tf.models.base import AttendingMemory, LogWeights, attention_entropy
from vma_tf.models.vae import ConvVAE
from vma_tf.visibility import grouped_matmul, masked_logits, split_groups, visibility_groups

tfd = tfp.distributions


class AttendedMemoryEncoding(NamedTuple):
    """embeddings [M, E]; levels: the pyramid levels below full resolution [M, s, s, C];
    logits [M, S, S, 1]: each entry's term of the decoder's logits; code [M, Z]."""

    embeddings: tf.Tensor
    levels: tuple[tf.Tensor, ...]
    logits: tf.Tensor
    code: tf.Tensor


def _memory_size(encoded: AttendedMemoryEncoding) -> int | tf.Tensor:
    return encoded.embeddings.shape[0] or tf.shape(encoded.embeddings)[0]


class SoftAttentionVAE(ConvVAE, AttendingMemory):
    DIAGNOSTICS = ("kl_z", "entropy_attention")

    def __init__(self, config: ModelConfig, image_size: int, **kwargs):
        super().__init__(config, image_size, memory_inputs=True, name="soft_attention", **kwargs)
        self.memory_embedder = nets.Embedder(config.conv_channels, config.embed_dim, name="memory_embedder")
        self.latent_query = nets.MLP((config.hidden_units,), config.embed_dim, name="latent_query")
        self.memory_code = keras.layers.Dense(config.latent_dim, name="memory_code")

    @property
    def reads_context(self) -> bool:
        return True

    def encode_context(self, context: tf.Tensor | None) -> AttendedMemoryEncoding:
        """Encodes memory [M, S, S, 1]. The pyramid is q(z|x)'s, tied as in VMA."""
        if context is None:
            raise ValueError("soft_attention reads a memory: pass one")
        levels = self.pyramid(context)
        return AttendedMemoryEncoding(
            embeddings=self.memory_embedder(context),
            levels=tuple(levels[1:]),
            logits=self.decoder.memory_logits(levels[0], context),
            code=tf.cast(self.memory_code(self.flatten(levels[-1])), tf.float32),
        )

    def attention_weights(
        self, z: tf.Tensor, encoded: AttendedMemoryEncoding, visible: tf.Tensor | None = None
    ) -> tf.Tensor:
        """softmax_a S(h(m_a), f(z)) for z [..., B, Z] over the entries visible bool [B, M] shows
        (None: all): float32 [..., B, M]; under a grouped mask [B, M / G], over the target's group's
        M / G entries."""
        queries = tf.cast(self.latent_query(z), tf.float32)
        if visible is None:
            return tf.nn.softmax(addressing.similarity(encoded.embeddings, queries), axis=-1)
        groups = visibility_groups(visible, _memory_size(encoded))
        return tf.nn.softmax(masked_logits(addressing.grouped_similarity(encoded.embeddings, queries, groups), visible))

    def likelihood(
        self, z: tf.Tensor, encoded: AttendedMemoryEncoding, visible: tf.Tensor | None = None
    ) -> tuple[tfd.Independent, tf.Tensor]:
        """(p(x | z, r(z)) for z [..., Z]: batch [...], event [S, S, 1]; the attention weights [..., M])."""
        weights = self.attention_weights(z, encoded, visible)
        if visible is None:
            flat_weights = nets.flatten_leading(weights, 1)  # [N, M]

            def read(entries: tf.Tensor) -> tf.Tensor:
                return tf.tensordot(tf.cast(flat_weights, entries.dtype), entries, axes=[[1], [0]])
        else:
            groups = visibility_groups(visible, _memory_size(encoded))

            def read(entries: tf.Tensor) -> tf.Tensor:
                """The read of entries [M, ...] by each target's weights over its group: [N, ...]."""
                flat = tf.reshape(entries, [-1, entries.shape[1:].num_elements()])  # [M, X]
                values = grouped_matmul(tf.cast(weights, entries.dtype), split_groups(flat, groups, 1))
                return tf.reshape(values, [-1, *entries.shape[1:]])

        code = tf.concat([nets.flatten_leading(z, 1), read(encoded.code)], axis=-1)
        logits = self.decoder(code, [read(level) for level in encoded.levels], read(encoded.logits))
        return nets.bernoulli_image(nets.unflatten_samples(logits, tf.shape(z)[:-1])), weights

    def log_weights(self, x, encoded, num_samples, seed, visible=None) -> LogWeights:
        record = super().log_weights(x, encoded, num_samples, seed, visible)
        return record._replace(
            diagnostics={**record.diagnostics, "entropy_attention": attention_entropy(record.reads)}
        )

    def attention(self, x: tf.Tensor, encoded: AttendedMemoryEncoding) -> tf.Tensor:
        return self.attention_weights(self.z_posterior(x).mean(), encoded)
