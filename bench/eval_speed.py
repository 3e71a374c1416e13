"""Test-time speed of an addressed model, and how it scales to memories of a million entries.

    python bench/eval_speed.py --run=runs/omniglot --data_dir=../shared/data
    python bench/eval_speed.py --flagfile=omniglot.flags --data_dir=../shared/data   # untrained

Writes `--output` (JSON) and prints a table:
- nll_k1000_images_per_sec: test images scored per second by the K = 1000 bound with the
  paper's few-shot memory (|M| = 32: 8 classes x 4 images), as `eval.py --mode=nll` scores them.
- memory_scaling: for each of `--memory_sizes`, in a fresh process (so that its peak RSS is its
  own): the time to encode the memory once (`encode_context`: the embeddings, in chunks), then
  per query (one test image, the median of `--queries` calls) the time of q(a|x), of `sample`
  (`--samples_per_call` draws from p(x|M)) and of the K = 1000 bound.

Memories larger than the test split are the test images tiled: copies after the first are
shifted by up to two pixels and have 1% of their pixels flipped (`data.flat_images.tiled_images`).
A trained run (`--run`) makes the bound's cost realistic: it computes decoder features for the
distinct entries q(a|x) draws, many for an untrained model and few for a trained one.
"""

import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from vma_tf import checkpoints, tasks  # noqa: E402
from vma_tf.cli import flagfiles  # noqa: E402
from vma_tf.cli import train as train_entry  # noqa: E402  (defines the training flags)
from vma_tf.config import EvalConfig  # noqa: E402
from vma_tf.data import flat_images  # noqa: E402
from vma_tf.evaluation.bounds import BoundEvaluator  # noqa: E402
from vma_tf.models import AddressedMemory, build_model  # noqa: E402
from vma_tf.seeds import seed_for  # noqa: E402

flags.DEFINE_string("run", None, "A trained run's logdir (default: an untrained model from the flags).")
flags.DEFINE_list("memory_sizes", ["32", "2500", "10000", "100000", "1000000"], "Test-time memory sizes.")
flags.DEFINE_integer("queries", 10, "Queries timed per memory size (the median is reported).")
flags.DEFINE_integer("samples_per_call", 10, "Draws per `sample` call.")
flags.DEFINE_integer("num_importance_samples", 1000, "K of the bound.")
flags.DEFINE_integer("nll_episodes", 4, "Few-shot test episodes of 32 targets timed for nll_k1000_images_per_sec.")
flags.DEFINE_integer("only_memory_size", 0, "Internal: measure this one memory size and print its JSON row.")
flags.DEFINE_string("output", "bench/results/eval_speed.json", "Where the JSON goes.")
FLAGS = flags.FLAGS


