"""vma_tf: Variational Memory Addressing and its baselines in TensorFlow 2 / Keras 3.

Layout (data → nets → models → tasks and objectives → training / evaluation / export):
  vma_tf.data        Omniglot and MNIST loading, preprocessing, caching; episode samplers.
  vma_tf.nets        Keras layers: conv pyramid, upscaler, embedders, Gaussian heads.
  vma_tf.addressing  similarity (paper eq. 5), q(a|x) and p(a).
  vma_tf.models      VMA, the VAE and soft attention behind one interface (encode_context,
                     log_weights, sample, capabilities), and the registry behind --model.
  vma_tf.tasks       the data protocols (few-shot, recall, learned, none): batches and loss.
  vma_tf.objectives  multi-sample bound and the VIMCO surrogate.
  vma_tf.training    the train step, checkpoints, summaries, the loop.
  vma_tf.evaluation  eval.py's modes; vma_tf.export the SavedModel.
"""

from vma_tf.errors import UserInputError

__all__ = ["UserInputError"]
