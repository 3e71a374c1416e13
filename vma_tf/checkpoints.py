"""A run's directory: its `config.json` and checkpoints, and restoring a trained model from them.

Evaluation and export only read a logdir; they never write into `checkpoints/`. A checkpoint is
used only if every tensor in it reads back (TensorFlow checks each tensor's CRC): a lost index
file (`checkpoints/checkpoint`) or a damaged newest checkpoint falls back to the newest whole one.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re

import keras
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management

from vma_tf import files
from vma_tf.config import RunConfig, upgraded_run_fields
from vma_tf.errors import UserInputError
from vma_tf.models import build_model

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# Everything a run writes in its logdir besides TensorBoard's event files (and their temporaries):
# any other entry means the folder is not (only) a run's, and training refuses to touch it.
RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, files.LOCK_FILE, "checkpoints", "saved_model", "eval")
DAMAGED_SUFFIX = ".damaged"
ROTATION_RETRIES = 5
# The model configuration a checkpoint was trained with, stored in it as JSON (since 2026-11-23).
MODEL_CONFIG_KEY = "model_config/.ATTRIBUTES/VARIABLE_VALUE"
logger = logging.getLogger(__name__)


def foreign_entries(logdir: str) -> list[str]:
    """The entries of `logdir` that a run does not write (sorted); none for a missing folder."""
    if not os.path.isdir(logdir):
        return []
    return sorted(
        name for name in os.listdir(logdir)
        if name not in RUN_ENTRIES and not name.startswith("events.out.tfevents.")
        and not files.is_temporary_of(name, RUN_ENTRIES)
    )


def check_entry_kinds(logdir: str) -> None:
    """UserInputError when an entry a run writes has the wrong kind (config.json a folder,
    checkpoints a file, ...), before any work."""
    folders = ("checkpoints", "saved_model", "eval")
    for name in RUN_ENTRIES:
        path = os.path.join(logdir, name)
        if name == files.LOCK_FILE and os.path.islink(path):
            raise UserInputError(f"{path} is a symbolic link: a run's lock must be its own file; remove it")
        if not os.path.lexists(path) or (name in folders) == os.path.isdir(path):
            continue
        expected = "a folder" if name in folders else "a file"
        raise UserInputError(f"{path} is not {expected}, as a run's {name} is: move it away or use another --logdir")


def holds_run_state(logdir: str, path: str) -> bool:
    """Whether `path` is, or lies inside, one of the entries a run keeps its state in (everything
    of RUN_ENTRIES but `eval/`, and TensorBoard's event files): writing there would damage the run."""
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(logdir))
    top = relative.split(os.sep)[0]
    if top in (os.curdir, os.pardir, "eval"):
        return False
    return top in RUN_ENTRIES or top.startswith("events.out.tfevents.")


def checkpoint_dir(logdir: str) -> str:
    return os.path.join(logdir, "checkpoints")


def checkpoint_prefixes(directory: str) -> list[str]:
    """Every checkpoint in `directory`, newest (highest number) first: those the index file lists
    and, if it is lost or stale, every `ckpt-N.index` on disk."""
    listed = []
    state = tf.train.get_checkpoint_state(directory)
    if state is not None:
        listed = [os.path.join(directory, os.path.basename(path)) for path in state.all_model_checkpoint_paths]
    on_disk = [path.removesuffix(".index") for path in glob.glob(os.path.join(directory, "ckpt-*.index"))]
    numbered = {path: int(match.group(1)) for path in {*listed, *on_disk}
                if (match := re.search(r"-(\d+)$", path))}
    return sorted(numbered, key=numbered.get, reverse=True)


