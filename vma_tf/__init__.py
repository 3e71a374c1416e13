"""vma_tf: Variational Memory Addressing and its baselines in TensorFlow 2 / Keras 3.

Layout (data → nets → models → objectives → training):
  vma_tf.data        Omniglot loading, preprocessing, caching; episode samplers.
  vma_tf.nets        Keras layers: conv pyramid, upscaler, embedders, Gaussian heads.
  vma_tf.addressing  similarity (paper eq. 5), q(a|x) and p(a).
  vma_tf.models      generative models exposing `log_weight_terms` and `sample`.
  vma_tf.objectives  multi-sample bound and the VIMCO surrogate.
  vma_tf.training    the train step, checkpoints, summaries, the loop.
"""

from vma_tf.errors import UserInputError

__all__ = ["UserInputError"]
