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
  vma_tf.training    the trainer (the step under a strategy, checkpoints, summaries) and the loop.
  vma_tf.evaluation  eval.py's modes; vma_tf.export the SavedModel; vma_tf.serving an export
                     from NumPy.

From Python:
  vma_tf.load(path)            an export (`ExportedModel`: sample, log_likelihood,
                               address_posterior, attention), NumPy in and out.
  vma_tf.preprocess(d, size)   a drawing (file, PIL image or array) as a model input
                               (downscale="area" for models of the GMN authors' arrays).
  vma_tf.config_from_flagfile(path, **overrides), vma_tf.train(config), vma_tf.evaluate(logdir,
  mode, ...): what train.py and eval.py do, returning what they write.
Importing vma_tf does not import TensorFlow; the functions that need it do.
"""

from __future__ import annotations

import logging

from vma_tf.config import EvalConfig, RunConfig
from vma_tf.data.drawings import preprocess
from vma_tf.errors import UserInputError

_logger = logging.getLogger(__name__)


def load(name_or_path):
    """A pretrained model by name (pretrained/<name>) or the export in a folder, as a
    `vma_tf.serving.ExportedModel`."""
    from vma_tf.serving import load as load_export

    return load_export(name_or_path)


def config_from_flagfile(path: str, **overrides) -> RunConfig:
    """The run `python train.py --flagfile=path --name=value ...` would train, one override per
    flag (`steps=500`, `logdir="runs/mine"`, `mlp_units=[256, 128]`); UserInputError names an
    unknown flag or a bad value. The flags are train.py's, so they are read by its module."""
    from vma_tf.cli.train import run_config_from_flagfile

    return run_config_from_flagfile(path, **overrides)


def train(config: RunConfig) -> dict[str, float]:
    """Trains (or resumes) the run `config` describes and exports it (config.train.export), as
    train.py does; returns the last row it wrote to metrics.jsonl (empty when the run had already
    reached its steps)."""
    from vma_tf import export, training

    result = training.train(config)
    if config.train.export and result.is_chief:
        _logger.info("exporting the SavedModel (tens of seconds)")
        _logger.info("exported %s", export.export_run(config.train.logdir))
    return result.metrics


def evaluate(
    logdir: str, mode: str, data_dir: str | None = None, output_json: str | None = None, **settings
) -> dict:
    """Evaluates the newest checkpoint of the run in `logdir` as `eval.py --mode=<mode>` does, with
    EvalConfig's fields as settings (`num_importance_samples=100`, `classes=(1, 2)`); returns the
    result it writes to output_json (default LOGDIR/eval/<mode>.json)."""
    from vma_tf.evaluation import runner

    try:
        config = EvalConfig(**settings)
    except TypeError as e:
        raise UserInputError(f"unknown evaluation setting: {e}") from None
    return runner.run_evaluation(logdir, mode, config, data_dir=data_dir, output_json=output_json)


__all__ = ["EvalConfig", "RunConfig", "UserInputError", "config_from_flagfile", "evaluate", "load", "preprocess",
           "train"]