def damage(prefix: str) -> str | None:
    """Why the checkpoint `prefix` cannot be read whole (a file missing, cut short or corrupt), or
    None when every tensor reads back."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


def newest_whole_checkpoint(directory: str, set_aside: bool) -> str | None:
    """The newest checkpoint in `directory` that reads back whole; None when there is none at all.
    Each newer damaged one is named in a warning and, with `set_aside`, its files are renamed to
    `<file>.damaged` (kept, not deleted) and the index file rewritten to list the whole ones.
    Raises UserInputError, changing nothing, when checkpoints exist but none reads back whole."""
    prefixes = checkpoint_prefixes(directory)
    damaged = []
    for prefix in prefixes:
        reason = damage(prefix)
        if reason is None:
            break
        damaged.append((prefix, reason))
    else:
        if damaged:
            raise UserInputError(
                f"no checkpoint in {directory} reads back whole (newest: {damaged[0][0]}: {damaged[0][1]}); "
                "nothing was changed"
            )
        return None
    for bad, reason in damaged:
        pieces = [path for path in glob.glob(glob.escape(bad) + ".*") if not path.endswith(DAMAGED_SUFFIX)]
        if set_aside:
            for path in pieces:
                os.replace(path, path + DAMAGED_SUFFIX)
        kept = f"; set aside as {os.path.basename(bad)}.*{DAMAGED_SUFFIX}" if set_aside and pieces else ""
        logger.warning("checkpoint %s is damaged (%s)%s", bad, reason, kept)
    if damaged or os.path.basename(tf.train.latest_checkpoint(directory) or "") != os.path.basename(prefix):
        if set_aside:
            whole = [p for p in prefixes[len(damaged):] if os.path.isfile(p + ".index")]
            # What CheckpointManager writes (tf.compat.v1's public wrapper only adds a deprecation warning).
            checkpoint_management.update_checkpoint_state_internal(
                directory, prefix, all_model_checkpoint_paths=whole[::-1], save_relative_paths=True
            )
        logger.warning("using %s, the newest whole checkpoint", os.path.basename(prefix))
    return prefix


def write_run_config(config: RunConfig) -> None:
    """Writes `logdir/config.json` atomically."""
    text = json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)
    files.write_atomically(os.path.join(config.train.logdir, CONFIG_FILE), text)


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


def model_description(config: RunConfig) -> dict:
    """What a run's model weights are built from: its ModelConfig's fields and "image_size"."""
    return {**dataclasses.asdict(config.model), "image_size": config.data.image_size}


def model_config_variable(config: RunConfig) -> tf.Variable:
    """The run's `model_description` as a JSON string variable, saved in every checkpoint under
    "model_config"."""
    return tf.Variable(json.dumps(model_description(config), sort_keys=True), trainable=False, name="model_config")


def require_trained_model(prefix: str, config: RunConfig, described_by: str) -> None:
    """Raises UserInputError naming the first field where the model of `config` (from
    `described_by`, a file or the flags) differs from the model description stored in checkpoint
    `prefix`. Checkpoints from before it was stored are checked by their variables' shapes when
    restored."""
    reader = tf.train.load_checkpoint(prefix)
    if not reader.has_tensor(MODEL_CONFIG_KEY):
        return
    stored = json.loads(reader.get_tensor(MODEL_CONFIG_KEY).decode())
    # A checkpoint of an earlier version holds some model fields in their earlier places.
    trained = upgraded_run_fields({"model": stored})["model"]
    if "image_size" in stored:
        trained["image_size"] = stored["image_size"]
    change = first_change(trained, json.loads(json.dumps(model_description(config))), RESUMABLE_SETTINGS["model"])
    if change:
        name, old, new = change
        raise UserInputError(f"{described_by} gives {name}={new!r} but {prefix} was trained with {name}={old!r}")


def first_change(stored: dict, given: dict, unchecked: tuple[str, ...]) -> tuple[str, object, object] | None:
    """(name, stored value, given value) of the first setting of `given` that `stored` holds with
    another value, `unchecked` ones aside; None when there is none."""
    for name, value in given.items():
        if name in stored and stored[name] != value and name not in unchecked:
            return name, stored[name], value
    return None


def restore(checkpoint: tf.train.Checkpoint, prefix: str, described_by: str) -> None:
    """Restores `prefix` into `checkpoint` (whose model `described_by` describes), every model
    variable; a checkpoint that does not fit ends in UserInputError."""
    try:
        checkpoint.restore(prefix).expect_partial().assert_existing_objects_matched()
    except (ValueError, AssertionError) as e:
        raise UserInputError(f"{described_by} does not describe {prefix} ({str(e).splitlines()[0][:200]})") from None


def restore_model(logdir: str) -> tuple[RunConfig, keras.Model, int]:
    """Rebuilds the model of the run in `logdir` from its latest checkpoint, read-only.

    Returns (the run's config, the model in float32, the checkpoint's training step).
    """
    config = read_run_config(logdir)
    described_by = os.path.join(logdir, CONFIG_FILE)
    # Evaluation runs in float32 whatever the training precision: the weights are float32 anyway.
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(config.model, config.data.image_size)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    # A run that is training may rotate the chosen checkpoint out before it is read: then the newest
    # one is chosen again.
    for attempt in range(ROTATION_RETRIES):
        latest = newest_whole_checkpoint(checkpoint_dir(logdir), set_aside=False)
        if latest is None:
            raise UserInputError(f"no checkpoint in {checkpoint_dir(logdir)} reads back whole")
        try:
            require_trained_model(latest, config, described_by)
            restore(tf.train.Checkpoint(model=model, step=step), latest, described_by)
            return config, model, int(step.numpy())
        except tf.errors.NotFoundError:
            logger.warning("checkpoint %s went away while it was read (attempt %d)", latest, attempt + 1)
    raise UserInputError(f"the checkpoints in {checkpoint_dir(logdir)} were replaced faster than they could be read "
                         f"({ROTATION_RETRIES} tries); evaluate a copy of the run, or raise --checkpoint_every")


# The settings a resumed run may change: where things are and how often they are logged, saved and
# dispatched. Every other setting is part of the experiment.
RESUMABLE_SETTINGS = {
    "data": ("data_dir", "cache_dir"),
    "model": ("memory_init",),  # acts at a fresh start only
    "train": ("logdir", "steps", "log_every", "checkpoint_every", "max_checkpoints", "image_summary_every", "export",
              "steps_per_call", "strategy", "max_nonfinite_steps"),
}


def check_compatible(config: RunConfig) -> None:
    """Raises UserInputError when `config.train.logdir` holds a run that `config` would change
    beyond RESUMABLE_SETTINGS (the model, the data, the episodes, the optimiser, the seed...):
    continuing would train a different experiment under the stored config.json, or fail to restore."""
    logdir = config.train.logdir
    if not checkpoint_prefixes(checkpoint_dir(logdir)):
        return
    if not os.path.isfile(os.path.join(logdir, CONFIG_FILE)):
        raise UserInputError(f"{logdir} holds checkpoints but no {CONFIG_FILE}; use another --logdir")
    stored, given = dataclasses.asdict(read_run_config(logdir)), dataclasses.asdict(config)
    for section in stored:
        if isinstance(stored[section], dict):
            change = first_change(stored[section], given[section], RESUMABLE_SETTINGS.get(section, ()))
        else:
            change = first_change(stored, {section: given[section]}, ())
        if change:
            name, old, new = change
            flag = _FLAG_OF_FIELD.get((section, name), name)
            raise UserInputError(
                f"--{flag}={_flag_value(new)} but the checkpoint in {logdir} was trained with "
                f"--{flag}={_flag_value(old)}; use another --logdir or the same setting"
            )


# The train.py flags that set config fields of another name.
_FLAG_OF_FIELD = {
    ("model", "name"): "model",
    ("episodes", "recall_memory_size"): "memory_size",
    ("model", "learned_memory_size"): "memory_size",
}


def _flag_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
