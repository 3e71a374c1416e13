"""Train-step speed of a configuration, where the time goes, and how it scales with |M|; writes JSON.

    python bench/train_speed.py --flagfile=omniglot.flags --data_dir=../shared/data \
        --output=bench/results/train_speed.json

`paper_config` (the flagfile's configuration): `--bench_steps` real train steps timed one by one
after `--warmup_steps` (median steps/s, targets/s); the floating-point operations of one step
(every conv, transposed conv and matmul of the compiled step and its gradient, counted from the
graph's static shapes; elementwise ops are left out) and the achieved FLOP/s, beside this
machine's peak measured in the same run: a large matmul and a large conv.
`breakdown_ms` times, on one fixed episode, the input pipeline, the memory encoder alone, the
forward pass, forward + backward and the full step; a TF profiler trace gives self-time per op.
`steps_per_call`: the same steps run --bench_steps_per_call to a compiled call, and the host
time per step that saves.
For a few-shot configuration only, two comparisons follow.
`per_target_memory`: the work of the public PyTorch VMA, every target with its own memory of
8 classes x 4 images (32 targets read 1,024 entries through a block-diagonal visibility mask).
`memory_sweep`: VMA (K = 4), soft attention (K = 1) and the VAE at each of `--sweep_memory_sizes`
with the paper's 32 targets: |M| = 16 is 8 classes x 2 images, larger memories 4 images of each
target class and of |M|/4 - 8 confounding classes.
"""

import dataclasses
import gc
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

from vma_tf import tasks, training  # noqa: E402
from vma_tf.cli import flagfiles  # noqa: E402
from vma_tf.cli import train as train_entry  # noqa: E402  (defines the training flags)
from vma_tf.config import RunConfig  # noqa: E402
from vma_tf.data import episodes, omniglot  # noqa: E402
from vma_tf.data.episodes import Episode  # noqa: E402
from vma_tf.models import context_for  # noqa: E402
from vma_tf.seeds import seed_for  # noqa: E402

flags.DEFINE_integer("warmup_steps", 30, "Steps run before timing.")
flags.DEFINE_integer("bench_steps", 200, "Steps timed.")
flags.DEFINE_list("sweep_memory_sizes", ["16", "48", "128", "512", "2048"], "|M| of the memory sweep.")
flags.DEFINE_list("sweep_models", ["vma", "soft_attention", "vae"], "Models of the memory sweep.")
flags.DEFINE_integer("sweep_steps", 20, "Steps timed per point of the sweep and for the per-target memory.")
flags.DEFINE_float(
    "pytorch_targets_per_sec", None,
    "The public PyTorch VMA's training targets/s with a memory per target (32 targets, K = 4), timed on "
    "this machine beside this run: the per-target figure is reported as a ratio to it when given.",
)
flags.DEFINE_integer("bench_steps_per_call", 10, "Steps per call when timing several steps to a call.")
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


