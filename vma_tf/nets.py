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
            self.finest_to_logits = keras.layers.Conv2D(1, 3, padding="same", use_bias=False, name="finest_to_logits")
            self.image_to_logits = keras.layers.Conv2D(1, 3, padding="same", use_bias=False, name="image_to_logits")

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
    """MLP with one hidden leaky-ReLU layer -> diagonal Gaussian over R^latent_dim.

    Inputs [..., F]; the distribution has batch shape [...] and event shape [latent_dim].
    Leaky, not ReLU (issue 16): the heads of q(z|x, m_a) and a learned p(z|m_a) read nonnegative
    features, and while the decoder still ignores z the KL term alone moves them, so Adam drives
    whole ReLU layers below zero for good (on 28x28 Omniglot with a learned memory, 196 of 256
    posterior units were dead at step 100 and 255 by step 800, and KL_z stayed at 0.01).
    """

    def __init__(self, hidden_units: int, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(hidden_units, activation="leaky_relu")
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


def matmul_leading(values: tf.Tensor, matrix: tf.Tensor, transpose_matrix: bool = False) -> tf.Tensor:
    """values [..., F] times matrix [F, G] (or [G, F] with transpose_matrix) -> [..., G], as one 2-D
    matmul: an einsum with an ellipsis has a gradient tens of times slower on the CPU."""
    product = tf.matmul(flatten_leading(values, 1), matrix, transpose_b=transpose_matrix)
    return unflatten_samples(product, tf.shape(values)[:-1])


def map_chunks(function, values: tf.Tensor, chunk_size: int) -> tf.Tensor:
    """function(values[i : i + chunk_size]) for every chunk of values [N, ...] (N >= 1), concatenated
    as float32 [N, ...]. One chunk is in flight at a time, so the peak memory is one chunk's
    activations, whatever N is."""
    count = tf.shape(values)[0]
    # The first chunk runs outside the loop: its output's static shape types the others.
    first = tf.cast(function(values[:chunk_size]), tf.float32)
    rest = tf.TensorArray(
        tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, *first.shape[1:]]
    )

    def apply(index, rest):
        start = (index + 1) * chunk_size
        chunk = values[start : tf.minimum(start + chunk_size, count)]
        return index + 1, rest.write(index, tf.cast(function(chunk), tf.float32))

    num_rest = (count - 1) // chunk_size
    _, rest = tf.while_loop(lambda index, _: index < num_rest, apply, (0, rest), parallel_iterations=1)
    return tf.cond(num_rest > 0, lambda: tf.concat([first, rest.concat()], axis=0), lambda: first)


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


class DensePReLU(keras.layers.Layer):
    """An affine map followed by a parametric ReLU with one slope per unit: [..., F] -> [..., units]
    for inputs of any rank (Keras's PReLU learns a slope per input position)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units)
        self.slope = self.add_weight(shape=(units,), initializer=keras.initializers.Constant(0.25), name="slope")

    def call(self, features: tf.Tensor) -> tf.Tensor:
        h = self.dense(features)
        return tf.nn.relu(h) - tf.cast(self.slope, h.dtype) * tf.nn.relu(-h)


class ResidualDown(keras.layers.Layer):
    """One residual block of the GMN feature encoder (Bartunov & Vetrov 2017, appendix C):

        h = PReLU(conv_1(x)),  y = PReLU(conv_2(h) + h) + pool(scale(x))

    conv_1 (kernel_1, stride, valid) sets the output size; conv_2 (kernel_2, same) keeps it; scale
    is a 1x1 conv and pool a max-pool with conv_1's window and stride, so both paths agree.
    """

    def __init__(self, kernel_1: int, kernel_2: int, filters: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.conv_1 = keras.layers.Conv2D(filters, kernel_1, strides=stride, padding="valid")
        self.act_1 = keras.layers.PReLU(shared_axes=[1, 2])
        self.conv_2 = keras.layers.Conv2D(filters, kernel_2, padding="same")
        self.act_2 = keras.layers.PReLU(shared_axes=[1, 2])
        self.scale = keras.layers.Conv2D(filters, 1)
        self.pool = keras.layers.MaxPool2D(kernel_1, strides=stride, padding="valid")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self.act_1(self.conv_1(x))
        return self.act_2(self.conv_2(h) + h) + self.pool(self.scale(x))


class ResidualUp(keras.layers.Layer):
    """The mirror image of ResidualDown for the GMN generator: conv_1 is a transposed conv (valid,
    so (n - 1) * stride + kernel_1 pixels come out), and the shortcut a 1x1 conv resized
    bilinearly to that size."""

    def __init__(self, kernel_1: int, kernel_2: int, filters: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.conv_1 = keras.layers.Conv2DTranspose(filters, kernel_1, strides=stride, padding="valid")
        self.act_1 = keras.layers.PReLU(shared_axes=[1, 2])
        self.conv_2 = keras.layers.Conv2D(filters, kernel_2, padding="same")
        self.act_2 = keras.layers.PReLU(shared_axes=[1, 2])
        self.scale = keras.layers.Conv2D(filters, 1)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self.act_1(self.conv_1(x))
        shortcut = tf.image.resize(self.scale(x), tf.shape(h)[1:3], method="bilinear")
        return self.act_2(self.conv_2(h) + h) + tf.cast(shortcut, h.dtype)


# (kernel_1, kernel_2, filters, stride) of the blocks of appendix C, for 28x28 images.
GMN_ENCODER_BLOCKS = ((4, 3, 16, 2), (3, 3, 16, 2), (2, 2, 32, 2))  # 28 -> 13 -> 6 -> 3
GMN_DECODER_BLOCKS = ((2, 2, 32, 2), (3, 3, 16, 2), (4, 3, 16, 2))  # 3 -> 6 -> 13 -> 28
GMN_IMAGE_SIZE = 28


class ResidualEncoder(keras.layers.Layer):
    """GMN's feature encoder psi: images [N, 28, 28, 1] -> features [N, 288] (3 x 3 x 32)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = tuple(ResidualDown(*block) for block in GMN_ENCODER_BLOCKS)
        self.flatten = keras.layers.Flatten()

    def call(self, images: tf.Tensor) -> tf.Tensor:
        h = images
        for block in self.blocks:
            h = block(h)
        return self.flatten(h)


class ResidualDecoder(keras.layers.Layer):
    """GMN's conditional generator: a code [N, D] -> 3 x 3 x 32 -> three ResidualUp blocks ->
    Bernoulli logits [N, 28, 28, 1] (a 1x1 conv sums the channels with learned weights)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.top_shape = (3, 3, GMN_DECODER_BLOCKS[0][2])
        self.project = keras.layers.Dense(3 * 3 * GMN_DECODER_BLOCKS[0][2])
        self.blocks = tuple(ResidualUp(*block) for block in GMN_DECODER_BLOCKS)
        self.to_logits = keras.layers.Conv2D(1, 1)

    def call(self, code: tf.Tensor) -> tf.Tensor:
        h = tf.reshape(self.project(code), [-1, *self.top_shape])
        for block in self.blocks:
            h = block(h)
        return self.to_logits(h)
