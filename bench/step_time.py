"""Median train-step time of a configuration, or the time of a conditional evaluation, in the
checkout it is run from: one JSON line. For before/after ratios, run it in two checkouts one
after the other, several times, on a quiet machine:

    (cd OLD_CHECKOUT && python NEW_CHECKOUT/bench/step_time.py --flagfile=omniglot_gmn.flags \\
        --data_dir=../shared/data --logdir=/tmp/step_time)
    python bench/step_time.py --conditional_logdir=LOGDIR --data_dir=../shared/data --num_sequences=4

The train step is `Trainer.train_step` on the configuration's own batches (`--timed_steps` after
8 untimed); the evaluation is `eval.py --mode=conditional` at K = 1000 for C = 2, after one
untimed sequence.
"""

import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())  # the checkout being timed

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vma_tf import checkpoints, tasks, training  # noqa: E402
from vma_tf.cli import flagfiles  # noqa: E402
from vma_tf.cli import train as train_entry  # noqa: E402  (defines the training flags)
from vma_tf.config import EvalConfig  # noqa: E402
from vma_tf.evaluation import modes  # noqa: E402

flags.DEFINE_integer("timed_steps", 40, "Train steps timed.")
flags.DEFINE_string("conditional_logdir", None, "Time eval's conditional mode on this run instead of training.")
flags.DEFINE_integer("num_sequences", 4, "Sequences of the timed conditional evaluation.")
FLAGS = flags.FLAGS


def train_step_ms() -> dict:
    config = train_entry.run_config()
    task = tasks.build_task(config)
    dataset_from = task.training_data()
    trainer = training.build_trainer(config, task)
    batches = iter(dataset_from(0))
    for _ in range(8):
        trainer.train_step(next(batches))
    trainer.step.numpy()
    seconds = []
    for _ in range(FLAGS.timed_steps):
        batch = next(batches)
        start = time.perf_counter()
        trainer.train_step(batch)
        trainer.step.numpy()
        seconds.append(time.perf_counter() - start)
    # The command line's --flagfile: flagfiles.expand replaced it by its lines before absl saw them.
    flagfile = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--flagfile=")), None)
    return {"flagfile": flagfile, "median_step_ms": 1000 * float(np.median(seconds))}


def conditional_seconds() -> dict:
    run, model, _ = checkpoints.restore_model(FLAGS.conditional_logdir)
    run = dataclasses.replace(run, data=dataclasses.replace(run.data, data_dir=FLAGS.data_dir))
    test = tasks.load_test_split(run.data)
    modes.conditional(model, test, run, EvalConfig(classes=(2,), num_sequences=1))  # traces
    config = EvalConfig(classes=(2,), num_sequences=FLAGS.num_sequences)
    start = time.perf_counter()
    result = modes.conditional(model, test, run, config)
    return {"conditional_seconds": time.perf_counter() - start, "num_sequences": FLAGS.num_sequences,
            "num_importance_samples": config.num_importance_samples, "table": result["table"]}


def main(argv):
    del argv
    result = conditional_seconds() if FLAGS.conditional_logdir else train_step_ms()
    print(json.dumps({"checkout": os.getcwd(), **result}))


if __name__ == "__main__":
    app.run(main, argv=flagfiles.expand(sys.argv))  # shipped configurations by name
