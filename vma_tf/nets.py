"""Keras 3 building blocks shared by the models. Heads return `tfd` distributions in float32.

Shapes: images [N, S, S, 1]; a pyramid's levels are feature maps at S, S/2, S/4, S/8
(rounded up: 26 -> 26, 13, 7, 4).
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

PYRAMID_DEPTH = 6


def pyramid_level_sizes(image_size: int) -> list[int]:
    """Sides of a ConvPyramid's levels, finest first: 'same' stride-2 convs round up (26 -> 13 -> 7 -> 4)."""
    sizes = [image_size]
    for _ in range(PYRAMID_DEPTH // 2):
        sizes.append(-(-sizes[-1] // 2))
    return sizes


class ConvPyramid(keras.layers.Layer):
    """Six 3x3 ReLU conv layers with stride 2 on every second layer (paper section 4.2).

    `call` returns the skip levels [N, S, S, C], [N, S/2, S/2, C], [N, S/4, S/4, C] and the
    top [N, S/8, S/8, C]: the outputs of layers 1, 3, 5 and 6.
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        # Tuples, not lists, throughout: tf.train.Checkpoint and SavedModel see the layers in a
        # tuple, while a Keras 3 list hides them from both.
        self.convs = tuple(
            keras.layers.Conv2D(channels, 3, strides=1 + i % 2, padding="same", activation="relu")
            for i in range(PYRAMID_DEPTH)
        )

    def call(self, images: tf.Tensor) -> list[tf.Tensor]:
        levels, h = [], images
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i % 2 == 0 or i == PYRAMID_DEPTH - 1:
                levels.append(h)
        return levels


class Upscaler(keras.layers.Layer):
    """Maps a code [N, D] (and, for a model with memory, m_a's coarser pyramid levels) to
    Bernoulli logits [N, S, S, 1].

    Each stride-2 transposed conv lands exactly on the next level's size (its output padding
    is chosen for that: cropping costs more in the backward pass than the convolutions) and
    adds that level of m_a's pyramid. The last one maps straight to logits, to which the
    finest level and m_a's pixels add through `memory_logits`: that term is linear in m_a
    alone, so it is computed once per memory entry, not once per (sample, target).
    With memory_inputs=False (a plain VAE) the same layers run without the memory's terms.
    """

    def __init__(self, channels: int, image_size: int, memory_inputs: bool = True, **kwargs):
        super().__init__(**kwargs)
        sizes = pyramid_level_sizes(image_size)
        self.top_shape = (sizes[-1], sizes[-1], channels)
        self.project = keras.layers.Dense(sizes[-1] ** 2 * channels, activation="relu")
        self.convs = tuple(keras.layers.Conv2D(channels, 3, padding="same", activation="relu") for _ in range(3))
        self.upsamples = tuple(
            keras.layers.Conv2DTranspose(
                channels if fine != image_size else 1,
                3,
                strides=2,
                padding="same",
                output_padding=fine - (2 * coarse - 1),
                activation="relu" if fine != image_size else None,
            )
            for coarse, fine in zip(sizes[:0:-1], sizes[-2::-1])
        )
        if memory_inputs:
            self.finest_to_logits = keras.layers.Conv2D(1, 3, padding="same", use_bias=False)
            self.image_to_logits = keras.layers.Conv2D(1, 3, padding="same", use_bias=False)

    def memory_logits(self, finest_level: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
        """m_a's contribution to the logits, [M, S, S, 1], from its finest level [M, S, S, C] and pixels."""
        return self.finest_to_logits(finest_level) + self.image_to_logits(image)

    def call(
        self, code: tf.Tensor, levels: list[tf.Tensor] | None = None, memory_logits: tf.Tensor | None = None
    ) -> tf.Tensor:
        """code [N, D]; m_a's levels [S/2, S/4, S/8] (finest first) and memory_logits [N, S, S, 1], or
        None for a decoder without memory."""
        h = tf.reshape(self.project(code), [-1, *self.top_shape])
        skips = [None, None, None] if levels is None else [levels[-1], *levels[-2::-1]]
        if skips[0] is not None:
            h = h + skips[0]
        for conv, upsample, skip in zip(self.convs, self.upsamples, [*skips[1:], None]):
            h = upsample(conv(h))
            if skip is not None:
                h = h + skip
        return h if memory_logits is None else h + tf.cast(memory_logits, h.dtype)


class Embedder(keras.layers.Layer):
    """Conv pyramid, flatten and a linear map into the matching space: [N, S, S, 1] -> [N, E]."""

    def __init__(self, channels: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.pyramid = ConvPyramid(channels)
        self.flatten = keras.layers.Flatten()
        self.project = keras.layers.Dense(embed_dim)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.project(self.flatten(self.pyramid(images)[-1])), tf.float32)


class GaussianHead(keras.layers.Layer):
    """MLP with one hidden ReLU layer -> diagonal Gaussian over R^latent_dim.

    Inputs [..., F]; the distribution has batch shape [...] and event shape [latent_dim].
    """

    def __init__(self, hidden_units: int, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(hidden_units, activation="relu")
        self.params = keras.layers.Dense(2 * latent_dim)

    def call(self, features: tf.Tensor) -> tf.Tensor:
        """Returns the parameters [..., 2 * latent_dim] (loc, pre-softplus scale) in float32."""
        return tf.cast(self.params(self.hidden(features)), tf.float32)


class MLP(keras.layers.Layer):
    """ReLU hidden layers of the given widths, then a linear map: [..., F] -> [..., output_dim]."""

    def __init__(self, hidden_units: tuple[int, ...], output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = tuple(keras.layers.Dense(units, activation="relu") for units in hidden_units)
        self.output_layer = keras.layers.Dense(output_dim)

    def call(self, features: tf.Tensor) -> tf.Tensor:
        for layer in self.hidden:
            features = layer(features)
        return self.output_layer(features)


def flatten_leading(values: tf.Tensor, inner_rank: int) -> tf.Tensor:
    """[..., *inner] -> [N, *inner], inner being the last inner_rank dimensions (kept static where known,
    as the conv layers need)."""
    dynamic = tf.unstack(tf.shape(values)[-inner_rank:])
    inner = [size if size is not None else dynamic[i] for i, size in enumerate(values.shape[-inner_rank:])]
    return tf.reshape(values, [-1, *inner])


def unflatten_samples(values: tf.Tensor, leading_shape: tf.Tensor) -> tf.Tensor:
    """values [N, ...] computed for N = prod(leading_shape) flattened samples -> [*leading_shape, ...]."""
    return tf.reshape(values, tf.concat([leading_shape, tf.shape(values)[1:]], axis=0))


def diag_gaussian(params: tf.Tensor) -> tfd.MultivariateNormalDiag:
    """params [..., 2Z] from a GaussianHead -> MultivariateNormalDiag, batch [...], event [Z]."""
    loc, raw_scale = tf.split(params, 2, axis=-1)
    return tfd.MultivariateNormalDiag(loc=loc, scale_diag=tf.nn.softplus(raw_scale) + 1e-4)


def bernoulli_image(logits: tf.Tensor) -> tfd.Independent:
    """logits [..., H, W, 1] -> Bernoulli over images, batch [...], event [H, W, 1]."""
    return tfd.Independent(tfd.Bernoulli(logits=tf.cast(logits, tf.float32)), reinterpreted_batch_ndims=3)