def _model_and_config():
    if FLAGS.run:
        config, model, _ = checkpoints.restore_model(FLAGS.run)
        return model, config
    config = train_entry.run_config()
    return build_model(config.model, config.data.image_size), config


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_seconds(fn, repeats: int) -> float:
    fn()  # traces
    return float(np.median([_seconds(fn) for _ in range(repeats)]))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def memory_row(memory_size: int) -> dict:
    """Encode, query, sample and bound times at one memory size, and this process's peak RSS."""
    model, config = _model_and_config()
    if not isinstance(model, AddressedMemory):
        raise SystemExit(f"eval_speed.py measures addressed models; --model={config.model.name} is not one")
    test = flat_images.flattened(tasks.load_test_split(config.data))
    memory, _ = flat_images.tiled_images(test, memory_size, seed=0)
    memory = tf.constant(memory[..., None], tf.float32)
    del test
    queries = tf.constant(flat_images.flattened(tasks.load_test_split(config.data))[: FLAGS.queries, ..., None],
                          tf.float32)
    evaluator = BoundEvaluator(model)
    image_spec = tf.TensorSpec([None, *memory.shape[1:]], tf.float32)
    encode = tf.function(model.encode_context, input_signature=[image_spec])
    encode(memory[:2])  # traces on a small memory: the timed call runs the graph only
    start = time.perf_counter()
    encoded = encode(memory)
    encoded.embeddings.numpy()  # waits for the encoding
    encode_seconds = time.perf_counter() - start

    posterior = tf.function(lambda x: model.address_posterior(x, encoded).probs_parameter())
    sample = tf.function(lambda seed: model.sample(encoded, FLAGS.samples_per_call, seed)["images"])
    seed = tf.constant([0, 0])
    index = iter(range(10**9))

    def one_query(fn):
        return lambda: fn(queries[next(index) % FLAGS.queries][None]).numpy()

    row = {
        "memory_size": memory_size,
        "encode_seconds": encode_seconds,
        "query_seconds": _median_seconds(one_query(posterior), FLAGS.queries),
        "sample_seconds": _median_seconds(lambda: sample(seed_for(0, next(index), 0)).numpy(), FLAGS.queries),
        "bound_seconds": _median_seconds(
            lambda: evaluator.bound(queries[next(index) % FLAGS.queries][None], encoded,
                                    FLAGS.num_importance_samples, seed),
            FLAGS.queries,
        ),
        "samples_per_call": FLAGS.samples_per_call,
        "num_importance_samples": FLAGS.num_importance_samples,
    }
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def nll_images_per_sec() -> float:
    """Targets per second of the K = 1000 bound on few-shot test episodes shaped like training's."""
    model, config = _model_and_config()
    evaluator = BoundEvaluator(model)
    test = tasks.load_test_split(config.data)
    batches, _ = tasks.build_task(config).test_batches(
        test, EvalConfig(num_episodes=FLAGS.nll_episodes + 1), lambda i: seed_for(0, i, 0)
    )
    run = [lambda b=b: evaluator(b.targets, b.memory, FLAGS.num_importance_samples, tf.constant([0, 0]), b.visible)
           for b in batches]
    run[0]()  # traces
    seconds = sum(_seconds(fn) for fn in run[1:])
    return sum(int(b.targets.shape[0]) for b in batches[1:]) / seconds


def main(argv):
    del argv
    if FLAGS.only_memory_size:
        print(json.dumps(memory_row(FLAGS.only_memory_size)))
        return
    passed = [arg for arg in sys.argv[1:] if not arg.startswith(("--output", "--memory_sizes"))]
    rows = []
    for size in (int(s) for s in FLAGS.memory_sizes):
        process = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *passed, f"--only_memory_size={size}"],
            capture_output=True, text=True,
        )
        if process.returncode:
            raise SystemExit(f"|M| = {size} failed:\n{process.stderr[-3000:]}")
        rows.append(json.loads(process.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    model, config = _model_and_config()
    result = {
        "nll_k1000_images_per_sec": nll_images_per_sec(),
        "memory_scaling": rows,
        "run": FLAGS.run,
        "model": config.model.name,
        "image_size": config.data.image_size,
        "tiling": "copies after the first: shifted by up to 2 pixels, 1% of pixels flipped",
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"K = {FLAGS.num_importance_samples} bound, |M| = 32: {result['nll_k1000_images_per_sec']:.2f} test images/s")
    print(f"{'|M|':>9} {'encode s':>9} {'µs/entry':>9} {'q(a|x) ms':>10} {'sample ms':>10} {'bound ms':>9} "
          f"{'peak RSS MB':>12}")
    for row in rows:
        print(f"{row['memory_size']:>9} {row['encode_seconds']:>9.2f} "
              f"{1e6 * row['encode_seconds'] / row['memory_size']:>9.1f} {1000 * row['query_seconds']:>10.2f} "
              f"{1000 * row['sample_seconds']:>10.2f} {1000 * row['bound_seconds']:>9.1f} {row['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    app.run(main, argv=flagfiles.expand(sys.argv))  # shipped configurations by name
