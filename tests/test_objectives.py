"""The multi-sample bound and VIMCO against independent numpy and exact computations."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from vma_tf import objectives


def _numpy_log_mean_exp(values, axis=0):
    peak = values.max(axis=axis, keepdims=True)
    return np.log(np.mean(np.exp(values - peak), axis=axis)) + peak.squeeze(axis)


def test_multi_sample_bound_matches_numpy():
    log_w = np.random.default_rng(0).normal(size=(5, 7)) * 30
    bound = objectives.multi_sample_bound(tf.constant(log_w, tf.float32)).numpy()
    np.testing.assert_allclose(bound, _numpy_log_mean_exp(log_w), rtol=1e-5)


@pytest.mark.parametrize("baseline", ["geometric", "arithmetic"])
def test_vimco_learning_signal_matches_brute_force_leave_one_out(baseline):
    rng = np.random.default_rng(1)
    num_samples, batch = 6, 4
    log_w = rng.normal(size=(num_samples, batch)) * 5 - 100
    expected = np.zeros_like(log_w)
    bound = _numpy_log_mean_exp(log_w)
    for k in range(num_samples):
        others = np.delete(log_w, k, axis=0)
        if baseline == "geometric":
            swapped = log_w.copy()
            swapped[k] = others.mean(axis=0)  # the log of the others' geometric mean
            leave_one_out = _numpy_log_mean_exp(swapped)
        else:
            leave_one_out = _numpy_log_mean_exp(others)
        expected[k] = bound - leave_one_out
    got_bound, signal = objectives.vimco_learning_signal(tf.constant(log_w), baseline)
    np.testing.assert_allclose(got_bound.numpy(), bound, rtol=1e-10)
    np.testing.assert_allclose(signal.numpy(), expected, rtol=1e-8, atol=1e-10)


# A tiny discrete model: q(a) = softmax(phi) over 3 values, fixed log p(x, a).
_LOG_JOINT = np.array([-1.0, -3.0, -0.5])
_PHI = np.array([0.3, -0.2, 0.1])
_K = 3


def _exact_bound_gradient() -> np.ndarray:
    """grad_phi E_{a_1..K ~ q}[log mean_k p(x,a_k)/q(a_k)], by enumerating all 3^K draws."""
    phi = tf.Variable(_PHI)
    with tf.GradientTape() as tape:
        log_q = tf.nn.log_softmax(phi)
        total = tf.constant(0.0, tf.float64)
        for draw in itertools.product(range(3), repeat=_K):
            log_prob_draw = tf.add_n([log_q[a] for a in draw])
            log_w = tf.stack([_LOG_JOINT[a] - log_q[a] for a in draw])
            total += tf.exp(log_prob_draw) * (tf.reduce_logsumexp(log_w) - np.log(_K))
    return tape.gradient(total, phi).numpy()


def _surrogate_gradients(baseline: str, groups: int, replicas: int, with_score: bool) -> np.ndarray:
    """Mean estimated gradients of the bound per group of replicas: [groups, 3]."""
    phi = tf.Variable(_PHI)
    estimates = []
    for group in range(groups):
        draws = tf.random.stateless_categorical(
            tf.broadcast_to(tf.nn.log_softmax(phi)[tf.newaxis], [replicas, 3]), _K, seed=[7, group]
        )
        addresses = tf.transpose(draws)  # [K, replicas]
        with tf.GradientTape() as tape:
            log_q_a = tf.gather(tf.nn.log_softmax(phi), addresses)
            log_w = tf.gather(tf.constant(_LOG_JOINT), addresses) - log_q_a
            if with_score:
                loss, _ = objectives.vimco_surrogate_loss(log_w, log_q_a, baseline)
            else:
                loss = -tf.reduce_mean(objectives.multi_sample_bound(log_w))
        estimates.append(-tape.gradient(loss, phi).numpy())
    return np.stack(estimates)


@pytest.mark.parametrize("baseline", ["geometric", "arithmetic"])
def test_vimco_gradient_is_unbiased_on_a_tiny_discrete_problem(baseline):
    exact = _exact_bound_gradient()
    estimates = _surrogate_gradients(baseline, groups=40, replicas=2000, with_score=True)
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - exact) < 4 * standard_error + 1e-6), (
        estimates.mean(axis=0),
        exact,
        standard_error,
    )


def test_dropping_the_score_term_is_detectably_biased():
    """The same check fails without the learning-signal term, so it has the power to fail."""
    exact = _exact_bound_gradient()
    estimates = _surrogate_gradients("geometric", groups=40, replicas=2000, with_score=False)
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.any(np.abs(estimates.mean(axis=0) - exact) > 10 * standard_error)


def test_unknown_baseline_is_rejected():
    with pytest.raises(ValueError, match="unknown VIMCO baseline"):
        objectives.vimco_learning_signal(tf.zeros([2, 1]), "harmonic")
