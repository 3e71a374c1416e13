"""Importance-sampled bounds on log p(x | C) with K up to thousands, in nats, for any model:
objectives.streamed_sums over test batches, as per-target estimates."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from vma_tf.config import EvalConfig
from vma_tf.models import GenerativeModel, context_for
from vma_tf.objectives import streamed_sums


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


class BoundEvaluator:
    """Evaluates K-sample bounds of one model: given a memory (encoded once per call), or given a
    memory encoded once by `encode` and queried many times by `bound`."""

    def __init__(self, model: GenerativeModel, pairs_per_call: int = EvalConfig.pairs_per_call):
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
