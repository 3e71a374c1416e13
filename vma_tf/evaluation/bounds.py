"""Importance-sampled bounds on log p(x | C) with K up to thousands, in nats, for any model.

    log p(x | C) >= L_K = log (1/K) sum_k w_k,   latents_k ~ q(latents | x, C)

The K samples are drawn in chunks and combined with a streaming log-sum-exp, so memory
is set by the chunk, not by K. Chunk i draws with the seed fold_in(seed, i): for a given
seed the estimate is deterministic, and changing the chunk size changes which samples
are drawn, not what is estimated.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from vma_tf.models import GenerativeModel, context_for

# Sample-target pairs per model call: sets the peak memory of evaluation (~0.5 GB at 26x26
# with 48 maps) independently of K and of the number of targets.
DEFAULT_PAIRS_PER_CALL = 4000


@dataclasses.dataclass(frozen=True)
class BoundEstimate:
    """Per-target estimates, each float64 [B] in nats.

    nll: -L_K, the K-sample bound on -log p(x|C). elbo: -(1/K) sum_k log w_k, the K = 1 bound
    averaged over the K samples. recon: -E_q log p(x|latents, C). diagnostics: the model's
    diagnostics (kl_a, kl_z, ...) averaged over the K samples.
    """

    nll: np.ndarray
    elbo: np.ndarray
    recon: np.ndarray
    diagnostics: dict[str, np.ndarray]


def streamed_sums(
    model: GenerativeModel,
    x: tf.Tensor,
    encoded,
    num_samples: tf.Tensor | int,
    pairs_per_call: int,
    seed: tf.Tensor,
    visible: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Draws K = num_samples samples for targets x [B, H, W, 1] (reading the entries visible bool
    [B, M] shows, None: all) in chunks, inside the graph.

    Chunks hold max(1, pairs_per_call // B) samples (the last one the rest); chunk i draws with
    fold_in(seed, i). Returns float32 [B] tensors: log_sum_w = log sum_k w_k, sum_log_w (the sum
    over k of log w_k), sum_log_likelihood, and the sum over k of each of the model's diagnostics.
    """
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    tf.debugging.assert_positive(num_samples, message="the number of importance samples must be positive")
    batch = tf.shape(x)[0]
    chunk = tf.clip_by_value(pairs_per_call // tf.maximum(batch, 1), 1, num_samples)
    zeros = tf.zeros([batch])
    names = model.DIAGNOSTICS

    def add_chunk(index, log_sum_w, sum_log_w, sum_log_likelihood, *sum_diagnostics):
        size = tf.minimum(chunk, num_samples - index * chunk)
        record = model.log_weights(x, encoded, size, tf.random.experimental.stateless_fold_in(seed, index), visible)
        log_weights = record.log_weights
        return (
            index + 1,
            tf.reduce_logsumexp(tf.stack([log_sum_w, tf.reduce_logsumexp(log_weights, axis=0)]), axis=0),
            sum_log_w + tf.reduce_sum(log_weights, axis=0),
            sum_log_likelihood + tf.reduce_sum(record.log_likelihood, axis=0),
            *(total + tf.reduce_sum(record.diagnostics[name], axis=0) for total, name in zip(sum_diagnostics, names)),
        )

    _, log_sum_w, sum_log_w, sum_log_likelihood, *sum_diagnostics = tf.while_loop(
        lambda index, *_: index * chunk < num_samples,
        add_chunk,
        (tf.constant(0), zeros - float("inf"), zeros, zeros, *(zeros for _ in names)),
        shape_invariants=(tf.TensorShape([]),) + (tf.TensorShape([None]),) * (3 + len(names)),
        parallel_iterations=1,  # one chunk in flight: peak memory is one chunk's, whatever K is
    )
    return {
        "log_sum_w": log_sum_w,
        "sum_log_w": sum_log_w,
        "sum_log_likelihood": sum_log_likelihood,
        **{f"sum_{name}": total for name, total in zip(names, sum_diagnostics)},
    }


class BoundEvaluator:
    """Evaluates K-sample bounds of one model: given a memory (encoded once per call), or given a
    memory encoded once by `encode` and queried many times by `bound`."""

    def __init__(self, model: GenerativeModel, pairs_per_call: int = DEFAULT_PAIRS_PER_CALL):
        self.model = model
        self.pairs_per_call = pairs_per_call
        self._sums = tf.function(self._encode_and_sum, reduce_retracing=True)
        self._sums_encoded = tf.function(self._sum, reduce_retracing=True)
        self._encode = tf.function(model.encode_context, reduce_retracing=True)

    def _sum(self, x, encoded, num_samples, seed, visible):
        return streamed_sums(self.model, x, encoded, num_samples, self.pairs_per_call, seed, visible)

    def _encode_and_sum(self, x, context, num_samples, seed, visible):
        return self._sum(x, self.model.encode_context(context), num_samples, seed, visible)

    def __call__(
        self,
        x: tf.Tensor,
        memory: tf.Tensor | None,
        num_samples: int,
        seed: tf.Tensor,
        visible: tf.Tensor | None = None,
    ) -> BoundEstimate:
        """Bounds for targets x [B, H, W, 1] given the batch's memory [M, H, W, 1] (read only by a
        model that reads a context; each target reads the entries visible bool [B, M] shows, None:
        all), with stateless seed int32 [2]."""
        sums = self._sums(x, context_for(self.model, memory), tf.constant(num_samples, tf.int32), seed, visible)
        return self._estimate(sums, num_samples)

    def encode(self, memory: tf.Tensor | None):
        """The model's encoding of memory [M, H, W, 1], for many `bound` calls."""
        return self._encode(context_for(self.model, memory))

    def bound(
        self, x: tf.Tensor, encoded, num_samples: int, seed: tf.Tensor, visible: tf.Tensor | None = None
    ) -> BoundEstimate:
        """Like calling the evaluator, with the memory already encoded by `encode`."""
        return self._estimate(
            self._sums_encoded(x, encoded, tf.constant(num_samples, tf.int32), seed, visible), num_samples
        )

    def _estimate(self, sums: dict[str, tf.Tensor], num_samples: int) -> BoundEstimate:
        sums = {name: value.numpy().astype(np.float64) for name, value in sums.items()}
        return BoundEstimate(
            nll=-(sums["log_sum_w"] - math.log(num_samples)),
            elbo=-sums["sum_log_w"] / num_samples,
            recon=-sums["sum_log_likelihood"] / num_samples,
            diagnostics={name: sums[f"sum_{name}"] / num_samples for name in self.model.DIAGNOSTICS},
        )
