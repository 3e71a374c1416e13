"""Generative models. Each exposes `log_weight_terms(x, memory, num_samples, seed)`,
`encode_memory(memory)` with `log_weight_terms_encoded(x, encoding, num_samples, seed)`,
and `sample(memory, num_samples, seed)`; objectives, evaluation and export use only those."""

import tensorflow as tf

from vma_tf.config import ModelConfig
from vma_tf.models.terms import LogWeightTerms
from vma_tf.models.vma import VariationalMemoryAddressing

__all__ = ["LogWeightTerms", "VariationalMemoryAddressing", "build_model"]


def build_model(config: ModelConfig) -> VariationalMemoryAddressing:
    """The model a ModelConfig describes, with every variable created, so that a checkpoint
    restores into all of them at once."""
    model = VariationalMemoryAddressing(config)
    image = tf.zeros([1, config.image_size, config.image_size, 1])
    model.log_weight_terms(image, image, 2, tf.constant([0, 0], tf.int32))
    return model
