"""A run's directory: its `config.json` and checkpoints, and restoring a trained model from them.

Evaluation and export only read a logdir; they never write into `checkpoints/`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from vma_tf.config import RunConfig
from vma_tf.errors import UserInputError
from vma_tf.models import build_model

CONFIG_FILE = "config.json"


def checkpoint_dir(logdir: str) -> str:
    return os.path.join(logdir, "checkpoints")


def write_run_config(config: RunConfig) -> None:
    """Writes `logdir/config.json` atomically."""
    path = os.path.join(config.train.logdir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def read_run_config(logdir: str) -> RunConfig:
    """The RunConfig a run was trained with; UserInputError when the logdir has none."""
    path = os.path.join(logdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserInputError(f"no trained run in {logdir}: {path} is missing")
    try:
        with open(path) as f:
            return RunConfig.from_dict(json.load(f))
    except (ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"{path} is not a vma_tf run configuration ({e})") from e


def restore_model(logdir: str) -> tuple[RunConfig, keras.Model, int]:
    """Rebuilds the model of the run in `logdir` from its latest checkpoint, read-only.

    Returns (the run's config, the model in float32, the checkpoint's training step).
    """
    config = read_run_config(logdir)
    latest = tf.train.latest_checkpoint(checkpoint_dir(logdir))
    if latest is None:
        raise UserInputError(f"no checkpoint in {checkpoint_dir(logdir)}")
    # Evaluation runs in float32 whatever the training precision: the weights are float32 anyway.
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(config.model)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    status = tf.train.Checkpoint(model=model, step=step).read(latest)
    status.expect_partial().assert_existing_objects_matched()
    return config, model, int(step.numpy())


def check_compatible(config: RunConfig) -> None:
    """Raises UserInputError when `config.train.logdir` holds a run whose model differs from
    `config.model`: restoring it would fail or be partial, and continuing would overwrite it."""
    logdir = config.train.logdir
    if tf.train.latest_checkpoint(checkpoint_dir(logdir)) is None:
        return
    if not os.path.isfile(os.path.join(logdir, CONFIG_FILE)):
        raise UserInputError(f"{logdir} holds checkpoints but no {CONFIG_FILE}; use another --logdir")
    stored = read_run_config(logdir).model
    for field in dataclasses.fields(stored):
        old, new = getattr(stored, field.name), getattr(config.model, field.name)
        flag = "model" if field.name == "name" else field.name  # ModelConfig.name is set by --model
        if old != new:
            raise UserInputError(
                f"--{flag}={new} but the checkpoint in {logdir} was trained with --{flag}={old}; "
                "use another --logdir or the same setting"
            )
