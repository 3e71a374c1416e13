"""The model interface: what training, evaluation and export may ask of any generative model.

Every model is a latent-variable model of an image x, possibly given a context C (a memory of
images that the caller supplies):

    encode_context(C) -> encoded          (None when the model reads no context)
    log_weights(x, encoded, K, seed, visible=None)
                                         -> LogWeights: K importance samples per target
    sample(encoded, N, seed)             -> {"images": [N, H, W, 1], ...}

`visible` (None: every target reads every entry) says which context entries each target may read:
a sequence x_1..x_T scores every x_t given x_<t in one call, with the sequence as the context and
a causal mask. It comes in two shapes:
- batch-wide, bool [B, M]: target b may read entry m where visible[b, m];
- grouped, bool [B, M / G]: the context is G independent groups of M / G consecutive entries,
  the targets G groups of B / G consecutive targets, and a target reads only entries of its own
  group (those its row shows). A batch of S sequences is grouped, G = S, so that a target's
  attention costs the entries of its own sequence rather than the whole batch's.
The batch-wide shape is the grouped one with G = 1; `vma_tf.visibility` holds the mask and group
math (`visibility_groups` tells G).

The objective follows from the record alone: VIMCO when it has a score term (latents sampled
without reparameterisation), the plain K-sample bound otherwise.

Capabilities beyond that are mixins that consumers test for, never model names:
- `MemoryReader`: the model reads individual memory entries and can say which entries explain
  x (`entry_posterior`), which is what few-shot classification and the addressing figures use.
- `AddressedMemory` (a MemoryReader): a discrete address a with q(a|x), p(a) and
  `read(encoded, addresses)`, which computes per-entry decoder features only for the drawn
  addresses; its encoding is a `CompactMemory` (embeddings and the entries).
- `AttendingMemory` (a MemoryReader): a soft read with attention weights.
- `learned_memory`: a memory the model trains itself (a variable), or None.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf.config import ModelConfig

tfd = tfp.distributions


class LogWeights(NamedTuple):
    """K importance samples (latents ~ q(latents | x, C)) of B targets, in nats.

    log_weights [K, B]: log p(x, latents | C) - log q(latents | x, C).
    log_likelihood [K, B]: log p(x | latents, C).
    score_log_prob [K, B], or None when every latent is reparameterised: log q of the latents
      sampled without reparameterisation (VMA: log q(a_k|x)); VIMCO's score term.
    diagnostics: {name: [K, B]} per-sample quantities in nats that metrics, TensorBoard and
      reports average (kl_z, kl_a, entropy_a, ...); exact per-target values are broadcast over K.
      The names are the model's DIAGNOSTICS.
    reads: which memory entries each sample read: int32 addresses [K, B] (a hard read), float32
      weights [K, B, M] (a soft read; they sum to one over M, or less when the model also reads a
      pseudo-input of its own; over the M / G entries of the target's group under a grouped
      `visible`), or None without a memory.
    likelihood: p(x | latents, C), batch [K, B], event [H, W, 1].
    """

    log_weights: tf.Tensor
    log_likelihood: tf.Tensor
    score_log_prob: tf.Tensor | None
    diagnostics: dict[str, tf.Tensor]
    reads: tf.Tensor | None
    likelihood: tfd.Distribution


class GenerativeModel(keras.Model, metaclass=abc.ABCMeta):
    """The interface every registered model implements. Subclasses set DIAGNOSTICS and
    `reads_context`, and implement encode_context, log_weights and sample."""

    DIAGNOSTICS: tuple[str, ...] = ()
    # A memory the model trains itself, [M, ...]; None for models without one.
    learned_memory: tf.Variable | None = None

    @classmethod
    def check_config(cls, config: ModelConfig, image_size: int) -> None:
        """Raises UserInputError for settings this model cannot be built with for images of
        image_size x image_size; reads no data. Each class checks the settings it reads (and calls
        its parent's check)."""

    @property
    @abc.abstractmethod
    def reads_context(self) -> bool:
        """Whether encode_context takes a context from the caller (otherwise it takes None)."""
        raise NotImplementedError

    @property
    def memory_from_data(self) -> int:
        """How many training images a fresh run's learned memory starts from (0: none)."""
        return 0

    def start_memory_from(self, images: tf.Tensor, seed: tf.Tensor) -> None:
        """Sets the learned memory from images float32 [memory_from_data, S, S, 1]."""
        raise NotImplementedError

    @property
    def min_context_size(self) -> int:
        """The fewest context entries a target must see: 1 for a model that reads its context and
        has nothing else to read (a read from an empty set is undefined), else 0."""
        return 1 if self.reads_context else 0

    @abc.abstractmethod
    def encode_context(self, context: tf.Tensor | None) -> Any:
        """Everything the model needs of a context [M, H, W, 1] (None: the model reads none), computed
        once so that many targets, chunks of samples and draws can share it."""
        raise NotImplementedError

    @abc.abstractmethod
    def log_weights(
        self,
        x: tf.Tensor,
        encoded: Any,
        num_samples: int | tf.Tensor,
        seed: tf.Tensor,
        visible: tf.Tensor | None = None,
    ) -> LogWeights:
        """K = num_samples importance samples for targets x [B, H, W, 1]; seed int32 [2] (stateless);
        visible bool [B, M] or None (every target reads every entry). A model without a context
        ignores `visible`."""
        raise NotImplementedError

    def log_weights_in_context(
        self,
        x: tf.Tensor,
        context: tf.Tensor | None,
        num_samples: int,
        seed: tf.Tensor,
        visible: tf.Tensor | None = None,
    ) -> LogWeights:
        """`log_weights` given the raw context: the training path, which a model may override to
        share work between targets and context."""
        return self.log_weights(x, self.encode_context(context), num_samples, seed, visible)

    def log_weights_of_context(
        self,
        context: tf.Tensor,
        num_samples: int,
        seed: tf.Tensor,
        visible: tf.Tensor | None = None,
    ) -> LogWeights:
        """`log_weights_in_context` when the targets are the context [M, H, W, 1] itself (a batch of
        sequences, each image read by the later ones): a model may run its nets once over them."""
        return self.log_weights_in_context(context, context_for(self, context), num_samples, seed, visible)

    @abc.abstractmethod
    def sample(self, encoded: Any, num_samples: int | tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Draws from p(x | C): {"images": Bernoulli means float32 [N, H, W, 1]} plus what the model
        can say of each sample (an addressed model: "addresses" int32 [N])."""
        raise NotImplementedError


class MemoryReader(abc.ABC):
    """A model that reads individual entries of a memory."""

    @abc.abstractmethod
    def entry_posterior(self, x: tf.Tensor, encoded: Any) -> tf.Tensor:
        """How much each memory entry explains each target: float32 [B, M], rows summing to one."""
        raise NotImplementedError


class CompactMemory(NamedTuple):
    """A memory as addressing needs it: embeddings float32 [M, E] and the entries [M, ...]
    themselves (images or vectors), from which a read computes the drawn entries' features."""

    embeddings: tf.Tensor
    entries: tf.Tensor


class AddressedMemory(MemoryReader):
    """A discrete address a over the memory entries (VMA). Its `encode_context` returns a
    CompactMemory, so an encoding costs E floats per entry and can be kept for many queries."""

    @abc.abstractmethod
    def address_posterior(self, x: tf.Tensor, encoded: Any) -> tfd.Categorical:
        """q(a | x, M) for x [B, H, W, 1]: batch [B], event [], values in range(M)."""
        raise NotImplementedError

    @abc.abstractmethod
    def address_prior(self, encoded: Any) -> tfd.Categorical:
        """p(a | M): batch [], event []."""
        raise NotImplementedError

    @abc.abstractmethod
    def read(self, encoded: Any, addresses: tf.Tensor) -> Any:
        """The decoder's per-entry features of the entries at addresses [...], leading shape [...]."""
        raise NotImplementedError

    @abc.abstractmethod
    def sample_at(self, encoded: Any, addresses: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Draws from p(x | m_a) at given addresses [...]: Bernoulli means float32 [..., H, W, 1]."""
        raise NotImplementedError

    def entry_posterior(self, x: tf.Tensor, encoded: Any) -> tf.Tensor:
        return self.address_posterior(x, encoded).probs_parameter()


class AttendingMemory(MemoryReader):
    """A soft read: attention weights over the memory entries."""

    @abc.abstractmethod
    def attention(self, x: tf.Tensor, encoded: Any) -> tf.Tensor:
        """The attention weights of the read for targets x [B, H, W, 1] at the mean of q(z|x):
        float32 [B, M], rows summing to one."""
        raise NotImplementedError

    def entry_posterior(self, x: tf.Tensor, encoded: Any) -> tf.Tensor:
        return self.attention(x, encoded)


def context_for(model: GenerativeModel, memory: tf.Tensor | None) -> tf.Tensor | None:
    """What to pass as the context of `model` when a batch comes with `memory` [M, H, W, 1] (or
    None): the memory itself if the model reads one, else None."""
    return memory if model.reads_context else None


def read_weights(reads: tf.Tensor, memory_size: int | tf.Tensor) -> tf.Tensor:
    """A LogWeights' reads as weights float32 [K, B, M]: one-hot for hard reads (addresses)."""
    if reads.dtype.is_integer:
        return tf.one_hot(reads, memory_size, dtype=tf.float32)
    return reads


def attention_entropy(weights: tf.Tensor) -> tf.Tensor:
    """The entropy of attention weights [..., M] in nats: [...]."""
    return -tf.reduce_sum(weights * tf.math.log(weights + 1e-30), axis=-1)


def broadcast_to_samples(per_target: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """An exact per-target value [B] as a per-sample diagnostic shaped like `like` [K, B]."""
    return tf.broadcast_to(per_target, tf.shape(like))


def continuous_latent_log_weights(
    x: tf.Tensor, q_z: tfd.Distribution, p_z: tfd.Distribution, likelihood_of, num_samples, seed: tf.Tensor
) -> LogWeights:
    """The bound of a model whose one latent is z: K = num_samples reparameterised draws z [K, B, Z]
    from q_z, weighed by log p(x | z) + log p(z) - log q(z | x) for targets x [B, S, S, 1].
    `likelihood_of(z)` gives (p(x | z), the reads or None); the diagnostics hold KL(q_z || p_z)."""
    z = q_z.sample(num_samples, seed=seed)
    likelihood, reads = likelihood_of(z)
    log_likelihood = likelihood.log_prob(x)
    log_weights = log_likelihood + p_z.log_prob(z) - q_z.log_prob(z)
    return LogWeights(
        log_weights=log_weights,
        log_likelihood=log_likelihood,
        score_log_prob=None,
        diagnostics={"kl_z": broadcast_to_samples(tfd.kl_divergence(q_z, p_z), log_weights)},
        reads=reads,
        likelihood=likelihood,
    )
