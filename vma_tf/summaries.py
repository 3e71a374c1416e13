"""What TensorBoard shows of a run besides the training scalars and images: its configuration (as
hparams, so runs compare in one table, and as text) and every evaluation's headline numbers and
figures, at the step of the checkpoint evaluated.

Training writes into LOGDIR's own events; eval.py writes into LOGDIR/eval, which TensorBoard
shows as the run "eval" beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from vma_tf.config import RunConfig

EVAL_FOLDER = "eval"


def write_run_config(config: RunConfig, step: int) -> None:
    """Into the default writer: the run's configuration as hparams (section.field: value, and
    "task"; lists as text) and as a JSON text panel "config"."""
    values = {}
    for section, fields in dataclasses.asdict(config).items():
        for name, value in fields.items() if isinstance(fields, dict) else [(None, fields)]:
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            values[section if name is None else f"{section}.{name}"] = "" if value is None else value
    hparams_api.hparams(values, trial_id=config.train.logdir)
    tf.summary.text("config", "```\n" + json.dumps(dataclasses.asdict(config), indent=1) + "\n```", step=step)


def headline_numbers(result: dict) -> dict[str, float]:
    """The numbers of an eval.py result, named by their path ("table/1/5", "nll_nats", ...):
    every number but the metadata, the counts and the standard errors."""
    numbers = {}

    def visit(value, path: str) -> None:
        name = path.rsplit("/", 1)[-1]
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(inner, f"{path}/{key}" if path else str(key))
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                visit(inner, f"{path}/{index}")
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)
              and not name.startswith("num_") and "stderr" not in name and name != "seed"):
            numbers[path] = float(value)

    visit({key: value for key, value in result.items() if key != "meta"}, "")
    return numbers


def write_evaluation(logdir: str, mode: str, result: dict) -> str:
    """Writes an eval.py result's headline numbers as scalars eval/<mode>/<path> and its figures as
    images eval/<mode>/<figure>, at the evaluated checkpoint's step, into LOGDIR/eval. Returns the
    events folder."""
    folder = os.path.join(logdir, EVAL_FOLDER)
    step = result["meta"]["checkpoint_step"]
    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        for path, value in headline_numbers(result).items():
            tf.summary.scalar(f"eval/{mode}/{path}", value, step=step)
        for figure in result["meta"].get("figures", []):
            image = tf.image.decode_png(tf.io.read_file(figure), channels=3)
            name = os.path.splitext(os.path.basename(figure))[0]
            tf.summary.image(f"eval/{mode}/{name}", image[tf.newaxis], step=step)
    writer.close()
    return folder
