"""Batch and event shapes of every model part, and the addressing math."""

import numpy as np
import pytest
import tensorflow as tf

from vma_tf import addressing
from vma_tf.config import ModelConfig
from vma_tf.models import build_model

B, M, K, S, Z = 5, 7, 3, 26, 8


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def model(request):
    config = ModelConfig(
        image_size=S, latent_dim=Z, embed_dim=16, conv_channels=8, hidden_units=32,
        tie_embeddings=request.param,
    )
    return build_model(config)


def _images(count, seed):
    return tf.cast(tf.random.stateless_uniform([count, S, S, 1], [seed, 0]) < 0.2, tf.float32)


def test_distribution_shapes(model):
    x, memory = _images(B, 1), _images(M, 2)
    x_top, query, encoding = model.features(x, memory)
    assert query.shape == (B, 16) and encoding.embeddings.shape == (M, 16)

    q_a = model.address_posterior(x, encoding)
    assert q_a.batch_shape == (B,) and q_a.event_shape == ()
    np.testing.assert_allclose(q_a.probs_parameter().numpy().sum(-1), 1.0, rtol=1e-5)
    p_a = model.address_prior(encoding)
    assert p_a.batch_shape == () and p_a.event_shape == ()
    assert p_a.probs_parameter().shape == (M,)

    addresses = tf.zeros([K, B], tf.int32)
    q_z = model.z_posterior(x_top, encoding, addresses)
    p_z = model.z_prior(encoding, addresses)
    assert q_z.batch_shape == (K, B) and q_z.event_shape == (Z,)
    assert p_z.batch_shape == (K, B) and p_z.event_shape == (Z,)
    likelihood = model.likelihood(q_z.sample(seed=[1, 2]), encoding, addresses)
    assert likelihood.batch_shape == (K, B) and likelihood.event_shape == (S, S, 1)


def test_log_weight_terms_shapes_and_bounds(model):
    x, memory = _images(B, 3), _images(M, 4)
    terms = model.log_weight_terms(x, memory, K, tf.constant([0, 1]))
    for name in ("log_likelihood", "log_prior_z", "log_posterior_z", "log_prior_a", "log_posterior_a", "kl_z"):
        assert getattr(terms, name).shape == (K, B), name
    assert terms.log_weights.shape == (K, B)
    assert terms.kl_a.shape == (B,) and terms.entropy_a.shape == (B,)
    assert np.all(terms.kl_a.numpy() >= -1e-5) and np.all(terms.kl_z.numpy() >= -1e-4)
    assert np.all(terms.entropy_a.numpy() <= np.log(M) + 1e-5)
    assert np.all((terms.addresses.numpy() >= 0) & (terms.addresses.numpy() < M))
    assert np.all(terms.log_likelihood.numpy() < 0)


def test_samples_are_reproducible_images(model):
    memory = _images(M, 5)
    images, addresses = model.sample(memory, 6, tf.constant([3, 4]))
    again, _ = model.sample(memory, 6, tf.constant([3, 4]))
    assert images.shape == (6, S, S, 1) and addresses.shape == (6,)
    assert np.all((images.numpy() >= 0) & (images.numpy() <= 1))
    np.testing.assert_array_equal(images.numpy(), again.numpy())


def test_untied_model_has_a_second_embedding_net():
    count = lambda tie: sum(  # noqa: E731
        v.numpy().size
        for v in _built(ModelConfig(image_size=S, conv_channels=8, embed_dim=16, tie_embeddings=tie))
    )
    assert count(False) > count(True)


def _built(config):
    model = build_model(config)
    model.log_weight_terms(_images(1, 0), _images(1, 1), 2, tf.constant([0, 0]))
    return model.trainable_variables


def test_similarity_is_inner_product_over_memory_norm():
    rng = np.random.default_rng(0)
    memory, queries = rng.normal(size=(M, 4)), rng.normal(size=(B, 4))
    expected = queries @ memory.T / np.linalg.norm(memory, axis=1)
    got = addressing.similarity(tf.constant(memory, tf.float32), tf.constant(queries, tf.float32))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_flat_prior_is_uniform():
    prior = addressing.address_prior(tf.ones([M, 4]), None)
    np.testing.assert_allclose(prior.probs_parameter().numpy(), np.full(M, 1 / M), rtol=1e-6)
