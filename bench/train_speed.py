"""Train-step speed of a configuration, and where the time goes; writes JSON.

    python bench/train_speed.py --flagfile=omniglot.flags --data_dir=../shared/data \
        --output=bench/results/train_speed.json

Times `--bench_steps` real train steps one by one after `--warmup_steps`, and reports
the median steps/s. The breakdown times, on one fixed episode, the input pipeline, the
memory encoder alone, the forward pass, forward + backward, and the full step; then a TF
profiler trace of the full step gives self-time per op type.
"""

import dataclasses
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import train as train_entry  # noqa: E402  (defines the training flags)
from vma_tf import tasks, training  # noqa: E402
from vma_tf.models import context_for  # noqa: E402

flags.DEFINE_integer("warmup_steps", 30, "Steps run before timing.")
flags.DEFINE_integer("bench_steps", 200, "Steps timed.")
flags.DEFINE_string("output", "bench/results/train_speed.json", "Where the JSON goes.")
FLAGS = flags.FLAGS


def median_ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def op_type_profile(step_fn, steps: int = 10) -> dict[str, float]:
    """Self-time per op type, ms per step, from a TF profiler trace (largest first)."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as profiler_plugin

    trace_dir = tempfile.mkdtemp()
    tf.profiler.experimental.start(trace_dir)
    for _ in range(steps):
        step_fn()
    tf.profiler.experimental.stop()
    xspace = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    table = json.loads(profiler_plugin.xspace_to_tools_data([xspace], "framework_op_stats", {})[0])[0]
    columns = [c["id"] for c in table["cols"]]
    totals: dict[str, float] = {}
    for row in table["rows"]:
        values = dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]]))
        totals[values["type"]] = totals.get(values["type"], 0.0) + values["total_self_time"] / 1000 / steps
    return dict(sorted(totals.items(), key=lambda item: -item[1])[:12])


def main(argv):
    del argv
    config = train_entry.run_config()
    training.validate(config)
    task = tasks.build_task(config)
    image_size, dataset_from = task.training_data()
    trainer = training.Trainer(config, image_size, task)
    iterator = iter(dataset_from(0))

    for _ in range(FLAGS.warmup_steps):
        trainer.train_step(next(iterator))
    step_times = []
    for _ in range(FLAGS.bench_steps):
        episode = next(iterator)
        start = time.perf_counter()
        trainer.train_step(episode)
        trainer.step.numpy()  # waits for the step to finish
        step_times.append(time.perf_counter() - start)

    episode = next(iterator)
    model, num_samples = trainer.model, config.train.num_samples
    seed = tf.constant([0, 1])

    @tf.function
    def encoders():
        return model.encode_context(context_for(model, episode.memory))

    @tf.function
    def forward():
        return task.loss(model, episode, seed)[0]

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = forward()
        return tape.gradient(loss, model.trainable_variables)

    def full_step():
        trainer.train_step(episode)
        trainer.step.numpy()

    result = {
        "median_steps_per_sec": 1.0 / float(np.median(step_times)),
        "mean_steps_per_sec": len(step_times) / float(np.sum(step_times)),
        "p90_step_ms": 1000 * float(np.percentile(step_times, 90)),
        "bench_steps": FLAGS.bench_steps,
        "model": config.model.name,
        "batch_size": int(episode.targets.shape[0]),
        "memory_size": int(episode.memory.shape[0]),
        "num_samples": num_samples,
        "breakdown_ms": {
            "input_pipeline_per_episode": median_ms(lambda: next(iterator)),
            "memory_encoder_forward": median_ms(encoders),
            "forward": median_ms(forward),
            "forward_backward": median_ms(forward_backward),
            "full_step": median_ms(full_step),
        },
        "op_type_self_ms_per_step": op_type_profile(full_step),
        "run_config": dataclasses.asdict(config),
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
