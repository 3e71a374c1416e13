"""Generative models. Each exposes `log_weight_terms(x, memory, num_samples, seed)`,
`encode_memory(memory)` with `log_weight_terms_encoded(x, encoding, num_samples, seed)`,
and `sample(memory, num_samples, seed)`; objectives, evaluation and export use only those.
A model with a learned memory takes memory=None in each."""

import tensorflow as tf

from vma_tf.config import ModelConfig
from vma_tf.models.conv import ConvVMA
from vma_tf.models.mlp import MlpVMA
from vma_tf.models.terms import LogWeightTerms
from vma_tf.models.vma import VariationalMemoryAddressing

__all__ = ["ARCHITECTURES", "LogWeightTerms", "VariationalMemoryAddressing", "build_model"]

ARCHITECTURES = {"conv": ConvVMA, "mlp": MlpVMA}


def build_model(config: ModelConfig) -> VariationalMemoryAddressing:
    """The model a ModelConfig describes, with every variable created, so that a checkpoint
    restores into all of them at once."""
    model = ARCHITECTURES[config.model_arch](config)
    image = tf.zeros([1, config.image_size, config.image_size, 1])
    memory = None if model.learned_memory is not None else image
    model.log_weight_terms(image, memory, 2, tf.constant([0, 0], tf.int32))
    return model
