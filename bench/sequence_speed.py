"""Step time of the sequence task: all T conditionals of a batch of sequences in one causal pass,
against a plain loop over t (T model calls; call t scores x_t of every sequence given its x_<t).

    python bench/sequence_speed.py --flagfile=omniglot_gmn.flags --data_dir=../shared/data \
        --output=bench/results/sequence_speed.json

Both variants take a full training step (forward, backward, Adam) on the same real batch, with the
model the flagfile describes; their repeats alternate, so a busy machine slows both alike.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from vma_tf import objectives, tasks, training  # noqa: E402
from vma_tf.cli import flagfiles  # noqa: E402
from vma_tf.cli import train as train_entry  # noqa: E402  (defines the training flags)
from vma_tf.models import build_model, context_for  # noqa: E402

flags.DEFINE_integer("repeats", 10, "Timed steps of each variant.")
flags.DEFINE_string("output", "bench/results/sequence_speed.json", "Where the JSON goes.")
FLAGS = flags.FLAGS


def main(argv):
    run = train_entry.run_config()
    training.validate(run)
    if run.task != "sequence":
        sys.exit("sequence_speed.py: error: needs a flagfile with --task=sequence")
    task = tasks.build_task(run)
    dataset_from = task.training_data()
    image_size = run.data.image_size
    model = build_model(run.model, image_size)
    optimizer = keras.optimizers.Adam(run.train.learning_rate)
    optimizer.build(model.trainable_variables)
    batch = next(iter(dataset_from(0)))
    shape = run.episodes
    length, count = shape.sequence_length, shape.sequences_per_batch
    sequences = tf.reshape(batch.memory, [count, length, image_size, image_size, 1])
    seed = tf.constant([0, 0])

    def apply(loss_fn):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def batched_step():
        return apply(lambda: task.loss(model, batch, seed)[0])

    @tf.function
    def looped_step():
        def loss():
            total, scored = 0.0, 0
            for t in range(model.min_context_size, length):
                x = sequences[:, t]  # [S, H, W, 1]
                context = tf.reshape(sequences[:, :t], [-1, image_size, image_size, 1])  # [S * t, ...]
                own = tf.repeat(tf.eye(count, dtype=tf.bool), t, axis=1)  # x_t of sequence s reads its x_<t
                record = model.log_weights_in_context(
                    x, context_for(model, context), run.train.num_samples, seed, own if t else None
                )
                total += objectives.bound_loss(record, run.train.vimco_baseline)[0] * count
                scored += count
            return total / scored
        return apply(loss)

    times = {"batched": [], "looped": []}
    for step in (batched_step, looped_step):
        step()  # trace
    for _ in range(FLAGS.repeats):
        for name, step in (("batched", batched_step), ("looped", looped_step)):
            start = time.perf_counter()
            step().numpy()
            times[name].append(time.perf_counter() - start)
    result = {
        "model": run.model.name,
        "model_arch": run.model.model_arch,
        "sequences_per_batch": count,
        "sequence_length": length,
        "batched_step_ms": 1000 * float(np.median(times["batched"])),
        "looped_step_ms": 1000 * float(np.median(times["looped"])),
    }
    result["speedup"] = result["looped_step_ms"] / result["batched_step_ms"]
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"| {run.model.name} ({run.model.model_arch}), {count} sequences of {length} | one causal pass | "
          f"loop over t |\n|---|---|---|\n| train step (ms) | {result['batched_step_ms']:.0f} | "
          f"{result['looped_step_ms']:.0f} ({result['speedup']:.1f}x) |")


if __name__ == "__main__":
    app.run(main, argv=flagfiles.expand(sys.argv))  # shipped configurations by name
