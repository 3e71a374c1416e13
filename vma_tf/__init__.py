"""vma_tf: Variational Memory Addressing and its baselines in TensorFlow 2 / Keras 3.

Layout (data → nets → models → tasks and objectives → training / evaluation / export):
  vma_tf.data        Omniglot and MNIST loading, preprocessing, caching; episode samplers;
                     a user's drawings as model inputs (data.drawings).
  vma_tf.nets        Keras layers: conv pyramid, upscaler, embedders, Gaussian heads.
  vma_tf.addressing  similarity (paper eq. 5), q(a|x) and p(a).
  vma_tf.models      VMA, the VAE, soft attention and GMN behind one interface (encode_context,
                     log_weights, sample, capabilities), and the registry behind --model.
  vma_tf.tasks       the data protocols (few-shot, recall, learned, none, sequence): batches and loss.
  vma_tf.objectives  multi-sample bound and the VIMCO surrogate.
  vma_tf.training    the train step, checkpoints, summaries, the loop.
  vma_tf.evaluation  eval.py's modes; vma_tf.export the SavedModel; vma_tf.serving an export
                     from NumPy.

From Python: `vma_tf.load(path)` opens an export (`ExportedModel`: sample, log_likelihood,
address_posterior, attention), and `vma_tf.preprocess(drawing, size)` turns a drawing into a
model input. Importing vma_tf does not import TensorFlow; `load` does.
"""

from vma_tf.data.drawings import preprocess
from vma_tf.errors import UserInputError


def load(path):
    """The export in folder `path`, as a `vma_tf.serving.ExportedModel`."""
    from vma_tf.serving import load as load_export

    return load_export(path)


__all__ = ["UserInputError", "load", "preprocess"]
