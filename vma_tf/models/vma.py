"""Variational Memory Addressing (Bornschein et al. 2017, section 2): the part every architecture shares.

    p(x | M) = sum_a p(a | M) ∫ p(z | m_a) p(x | z, m_a) dz
    q(a, z | x, M) = q(a | x, M) q(z | x, m_a)

Subclasses supply the nets (conv.py: section 4.2; mlp.py: section 4.1) through a few hooks.
Two encodings of a memory serve the two regimes:
- training (`log_weights_in_context`): the nets run once over targets and memory together and
  every entry's decoder features are kept (an *encoding*); `read(encoded, addresses)` gathers
  them at the K x B sampled addresses, so per-entry work is never repeated per (sample, target).
- everywhere else (`encode_context`): a `CompactMemory` keeps of each entry only what addressing
  needs, its embedding (E floats), computed in chunks of the memory; a read computes the
  decoder features of the distinct drawn entries only. Memory and time are then linear in |M|
  with a small constant, so a test-time memory can hold millions of entries.

The memory is either passed in (few-shot and recall: images [M, S, S, 1]) or, with
`config.learned_memory_size` > 0, the model's own trainable `learned_memory`; such a model reads no
context and takes None wherever a context goes.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import addressing, nets
from vma_tf.config import MEMORY_INITS, ModelConfig
from vma_tf.errors import UserInputError
from vma_tf.models.base import AddressedMemory, CompactMemory, GenerativeModel, LogWeights, broadcast_to_samples

tfd = tfp.distributions


# Memory entries embedded per chunk by `encode_context`: bounds the embedder's activations.
EMBEDDING_CHUNK = 1024

# p(a): the similarity to a learned query, or flat.
PRIORS = ("learned", "flat")

# The standard deviation of random learned vector entries at the start (--memory_init=random).
VECTOR_ENTRY_SCALE = 0.1


def gather_entries(encoded: NamedTuple, addresses: tf.Tensor) -> NamedTuple:
    """Every per-entry field of an encoding, gathered at addresses [...]: leading shape [...]
    (the embeddings, which only addressing needs, stay as they are)."""
    return encoded._replace(**{
        name: tf.nest.map_structure(lambda entries: tf.gather(entries, addresses), getattr(encoded, name))
        for name in encoded._fields if name != "embeddings"
    })


class RandomImages(keras.initializers.Initializer):
    """A learned memory's initial images [M, S, S, 1]: uniform noise in [0, 1] on a coarse grid of
    about S/4 x S/4 cells, bilinearly resized to S x S: smooth random blobs.

    Per-pixel noise fails (issue 16): a conv embedder averages independent pixels away, so every
    entry's embedding points the same way (mean pairwise cosine 1.00 by step ~700) and q(a|x)
    cannot tell the entries apart. The entries barely move meanwhile (Adam changes them by
    ~3e-5 per step), so that start persists: on 28x28 Omniglot the memory stayed unused for
    1,200 steps. Random blobs differ at the scale the pyramid sees (cosine 0.3-0.6); the memory
    is in use from step ~300.
    """

    def __call__(self, shape, dtype=None):
        count, size = shape[0], shape[1]
        cells = max(1, round(size / 4))
        coarse = keras.initializers.RandomUniform(0.0, 1.0)((count, cells, cells, 1), dtype=dtype)
        return tf.cast(tf.image.resize(coarse, (size, size)), dtype or tf.float32)


class VariationalMemoryAddressing(GenerativeModel, AddressedMemory):
    """The VMA math: addressing, the log-weights and sampling. Subclasses implement `embed_memory`,
    `entry_features`, `target_features`, `z_posterior`, `z_prior`, `likelihood` (and may override
    `features`)."""

    # address_information: I(x; a) over the batch's targets, H[mean_x q(a|x)] - mean_x H[q(a|x)]
    # (at most log B). KL(q(a|x)||p(a)) alone can read high while the memory is unused: q(a|x)
    # that sends every target to one entry under a flat p(a) costs log |M| and carries nothing.
    DIAGNOSTICS = ("kl_a", "kl_z", "entropy_a", "address_information")

    def __init__(self, config: ModelConfig, image_size: int, **kwargs):
        super().__init__(name="vma", **kwargs)
        self.model_config, self.image_size = config, image_size
        self.prior_query = (
            self.add_weight(shape=(config.embed_dim,), initializer="random_normal", name="prior_query")
            if config.prior == "learned"
            else None
        )
        if config.learned_memory_size:
            entry_shape = (config.memory_dim,) if config.memory_dim else (image_size, image_size, 1)
            # --memory_init=random's start; with "data" the trainer replaces it by training images
            # (start_memory_from) before a fresh run's first step. Random vectors start as
            # N(0, 0.1^2) (issue 16). At N(0, 1) the entries differ so much through the decoder's
            # paths from m_a (VIMCO's log-weights spread 7.9 nats over the K samples at step 1) that
            # q(a|x) sends every target to the one best entry within 100 steps, and p(a) then
            # follows: KL(q||p) -> 0, the memory lost. The band is narrow and moves with the seed and
            # the CPU (issue 31): at 0.3 two entries win, at 0.05 the entries are too alike.
            initializer = (
                keras.initializers.RandomNormal(stddev=VECTOR_ENTRY_SCALE) if config.memory_dim else RandomImages()
            )
            self.learned_memory = self.add_weight(
                shape=(config.learned_memory_size, *entry_shape), initializer=initializer, name="learned_memory"
            )

    @classmethod
    def check_config(cls, config: ModelConfig, image_size: int) -> None:
        super().check_config(config, image_size)
        if config.prior not in PRIORS:
            raise UserInputError(f"--prior must be one of {PRIORS}, got {config.prior!r}")
        if config.memory_init not in MEMORY_INITS:
            raise UserInputError(f"--memory_init must be one of {MEMORY_INITS}, got {config.memory_init!r}")
        if min(config.memory_dim, config.learned_memory_size) < 0:
            raise UserInputError(f"--memory_dim and --memory_size must not be negative, got {config.memory_dim} and "
                                 f"{config.learned_memory_size}")
        if config.memory_dim and not config.learned_memory_size:
            raise UserInputError("--memory_dim (vector memory entries) needs --task=learned; 0 means image entries")

    @property
    def memory_from_data(self) -> int:
        learned = self.learned_memory is not None and self.model_config.memory_init == "data"
        return self.learned_memory.shape[0] if learned else 0

    def start_memory_from(self, images: tf.Tensor, seed: tf.Tensor) -> None:
        """Image entries become the images; vector entries a fixed random projection of them,
        standardised to mean 0 and variance 1 over all values, so that entries differ as the images
        do. (At the random vectors' scale, 0.1, seeds 1 and 2 sent every target to one entry by
        step 600, as random N(0, 1) vectors do: issue 31.)"""
        if len(self.learned_memory.shape) == 4:
            self.learned_memory.assign(images)
            return
        pixels = tf.reshape(images, [images.shape[0], -1])
        projected = pixels @ tf.random.stateless_normal([pixels.shape[1], self.learned_memory.shape[1]], seed)
        self.learned_memory.assign((projected - tf.reduce_mean(projected)) / tf.math.reduce_std(projected))

    # -- hooks -------------------------------------------------------------------------------

    def features(self, x: tf.Tensor, memory: tf.Tensor) -> tuple[Any, tf.Tensor, Any]:
        """(the targets' features, their query embeddings [B, E], the memory encoding) for
        x [B, S, S, 1] and memory [M, ...]; may share work between targets and memory."""
        x_features, query_embeddings = self.target_features(x)
        return x_features, query_embeddings, self.encode(memory)

    def context_features(self, memory: tf.Tensor) -> tuple[Any, tf.Tensor, Any]:
        """`features(memory, memory)`: the entries are the targets too."""
        return self.features(memory, memory)

    @abc.abstractmethod
    def embed_memory(self, memory: tf.Tensor) -> tf.Tensor:
        """The addressing embeddings h(m_a) of memory [M, ...]: float32 [M, E]."""
        raise NotImplementedError

    @abc.abstractmethod
    def entry_features(self, memory: tf.Tensor) -> NamedTuple:
        """Every per-entry decoder feature of memory [M, ...]: an encoding whose `embeddings` is None."""
        raise NotImplementedError

    def encode(self, memory: tf.Tensor) -> NamedTuple:
        """The full encoding of memory [M, ...]: its entry features and `embeddings` [M, E]."""
        return self.entry_features(memory)._replace(embeddings=self.embed_memory(memory))

    @abc.abstractmethod
    def target_features(self, x: tf.Tensor) -> tuple[Any, tf.Tensor]:
        """(what q(z|x, m_a) needs of x [B, S, S, 1], the query embeddings h_q(x) [B, E])."""
        raise NotImplementedError

    @abc.abstractmethod
    def z_posterior(self, x_features: Any, entries: Any) -> tfd.MultivariateNormalDiag:
        """q(z | x, m_a) for the entries read at addresses [K, B]: batch [K, B], event [Z]."""
        raise NotImplementedError

    @abc.abstractmethod
    def z_prior(self, entries: Any) -> tfd.MultivariateNormalDiag:
        """p(z | m_a) for the entries read at addresses [...]: batch [...], event [Z]."""
        raise NotImplementedError

    @abc.abstractmethod
    def likelihood(self, z: tf.Tensor, entries: Any) -> tfd.Independent:
        """p(x | z, m_a) for z [..., Z] and the entries read at addresses [...]: batch [...], event [S, S, 1]."""
        raise NotImplementedError

    # -- the interface -----------------------------------------------------------------------

    @property
    def reads_context(self) -> bool:
        return self.learned_memory is None

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

    def encode_context(self, context: tf.Tensor | None) -> CompactMemory:
        """Encodes memory [M, ...] (None: the learned memory) for sampling or repeated queries:
        its embeddings, computed EMBEDDING_CHUNK entries at a time, and the entries themselves."""
        memory = self.memory_or_learned(context)
        return CompactMemory(nets.map_chunks(self.embed_memory, memory, EMBEDDING_CHUNK), memory)

    def read(self, encoded: NamedTuple, addresses: tf.Tensor) -> NamedTuple:
        """The decoder features of the entries at addresses [...]: gathered from a full encoding, or
        computed from a CompactMemory for each distinct address once."""
        if isinstance(encoded, CompactMemory):
            drawn, position = tf.unique(tf.reshape(addresses, [-1]))
            features = self.entry_features(tf.gather(encoded.entries, drawn))
            return gather_entries(features, tf.reshape(position, tf.shape(addresses)))
        return gather_entries(encoded, addresses)

    def address_prior(self, encoded: Any) -> tfd.Categorical:
        return addressing.address_prior(encoded.embeddings, self.prior_query)

    def address_posterior(self, x: tf.Tensor, encoded: Any) -> tfd.Categorical:
        return addressing.address_posterior(encoded.embeddings, self.target_features(x)[1])

    def log_weights_in_context(self, x, context, num_samples, seed, visible=None) -> LogWeights:
        """The training path. With more memory entries than the K x B reads (known statically), every
        entry is embedded but decoder features are computed for the drawn entries only; otherwise
        the nets run once over targets and memory together."""
        memory = self.memory_or_learned(context)
        reads = num_samples * x.shape[0] if isinstance(num_samples, int) and x.shape[0] is not None else None
        if reads is not None and (memory.shape[0] or 0) > reads:
            encoded = CompactMemory(self.embed_memory(memory), memory)
            return self.log_weights(x, encoded, num_samples, seed, visible)
        x_features, query_embeddings, encoded = self.features(x, memory)
        return self._log_weights(x, x_features, query_embeddings, encoded, num_samples, seed, visible)

    def log_weights_of_context(self, context, num_samples, seed, visible=None) -> LogWeights:
        """Every entry is a target too: the nets run once over them."""
        x_features, query_embeddings, encoded = self.context_features(self.memory_or_learned(context))
        return self._log_weights(context, x_features, query_embeddings, encoded, num_samples, seed, visible)

    def log_weights(self, x, encoded, num_samples, seed, visible=None) -> LogWeights:
        x_features, query_embeddings = self.target_features(x)
        return self._log_weights(x, x_features, query_embeddings, encoded, num_samples, seed, visible)

    def _log_weights(
        self,
        x: tf.Tensor,
        x_features: Any,
        query_embeddings: tf.Tensor,
        encoded: Any,
        num_samples: int | tf.Tensor,
        seed: tf.Tensor,
        visible: tf.Tensor | None,
    ) -> LogWeights:
        address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        addressed = addressing.address_terms(
            encoded.embeddings, query_embeddings, self.prior_query, visible, num_samples, address_seed
        )
        entries = self.read(encoded, addressed.addresses)
        q_z = self.z_posterior(x_features, entries)
        p_z = self.z_prior(entries)
        z = q_z.sample(seed=z_seed)  # [K, B, Z], reparameterised
        likelihood = self.likelihood(z, entries)

        log_likelihood = likelihood.log_prob(x)
        log_weights = log_likelihood + p_z.log_prob(z) - q_z.log_prob(z) + addressed.log_prior - addressed.log_posterior
        return LogWeights(
            log_weights=log_weights,
            log_likelihood=log_likelihood,
            score_log_prob=addressed.log_posterior,
            diagnostics={
                "kl_a": broadcast_to_samples(addressed.kl, log_weights),
                "kl_z": tfd.kl_divergence(q_z, p_z),
                "entropy_a": broadcast_to_samples(addressed.entropy, log_weights),
                "address_information": tf.broadcast_to(addressed.information, tf.shape(log_weights)),
            },
            reads=addressed.addresses,
            likelihood=likelihood,
        )

    def sample(self, encoded: Any, num_samples: int | tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Draws from p(x | M): {"images": float32 [N, S, S, 1], "addresses": int32 [N]}."""
        address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        addresses = addressing.sample_addresses(self.address_prior(encoded), num_samples, address_seed)
        return {"images": self.sample_at(encoded, addresses, z_seed), "addresses": addresses}

    def sample_at(self, encoded: Any, addresses: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        entries = self.read(encoded, addresses)
        z = self.z_prior(entries).sample(seed=seed)
        return self.likelihood(z, entries).mean()