_FLOP_OPS = {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul", "BatchMatMulV2", "BatchMatMulV3"}


def _static(shape: tf.TensorShape) -> list[int] | None:
    return shape.as_list() if shape.is_fully_defined() else None


def _op_flops(op) -> int:
    """Multiply-adds x 2 of one conv or matmul op; 0 for any other op or unknown shapes."""
    if op.type.startswith("Conv2D"):
        # Forward, input gradient and filter gradient each cost 2 x (output or out_backprop
        # elements) x kh x kw x in_channels (per output channel term), read off the filter.
        out_backprop = op.inputs[2] if op.type != "Conv2D" else None
        output = _static(out_backprop.shape if out_backprop is not None else op.outputs[0].shape)
        filter_shape = (
            _static(op.inputs[1].shape) if op.type != "Conv2DBackpropFilter" else None
        )
        if op.type == "Conv2DBackpropFilter":
            filter_shape = _static(op.outputs[0].shape)
        if output is None or filter_shape is None:
            return 0
        kh, kw, in_channels, _ = filter_shape
        return 2 * int(np.prod(output)) * kh * kw * in_channels
    if op.type in _FLOP_OPS:
        a, b = _static(op.inputs[0].shape), _static(op.inputs[1].shape)
        if a is None or b is None:
            return 0
        transpose_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        transpose_b = op.get_attr("transpose_b" if op.type == "MatMul" else "adj_y")
        rows, inner = (a[-1], a[-2]) if transpose_a else (a[-2], a[-1])
        cols = b[-2] if transpose_b else b[-1]
        return 2 * int(np.prod(a[:-2], dtype=np.int64)) * rows * inner * cols
    return 0


def count_flops(concrete_function) -> int:
    """FLOPs of the convs and matmuls of a concrete function, its nested functions included."""
    graph = concrete_function.graph
    total = sum(_op_flops(op) for op in graph.get_operations())
    for function in graph._functions.values():  # cond branches, while bodies, nested calls
        total += sum(_op_flops(op) for op in function.graph.get_operations()) if hasattr(function, "graph") else 0
    return total


def peak_flops_per_sec() -> dict[str, float]:
    """This machine's FLOP/s on a large matmul and a large 3x3 conv (the median of 5 runs)."""
    a, b = tf.random.normal([2048, 2048]), tf.random.normal([2048, 2048])
    images, kernel = tf.random.normal([64, 32, 32, 128]), tf.random.normal([3, 3, 128, 128])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    conv = tf.function(lambda: tf.reduce_sum(tf.nn.conv2d(images, kernel, 1, "SAME")))
    return {
        "peak_matmul_flops_per_sec": 2 * 2048**3 / (median_ms(lambda: matmul().numpy(), 5) / 1000),
        "peak_conv_flops_per_sec": 2 * 64 * 32 * 32 * 128 * 9 * 128 / (median_ms(lambda: conv().numpy(), 5) / 1000),
    }


def timed_steps(trainer: training.Trainer, batches, warmup: int, steps: int) -> float:
    """Median steps/s of `steps` train steps after `warmup`, cycling through the given batches."""
    batches = iter(batches)
    for _ in range(warmup):
        trainer.train_step(next(batches))
    times = []
    for _ in range(steps):
        batch = next(batches)
        start = time.perf_counter()
        trainer.train_step(batch)
        trainer.step.numpy()
        times.append(time.perf_counter() - start)
    return 1.0 / float(np.median(times))


def _cycle(items):
    while True:
        yield from items


def per_target_memory_batches(config: RunConfig, count: int) -> list[Episode]:
    """Batches of the public PyTorch VMA's work: each of the episode config's B targets reads its own
    memory of classes_per_batch classes x memory_per_class images (its class among them): the
    context holds the B memories one after another and `visible` shows each target its own."""
    shape = config.episodes
    images = tf.constant(omniglot.load_splits(config.data)["train"].images)
    one_target = dataclasses.replace(shape, targets_per_class=1)
    per_memory = shape.classes_per_batch * shape.memory_per_class
    batch_size = shape.few_shot_batch_size
    visible = tf.repeat(tf.eye(batch_size, dtype=tf.bool), per_memory, axis=1)  # [B, B * per_memory]
    batches = []
    for index in range(count):
        drawn = [episodes.sample_episode(images, one_target, seed_for(1, index, target))
                 for target in range(batch_size)]
        batches.append(Episode(
            targets=tf.concat([e.targets[:1] for e in drawn], 0),
            target_labels=tf.concat([e.target_labels[:1] for e in drawn], 0),
            memory=tf.concat([e.memory for e in drawn], 0),
            memory_labels=tf.concat([e.memory_labels for e in drawn], 0),
            visible=visible,
        ))
    return batches


# The K each model of the sweep trains with in the VMA paper: VIMCO's 4 samples for VMA, one for the
# baselines' single-sample bound.
PAPER_NUM_SAMPLES = {"vma": 4, "soft_attention": 1, "vae": 1}


def sweep_config(config: RunConfig, model: str, memory_size: int) -> RunConfig:
    """The paper's batch of 32 targets (8 classes x 4) with a memory of memory_size images."""
    per_class = 2 if memory_size < 32 else 4
    episodes_config = dataclasses.replace(
        config.episodes, classes_per_batch=8, targets_per_class=4, memory_per_class=per_class,
        confounding_classes=memory_size // per_class - 8,
    )
    num_samples = PAPER_NUM_SAMPLES[model]
    return dataclasses.replace(
        config,
        episodes=episodes_config,
        task="few_shot",
        model=dataclasses.replace(config.model, name=model),
        train=dataclasses.replace(config.train, num_samples=num_samples),
    )


def sweep_point(config: RunConfig) -> float:
    task = tasks.build_task(config)
    dataset_from = task.training_data()
    trainer = training.build_trainer(config, task)
    steps_per_sec = timed_steps(trainer, iter(dataset_from(0)), 3, FLAGS.sweep_steps)
    del trainer
    gc.collect()
    return steps_per_sec


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.sweep_models) - set(PAPER_NUM_SAMPLES))
    if unknown:
        raise app.UsageError(f"--sweep_models takes {sorted(PAPER_NUM_SAMPLES)}, got {unknown}")
    config = train_entry.run_config()
    task = training.validate(config)
    dataset_from = task.training_data()
    trainer = training.build_trainer(config, task)
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

    step_fn = trainer.train_step.get_concrete_function(episode)
    flops_per_step = count_flops(step_fn)
    steps_per_sec = 1.0 / float(np.median(step_times))
    batch_size = int(episode.targets.shape[0])
    result = {
        "paper_config": {
            "steps_per_sec": steps_per_sec,
            "targets_per_sec": steps_per_sec * batch_size,
            "flops_per_step": flops_per_step,
            "achieved_flops_per_sec": flops_per_step * steps_per_sec,
            **peak_flops_per_sec(),
            "mean_steps_per_sec": len(step_times) / float(np.sum(step_times)),
            "p90_step_ms": 1000 * float(np.percentile(step_times, 90)),
            "bench_steps": FLAGS.bench_steps,
            "model": config.model.name,
            "batch_size": batch_size,
            "memory_size": int(episode.memory.shape[0]),
            "num_samples": num_samples,
        },
        "breakdown_ms": {
            "input_pipeline_per_episode": median_ms(lambda: next(iterator)),
            "memory_encoder_forward": median_ms(encoders),
            "forward": median_ms(forward),
            "forward_backward": median_ms(forward_backward),
            "full_step": median_ms(full_step),
        },
        "op_type_self_ms_per_step": op_type_profile(full_step),
    }
    paper = result["paper_config"]
    paper["fraction_of_conv_peak"] = paper["achieved_flops_per_sec"] / paper["peak_conv_flops_per_sec"]

    # Host time between steps: the same steps one call each, and --bench_steps_per_call to a call.
    per_call = FLAGS.bench_steps_per_call
    calls = max(1, FLAGS.bench_steps // per_call)
    trainer.train_steps(iterator, tf.constant(per_call))  # traces
    start = time.perf_counter()
    for _ in range(calls):
        trainer.train_steps(iterator, tf.constant(per_call))
    trainer.step.numpy()
    multi_step_ms = 1000 * (time.perf_counter() - start) / (calls * per_call)
    result["steps_per_call"] = {
        "steps_per_call": per_call,
        "steps_per_sec": 1000 / multi_step_ms,
        "mean_steps_per_sec_one_per_call": paper["mean_steps_per_sec"],
        "host_ms_per_step_saved": 1000 / paper["mean_steps_per_sec"] - multi_step_ms,
    }
    result.update({"run_config": dataclasses.asdict(config), "tensorflow": tf.__version__, "cpu_count": os.cpu_count()})
    if isinstance(task, tasks.FewShotTask):
        few_shot_comparisons(config, trainer, result)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(result, f, indent=2)
    print_tables(result)


def few_shot_comparisons(config: RunConfig, trainer: training.Trainer, result: dict) -> None:
    """The few-shot task's comparisons: a memory per target (the PyTorch VMA's work) and the sweep
    over |M| of VMA, soft attention and the VAE."""
    batch_size = config.episodes.few_shot_batch_size
    paper = result["paper_config"]
    per_target = per_target_memory_batches(config, 4)
    per_target_steps = timed_steps(trainer, _cycle(per_target), 3, FLAGS.sweep_steps)
    per_target_flops = count_flops(trainer.train_step.get_concrete_function(per_target[0]))
    result["per_target_memory"] = {
        "steps_per_sec": per_target_steps,
        "targets_per_sec": per_target_steps * batch_size,
        "memory_per_target": int(per_target[0].memory.shape[0]) // batch_size,
        "context_size": int(per_target[0].memory.shape[0]),
        "flops_per_step": per_target_flops,
        "achieved_flops_per_sec": per_target_flops * per_target_steps,
        # The most this step could do here: every FLOP at the conv peak.
        "targets_per_sec_at_conv_peak": paper["peak_conv_flops_per_sec"] / per_target_flops * batch_size,
        "pytorch_reference_targets_per_sec": FLAGS.pytorch_targets_per_sec,
    }

    result["memory_sweep"] = []
    for model_name in FLAGS.sweep_models:
        for memory_size in (int(m) for m in FLAGS.sweep_memory_sizes):
            point_config = sweep_config(config, model_name, memory_size)
            steps = sweep_point(point_config)
            result["memory_sweep"].append({
                "model": model_name,
                "memory_size": memory_size,
                "steps_per_sec": steps,
                "targets_per_sec": steps * point_config.episodes.few_shot_batch_size,
                "num_samples": point_config.train.num_samples,
            })
            print(json.dumps(result["memory_sweep"][-1]), flush=True)


def print_tables(result: dict) -> None:
    paper, per_call = result["paper_config"], result["steps_per_call"]
    print(f"paper config: {paper['steps_per_sec']:.2f} steps/s, {paper['targets_per_sec']:.0f} targets/s; "
          f"{paper['flops_per_step'] / 1e9:.2f} GFLOP/step = {paper['achieved_flops_per_sec'] / 1e9:.1f} GFLOP/s "
          f"({100 * paper['fraction_of_conv_peak']:.0f}% of the conv peak {paper['peak_conv_flops_per_sec'] / 1e9:.1f};"
          f" matmul peak {paper['peak_matmul_flops_per_sec'] / 1e9:.1f})")
    print("breakdown (ms): " + ", ".join(f"{name} {ms:.1f}" for name, ms in result["breakdown_ms"].items()))
    print(f"{per_call['steps_per_call']} steps per call: {per_call['steps_per_sec']:.2f} steps/s "
          f"({per_call['host_ms_per_step_saved']:.1f} ms of host time saved per step)")
    if "per_target_memory" not in result:
        return
    per_target = result["per_target_memory"]
    print(f"a memory per target ({per_target['memory_per_target']} images): {per_target['steps_per_sec']:.2f} steps/s, "
          f"{per_target['targets_per_sec']:.1f} targets/s, {per_target['achieved_flops_per_sec'] / 1e9:.1f} GFLOP/s; "
          f"{per_target['targets_per_sec_at_conv_peak']:.1f} targets/s at the conv peak")
    reference = per_target["pytorch_reference_targets_per_sec"]
    if reference:
        print(f"  = {per_target['targets_per_sec'] / reference:.2f}x the PyTorch VMA's {reference:.1f} targets/s "
              f"(at most {per_target['targets_per_sec_at_conv_peak'] / reference:.2f}x at the conv peak)")
    sizes = sorted({row["memory_size"] for row in result["memory_sweep"]})
    models = list(dict.fromkeys(row["model"] for row in result["memory_sweep"]))
    speed = {(row["model"], row["memory_size"]): row["steps_per_sec"] for row in result["memory_sweep"]}
    print("steps/s  " + "".join(f"{'|M|=' + str(size):>11}" for size in sizes))
    for model in models:
        print(f"{model:<15}" + "".join(f"{speed.get((model, size), float('nan')):>11.2f}" for size in sizes))
    if {"vma", "soft_attention"} <= set(models):
        print("vma / soft   " + "".join(f"{speed[('vma', size)] / speed[('soft_attention', size)]:>11.2f}"
                                        for size in sizes))


if __name__ == "__main__":
    app.run(main, argv=flagfiles.expand(sys.argv))  # shipped configurations by name
