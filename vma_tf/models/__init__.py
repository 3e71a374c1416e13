"""Generative models. Each exposes `log_weight_terms(x, memory, num_samples, seed)` and
`sample(memory, num_samples, seed)`; objectives, evaluation and export use only those."""

from vma_tf.models.terms import LogWeightTerms
from vma_tf.models.vma import VariationalMemoryAddressing

__all__ = ["LogWeightTerms", "VariationalMemoryAddressing", "build_model"]


def build_model(config) -> VariationalMemoryAddressing:
    """The model a ModelConfig describes."""
    return VariationalMemoryAddressing(config)
