"""The multi-sample bound and the VIMCO surrogate (Mnih & Rezende 2016), all in nats.

`bound_loss` is the one training objective of every model: which estimator it uses follows
from the model's LogWeights alone. `streamed_sums` is the same bound with K up to thousands,

    log p(x | C) >= L_K = log (1/K) sum_k w_k,   latents_k ~ q(latents | x, C),

its K samples drawn in chunks and combined with a streaming log-sum-exp, so that memory is set
by the chunk, not by K. Chunk i draws with the seed fold_in(seed, i): for a given seed the
estimate is deterministic, and changing the chunk size changes which samples are drawn, not
what is estimated.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf.models.base import GenerativeModel, LogWeights

VIMCO_BASELINES = ("geometric", "arithmetic")


def multi_sample_bound(log_weights: tf.Tensor) -> tf.Tensor:
    """L = log (1/K) sum_k w_k for log_weights [K, B]: a lower bound on log p(x), [B]."""
    num_samples = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(num_samples)


def vimco_learning_signal(log_weights: tf.Tensor, baseline: str = "geometric") -> tuple[tf.Tensor, tf.Tensor]:
    """Returns (L [B], the per-sample learning signals s_k = L - L_{-k} [K, B]).

    "geometric": L_{-k} replaces w_k by the geometric mean of the other K-1 weights
    (VIMCO as published). "arithmetic": L_{-k} = log (1/(K-1)) sum_{j != k} w_j
    (VMA paper eq. 8). Both need K >= 2.
    """
    if baseline == "geometric":
        log_leave_one_out, bound = tfp.stats.log_soomean_exp(log_weights, axis=0)
    elif baseline == "arithmetic":
        log_leave_one_out, bound = tfp.stats.log_loomean_exp(log_weights, axis=0)
    else:
        raise ValueError(f"unknown VIMCO baseline {baseline!r}; use one of {VIMCO_BASELINES}")
    return bound, bound - log_leave_one_out


def vimco_surrogate_loss(
    log_weights: tf.Tensor, log_posterior_a: tf.Tensor, baseline: str = "geometric"
) -> tuple[tf.Tensor, tf.Tensor]:
    """The loss whose gradient is VIMCO's estimate of -grad L; returns (loss [], L [B]).

    log_weights [K, B] are differentiable in every parameter (z is reparameterised);
    log_posterior_a [K, B] = log q(a_k|x) of addresses sampled outside the gradient.
        loss = -mean_B [ L + sum_k stop_gradient(s_k) * log q(a_k|x) ]
    The -omega term of paper eq. (8) comes from L's own dependence on log q(a_k|x).
    """
    bound, signal = vimco_learning_signal(log_weights, baseline)
    score = tf.reduce_sum(tf.stop_gradient(signal) * log_posterior_a, axis=0)
    return -tf.reduce_mean(bound + score), bound


def bound_loss(record: LogWeights, vimco_baseline: str = "geometric") -> tuple[tf.Tensor, tf.Tensor]:
    """The loss to minimise for K importance samples of B targets; returns (loss [], L [B]).

    VIMCO when the record has a score term (latents sampled without reparameterisation), the
    plain K-sample (IWAE) bound -mean_B L otherwise, which any K >= 1 serves.
    """
    if record.score_log_prob is None:
        bound = multi_sample_bound(record.log_weights)
        return -tf.reduce_mean(bound), bound
    return vimco_surrogate_loss(record.log_weights, record.score_log_prob, vimco_baseline)


def l2_penalty(variables: list[tf.Variable], coefficient: float) -> tf.Tensor:
    """(coefficient / 2) * the sum of the squares of every entry of `variables`: []."""
    return 0.5 * coefficient * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])


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
