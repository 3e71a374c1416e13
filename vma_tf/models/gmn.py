"""Generative Matching Networks (Bartunov & Vetrov 2017): a conditional VAE of a set X,

    p(x | X) = ∫ p(z | X) p(x | z, X) dz,   q(z | x, X),

whose generator and recognition model read X by attention (section 2) through the *full
matching* procedure of appendix B: a recurrent controller takes `hops` attention passes over X,

    a_k(t) = softmax_t <f(u, h_k), g(x_t)>,  r_k = sum_t a_k(t) psi(x_t),  h_{k+1} = GRU(h_k, r_k),

where u is z (generator) or psi(x) (recognition), which share one controller; the data-dependent
prior p(z | X) has its own controller, whose query depends on its state alone. The decoder reads
[z, r_K, h_K+1]. By default X holds a learned pseudo-input x* besides the caller's entries (its
psi and g are learned vectors), so p(x) with an empty X is defined; without it the model is the
paper's "conditional" variant. With attention="avg" every read is the unweighted mean of the
prototypes (the paper's `avg` rows).

Choices the paper leaves open, taken from the authors' code: one feature encoder psi serves the
prototypes, the keys and the recognition query; the controllers' initial states and the
pseudo-input are learned vectors. `matching` chooses the similarity:

- "paper" (appendix C): f and g are affine maps of their inputs to the matching space, each
  followed by a PReLU, and sim is their dot product. Both controllers read one pseudo-input.
- "authors_code" (sbos/gmn, `scg/recurrent.py` Attention and `utils.py` SetRepresentation): g is
  psi itself, f an affine map to psi's 288 dimensions and a PReLU, and sim = beta(h) cos(f, g)
  with a learned strength beta(h) = clip(affine(h), 1e-10, 10) per query. Each controller reads
  its own pseudo-input, which is its own key. The controllers stay Keras GRUs (the authors' cell
  has a PReLU candidate and no reset-after).

A context is encoded once per entry (psi and both controllers' keys); `visible` [B, M] masks it
per target, which is how all T conditionals of a sequence are computed in one pass.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import nets
from vma_tf.config import ModelConfig
from vma_tf.errors import UserInputError
from vma_tf.models.base import (
    AttendingMemory,
    GenerativeModel,
    LogWeights,
    attention_entropy,
    continuous_latent_log_weights,
)
from vma_tf.visibility import grouped_matmul, masked_logits, merge_groups, split_groups, visibility_groups

tfd = tfp.distributions

GMN_ATTENTIONS = ("full", "avg")
GMN_MATCHINGS = ("paper", "authors_code")
# The authors' clip of the attention strength beta(h).
STRENGTH_RANGE = (1e-10, 10.0)
# The size of a prototype psi(x): the residual encoder's 3 x 3 x 32; the conv variant projects to it.
PROTOTYPE_DIM = 288


class ControllerContext(NamedTuple):
    """A context as one controller reads it, for G independent groups of entries (G = 1: one shared
    context), each group holding its M entries after the controller's pseudo-input when the model
    has one (M' = M + 1):

    prototypes [G, M', F]: psi of each entry.
    keys [G, M', D]: g of each entry.
    gate_inputs [G, M', 3H]: psi of each entry through the controller's GRU input kernel. A read is
      a convex combination of prototypes, so its GRU input is the same combination of these:
      projected once per entry rather than once per (hop, target).
    """

    prototypes: tf.Tensor
    keys: tf.Tensor
    gate_inputs: tf.Tensor


class MatchingContext(NamedTuple):
    """A context encoded for the shared controller (recognition and generator) and the prior's."""

    shared: ControllerContext
    prior: ControllerContext


class MatchingQuery(nets.DensePReLU):
    """f: a query [..., D] from inputs and the controller's state (an affine map and a PReLU), and
    with the authors' matching its strength beta(h) [..., 1] (None under the paper's)."""

    def __init__(self, dim: int, learned_strength: bool, **kwargs):
        super().__init__(dim, **kwargs)
        self.strength = keras.layers.Dense(1) if learned_strength else None

    def call(self, inputs: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        query = tf.cast(super().call(tf.concat([inputs, state], axis=-1)), tf.float32)
        if self.strength is None:
            return query, None
        strength = tf.clip_by_value(tf.cast(self.strength(state), tf.float32), *STRENGTH_RANGE)
        return tf.math.l2_normalize(query, axis=-1), strength


class MatchingController(keras.layers.Layer):
    """A recurrent controller taking `hops` attention passes over a context (appendix B, eq. 3-4)."""

    def __init__(
        self, state_units: int, match_dim: int, hops: int, attention: str, matching: str, prototype_dim: int, **kwargs
    ):
        super().__init__(**kwargs)
        self.hops = hops
        self.attention = attention
        # Its weights only: `read` runs the GRU step itself, from the reads' projected inputs.
        self.cell = keras.layers.GRUCell(state_units)
        self.cell.build((None, prototype_dim))
        self.key = nets.DensePReLU(match_dim) if matching == "paper" else None
        self.initial_state = self.add_weight(
            shape=(state_units,), initializer=keras.initializers.RandomUniform(-0.01, 0.01), name="initial_state"
        )

    def keys(self, prototypes: tf.Tensor) -> tf.Tensor:
        """g of each entry: prototypes [..., F] -> keys float32 [..., D] (the authors' matching: the
        unit prototypes, so a dot product with a unit query is their cosine)."""
        if self.key is None:
            return tf.math.l2_normalize(prototypes, axis=-1)
        return tf.cast(self.key(prototypes), tf.float32)

    def context(self, prototypes: tf.Tensor) -> ControllerContext:
        """The controller's view of entries with prototypes [G, M', F]."""
        return ControllerContext(prototypes, self.keys(prototypes), self.gate_inputs(prototypes))

    def gate_inputs(self, prototypes: tf.Tensor) -> tf.Tensor:
        """The GRU input projection (bias excluded) of each entry: prototypes [..., F] -> [..., 3H]."""
        return nets.matmul_leading(prototypes, tf.convert_to_tensor(self.cell.kernel))

    def _update(self, gate_inputs: tf.Tensor, state: tf.Tensor) -> tf.Tensor:
        """h_{k+1} = GRU(h_k, r_k) from r_k's input projection [N, 3H] and h_k [N, H]: Keras's GRUCell
        (reset gate after the recurrent matmul), with gates split by tf.split, whose gradient is
        cheaper on the CPU than the cell's slices."""
        cell = self.cell
        input_bias, recurrent_bias = tf.unstack(tf.convert_to_tensor(cell.bias))
        x_z, x_r, x_h = tf.split(gate_inputs + input_bias, 3, axis=-1)
        recurrent = tf.matmul(state, tf.convert_to_tensor(cell.recurrent_kernel)) + recurrent_bias
        recurrent_z, recurrent_r, recurrent_h = tf.split(recurrent, 3, axis=-1)
        update = tf.sigmoid(x_z + recurrent_z)
        reset = tf.sigmoid(x_r + recurrent_r)
        candidate = tf.tanh(x_h + reset * recurrent_h)
        return update * state + (1 - update) * candidate

    def read(
        self, query: MatchingQuery, inputs: tf.Tensor, context: ControllerContext, visible: tf.Tensor | None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The full matching procedure for queries built from inputs [..., B, Q] (Q may be 0) and
        the state, over a context of G groups; target b reads group b // (B / G), the entries
        visible bool [B, M'] shows (None: all).

        Returns (the last read r_K [..., B, F], the state h_K+1 [..., B, H], the last attention
        weights [..., B, M'])."""
        leading = tf.shape(inputs)[:-1]
        state = nets.flatten_leading(
            tf.broadcast_to(self.initial_state, tf.concat([leading, tf.shape(self.initial_state)], 0)), 1
        )  # [N, H]

        for _ in range(self.hops):
            if self.attention == "avg":
                logits = tf.zeros(tf.concat([leading, tf.shape(context.keys)[1:2]], 0))
            else:
                queries, strength = query(inputs, nets.unflatten_samples(state, leading))
                logits = grouped_matmul(queries, context.keys, transpose_matrices=True)
                if strength is not None:
                    logits *= strength
            weights = tf.nn.softmax(masked_logits(logits, visible), axis=-1)
            state = self._update(nets.flatten_leading(grouped_matmul(weights, context.gate_inputs), 1), state)
        return grouped_matmul(weights, context.prototypes), nets.unflatten_samples(state, leading), weights


class GenerativeMatchingNetwork(GenerativeModel, AttendingMemory):
    """GMN with a feature encoder psi (images [N, S, S, 1] -> [N, F]) and a decoder (codes [N, D] ->
    logits [N, S, S, 1]) given by the architecture."""

    DIAGNOSTICS = ("kl_z", "entropy_attention")

    @classmethod
    def check_config(cls, config: ModelConfig, image_size: int) -> None:
        super().check_config(config, image_size)
        if config.gmn_attention not in GMN_ATTENTIONS:
            raise UserInputError(f"--gmn_attention must be one of {GMN_ATTENTIONS}, got {config.gmn_attention!r}")
        if config.gmn_matching not in GMN_MATCHINGS:
            raise UserInputError(f"--gmn_matching must be one of {GMN_MATCHINGS}, got {config.gmn_matching!r}")
        if config.gmn_hops < 1 or config.gmn_prior_hops < 1:
            raise UserInputError("--gmn_hops and --gmn_prior_hops must be at least 1")

    def __init__(self, config: ModelConfig, image_size: int, encoder: keras.layers.Layer,
                 decoder: keras.layers.Layer, **kwargs):
        super().__init__(name="gmn", **kwargs)
        self.model_config, self.image_size = config, image_size
        self.encoder = encoder
        self.decoder = decoder
        units, matching = config.hidden_units, config.gmn_matching
        authors_code = matching == "authors_code"
        # The authors' queries live in psi's space, where their keys are.
        match_dim = PROTOTYPE_DIM if authors_code else config.embed_dim
        self.controller = MatchingController(
            units, match_dim, config.gmn_hops, config.gmn_attention, matching, PROTOTYPE_DIM, name="controller"
        )
        self.prior_controller = MatchingController(
            units, match_dim, config.gmn_prior_hops, config.gmn_attention, matching, PROTOTYPE_DIM,
            name="prior_controller",
        )
        self.recognition_query = MatchingQuery(match_dim, authors_code, name="recognition_query")
        self.generator_query = MatchingQuery(match_dim, authors_code, name="generator_query")
        self.prior_query = MatchingQuery(match_dim, authors_code, name="prior_query")
        self.posterior_z = nets.GaussianHead(units, config.latent_dim, name="posterior_z")
        self.prior_z = nets.GaussianHead(units, config.latent_dim, name="prior_z")
        # The shared controller's pseudo-input; the prior's is its own only in the authors' matching.
        self.pseudo_input = self.prior_pseudo_input = None
        if config.gmn_pseudo_input:
            self.pseudo_input = self._pseudo_input("pseudo_input", authors_code)
            if authors_code:
                self.prior_pseudo_input = self._pseudo_input("prior_pseudo_input", authors_code)

    def _pseudo_input(self, name: str, authors_code: bool) -> tf.Variable:
        """A learned prototype psi(x*) [1, F]; the authors draw it from U(+-1/F)."""
        bound = 1 / PROTOTYPE_DIM if authors_code else 0.01
        return self.add_weight(
            shape=(1, PROTOTYPE_DIM), initializer=keras.initializers.RandomUniform(-bound, bound), name=name
        )

    @property
    def reads_context(self) -> bool:
        return True

    @property
    def min_context_size(self) -> int:
        return 0 if self.pseudo_input is not None else 1

    def encode_context(self, context: tf.Tensor | None) -> MatchingContext:
        """Encodes a context [M, S, S, 1] as one group; M may be 0 when the model has a pseudo-input."""
        return self._encode(self._prototypes(context), 1)

    def _prototypes(self, context: tf.Tensor | None) -> tf.Tensor:
        """psi of each image of a context [M, S, S, 1]: float32 [M, F]."""
        if context is None:
            raise ValueError("gmn reads a context: pass one (it may be empty, [0, S, S, 1])")
        if self.pseudo_input is None:
            tf.debugging.assert_positive(
                tf.shape(context)[0], message="a conditional GMN (no pseudo-input) needs at least one context image"
            )
        # TensorFlow's CPU convolutions mis-shape an empty batch ([0, 28, 28, C] out of a strided
        # conv), so an empty context is encoded with one blank image, which is then dropped.
        blank = tf.zeros([1, *context.shape[1:]], context.dtype)
        prototypes, _ = tf.split(tf.cast(self.encoder(tf.concat([context, blank], axis=0)), tf.float32), [-1, 1])
        return prototypes

    def _encode(self, prototypes: tf.Tensor, groups: int | tf.Tensor) -> MatchingContext:
        """The MatchingContext of entries with prototypes [M, F], as `groups` groups of M / G."""
        prototypes = split_groups(prototypes, groups, 1)  # [G, M / G, F]

        def with_pseudo_input(pseudo_input: tf.Variable | None) -> tf.Tensor:
            if pseudo_input is None:
                return prototypes
            pseudo = tf.cast(pseudo_input, tf.float32)[tf.newaxis]  # [1, 1, F]
            pseudo = tf.broadcast_to(pseudo, [tf.shape(prototypes)[0], 1, PROTOTYPE_DIM])
            return tf.concat([pseudo, prototypes], axis=1)

        shared = with_pseudo_input(self.pseudo_input)
        prior = shared if self.prior_pseudo_input is None else with_pseudo_input(self.prior_pseudo_input)
        return MatchingContext(shared=self.controller.context(shared), prior=self.prior_controller.context(prior))

    def _in_groups(self, encoded: MatchingContext, visible: tf.Tensor | None) -> MatchingContext:
        """An encoding regrouped for the groups of visible bool [B, M / G] (a batch-wide or absent mask:
        one group)."""
        groups = 1 if visible is None else visibility_groups(visible, self._entries(encoded))
        if isinstance(groups, int) and encoded.shared.prototypes.shape[0] == groups:
            return encoded

        def regroup(values: tf.Tensor) -> tf.Tensor:
            if self.pseudo_input is not None:
                pseudo, values = tf.split(values, [1, -1], axis=1)
            values = split_groups(merge_groups(values, 1), groups, 1)
            if self.pseudo_input is None:
                return values
            return tf.concat([tf.broadcast_to(pseudo[:1], tf.concat([tf.shape(values)[:1], tf.shape(pseudo)[1:]], 0)),
                              values], axis=1)

        return tf.nest.map_structure(regroup, encoded)

    def _entries(self, encoded: MatchingContext) -> int | tf.Tensor:
        """How many of the caller's entries an encoding holds, over all its groups."""
        groups, size = encoded.shared.prototypes.shape[:2]
        if groups is None or size is None:
            shape = tf.shape(encoded.shared.prototypes)
            groups, size = shape[0], shape[1]
        return groups * (size - (self.pseudo_input is not None))

    def _visible(self, visible: tf.Tensor | None) -> tf.Tensor | None:
        """visible [B, M] over the caller's entries (of a target's group) -> [B, M'] over the encoded
        ones (the pseudo-input is visible to every target)."""
        if visible is None or self.pseudo_input is None:
            return visible
        return tf.concat([tf.ones_like(visible[:, :1]), visible], axis=1)

    def _context_weights(self, weights: tf.Tensor) -> tf.Tensor:
        """Attention weights [..., M'] -> the caller's entries' share [..., M]."""
        return weights if self.pseudo_input is None else weights[..., 1:]

    def z_prior(
        self, encoded: MatchingContext, visible: tf.Tensor | None, batch: int | tf.Tensor
    ) -> tfd.MultivariateNormalDiag:
        """p(z | X): batch [B], event [Z], for `batch` = B targets (visible [B, M'] or None)."""
        no_inputs = tf.zeros([batch, 0])
        read, state, _ = self.prior_controller.read(self.prior_query, no_inputs, encoded.prior, visible)
        return nets.diag_gaussian(self.prior_z(tf.concat([read, state], axis=-1)))

    def z_posterior(
        self, x_features: tf.Tensor, encoded: MatchingContext, visible: tf.Tensor | None
    ) -> tfd.MultivariateNormalDiag:
        """q(z | x, X) for target features [B, F]: batch [B], event [Z]."""
        read, state, _ = self.controller.read(self.recognition_query, x_features, encoded.shared, visible)
        return nets.diag_gaussian(self.posterior_z(tf.concat([x_features, read, state], axis=-1)))

    def likelihood(
        self, z: tf.Tensor, encoded: MatchingContext, visible: tf.Tensor | None
    ) -> tuple[tfd.Independent, tf.Tensor]:
        """(p(x | z, X) for z [..., B, Z]: batch [..., B], event [S, S, 1]; the generator's last
        attention weights [..., B, M'])."""
        read, state, weights = self.controller.read(self.generator_query, z, encoded.shared, visible)
        code = nets.flatten_leading(tf.concat([z, read, state], axis=-1), 1)
        logits = self.decoder(code)
        return nets.bernoulli_image(nets.unflatten_samples(logits, tf.shape(z)[:-1])), weights

    def log_weights(self, x, encoded, num_samples, seed, visible=None) -> LogWeights:
        x_features = tf.cast(self.encoder(x), tf.float32)
        return self._log_weights(x, x_features, self._in_groups(encoded, visible), num_samples, seed, visible)

    def log_weights_of_context(self, context, num_samples, seed, visible=None) -> LogWeights:
        """Every context image is a target too: psi runs once over them."""
        prototypes = self._prototypes(context)
        groups = 1 if visible is None else visibility_groups(visible, context.shape[0] or tf.shape(context)[0])
        return self._log_weights(context, prototypes, self._encode(prototypes, groups), num_samples, seed, visible)

    def _log_weights(
        self,
        x: tf.Tensor,
        x_features: tf.Tensor,
        encoded: MatchingContext,
        num_samples: int | tf.Tensor,
        seed: tf.Tensor,
        visible: tf.Tensor | None,
    ) -> LogWeights:
        """The log-weights of targets x [B, S, S, 1] with features [B, F], given a context encoded in
        the groups of `visible`."""
        visible = self._visible(visible)
        q_z = self.z_posterior(x_features, encoded, visible)
        p_z = self.z_prior(encoded, visible, tf.shape(x)[0])
        record = continuous_latent_log_weights(x, q_z, p_z, lambda z: self.likelihood(z, encoded, visible),
                                               num_samples, seed)
        return record._replace(
            diagnostics={**record.diagnostics, "entropy_attention": attention_entropy(record.reads)},
            reads=self._context_weights(record.reads),
        )

    def sample(self, encoded, num_samples, seed) -> dict[str, tf.Tensor]:
        """Draws from p(x | X): {"images": float32 [N, S, S, 1]}."""
        z = self.z_prior(encoded, None, 1).sample(num_samples, seed=seed)[:, 0]  # [N, Z]
        return {"images": self.likelihood(z, encoded, None)[0].mean()}

    def attention(self, x, encoded) -> tf.Tensor:
        """The generator's last attention weights at the mean of q(z | x, X), over the caller's
        entries: [B, M] (rows sum to one less the pseudo-input's share)."""
        x_features = tf.cast(self.encoder(x), tf.float32)
        z = self.z_posterior(x_features, encoded, None).mean()
        return self._context_weights(self.likelihood(z, encoded, None)[1])

    def entry_posterior(self, x, encoded) -> tf.Tensor:
        """The attention over the caller's entries, renormalised without the pseudo-input: [B, M]
        (all zero in the rare row where the pseudo-input takes the whole mass)."""
        weights = self.attention(x, encoded)
        return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=-1, keepdims=True))


class ResidualGMN(GenerativeMatchingNetwork):
    """GMN with the residual nets of appendix C (28x28 images, 288-d prototypes)."""

    @classmethod
    def check_config(cls, config: ModelConfig, image_size: int) -> None:
        super().check_config(config, image_size)
        size = nets.GMN_IMAGE_SIZE
        if image_size != size:
            raise UserInputError(
                f"--model_arch=resnet (GMN's nets) takes {size}x{size} images: pass --image_size={size}, got "
                f"{image_size}"
            )

    def __init__(self, config: ModelConfig, image_size: int, **kwargs):
        super().__init__(
            config, image_size, nets.ResidualEncoder(name="encoder"), nets.ResidualDecoder(name="decoder"), **kwargs
        )


class ConvGMN(GenerativeMatchingNetwork):
    """GMN with VMA's conv pyramid as psi (projected to 288-d) and VMA's upscaler as the decoder."""

    def __init__(self, config: ModelConfig, image_size: int, **kwargs):
        super().__init__(
            config,
            image_size,
            nets.Embedder(config.conv_channels, PROTOTYPE_DIM, name="encoder"),
            nets.Upscaler(config.conv_channels, image_size, memory_inputs=False, name="decoder"),
            **kwargs,
        )
