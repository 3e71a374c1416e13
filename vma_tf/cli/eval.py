"""Evaluates a trained run on its test split: `python eval.py --logdir=DIR --mode=MODE` (or `vma-eval`).

Modes: nll (importance-sampled test NLL and its decomposition), conditional (Table 1),
memory_sweep (Figure 5), classification (few-shot accuracy), samples (Figures 3 and 4A, 2B for
a learned memory, or plain samples); export writes the SavedModel LOGDIR/saved_model from the
latest checkpoint; curves draws LOGDIR/metrics.jsonl (loss, KL terms against the step) to
LOGDIR/eval/curves.png, also while the run trains. Every model serves nll, samples and export;
conditional and memory_sweep need Omniglot's classes; classification needs a model with a
memory of labelled entries. Writes LOGDIR/eval/<mode>.json (or --output_json), a Markdown table
beside it and PNGs (conditional.png, memory_sweep.png, classification.png, samples_*.png).
"""

import dataclasses
import os
import sys

from absl import app, flags, logging

from vma_tf.cli import commands
from vma_tf.cli.tensorflow_logs import VERBOSE_HELP, quiet_tensorflow
from vma_tf.config import SEQUENCE_SAMPLINGS, EvalConfig, from_flag_values, integer_lists
from vma_tf.errors import UserInputError

flags.DEFINE_string("logdir", None, "A training run's logdir (config.json and checkpoints/).", required=True)
flags.DEFINE_enum(
    "mode",
    "nll",
    ["nll", "conditional", "memory_sweep", "classification", "samples", "export", "curves"],
    "What to evaluate; export writes LOGDIR/saved_model instead, curves LOGDIR/eval/curves.png of metrics.jsonl.",
)
flags.DEFINE_string("data_dir", None, "Dataset root, if not the one the run was trained with.")
flags.DEFINE_string("cache_dir", None, "Preprocessed-array cache, if not the run's.")
flags.DEFINE_string("output_json", None, "Result file (default LOGDIR/eval/<mode>.json); .md and .png beside it.")
flags.DEFINE_integer("seed", EvalConfig.seed, "Seeds every task and every sample: same seed, same numbers.")
flags.DEFINE_integer(
    "num_importance_samples", EvalConfig.num_importance_samples, "K of every likelihood bound (5000 works too)."
)
flags.DEFINE_integer(
    "pairs_per_call", EvalConfig.pairs_per_call, "Sample-target pairs per model call: sets peak memory, not results."
)
flags.DEFINE_integer("num_episodes", EvalConfig.num_episodes, "nll: test batches shaped like the training batches.")
flags.DEFINE_integer(
    "recall_memory_size", EvalConfig.recall_memory_size,
    "nll, samples of a recall run: test images in memory (0: the run's |M|)."
)
flags.DEFINE_alias("memory_size", "recall_memory_size")
flags.DEFINE_list("classes", [str(value) for value in EvalConfig.classes], "conditional: classes C per sequence.")
flags.DEFINE_list("shots", [str(value) for value in EvalConfig.shots], "conditional: conditioning images n.")
flags.DEFINE_integer("num_sequences", EvalConfig.num_sequences, "conditional: sequences of 20 images per C.")
flags.DEFINE_enum(
    "sequence_sampling", EvalConfig.sequence_sampling, ["", *SEQUENCE_SAMPLINGS],
    "conditional: distinct, or with_replacement (the GMN authors' sampler); empty: the run's own.",
)
flags.DEFINE_bool(
    "per_class", EvalConfig.per_class,
    "conditional: also the VMA paper's table (n drawings of each of C classes; models that read a context).",
)
flags.DEFINE_integer(
    "probe_episodes", EvalConfig.probe_episodes, "conditional: draws of the copy and same-class probes (0: none)."
)
flags.DEFINE_list(
    "sweep_classes", [str(value) for value in EvalConfig.sweep_classes], "memory_sweep A: test classes in memory."
)
flags.DEFINE_integer("sweep_fixed_shots", EvalConfig.sweep_fixed_shots, "memory_sweep A: images per class in memory.")
flags.DEFINE_list(
    "sweep_shots",
    [str(value) for value in EvalConfig.sweep_shots],
    "memory_sweep B: images per class with every test class in memory.",
)
flags.DEFINE_list(
    "sweep_tiled_sizes",
    [str(value) for value in EvalConfig.sweep_tiled_sizes],
    "memory_sweep B past the test split: memories of the test images tiled to these sizes (VMA).",
)
flags.DEFINE_integer(
    "sweep_memories", EvalConfig.sweep_memories, "memory_sweep: draws per point (shared by all points)."
)
flags.DEFINE_integer(
    "sweep_targets",
    EvalConfig.sweep_targets,
    "memory_sweep: targets per draw (A: of one class; B: of as many classes).",
)
flags.DEFINE_list(
    "classification_tasks",
    [str(value) for value in EvalConfig.classification_tasks],
    "classification: tasks named <N>way<k>shot.",
)
flags.DEFINE_integer(
    "classification_episodes", EvalConfig.classification_episodes, "classification: episodes per task."
)
flags.DEFINE_integer(
    "queries_per_class", EvalConfig.queries_per_class, "classification: query images per class and episode."
)
flags.DEFINE_integer("iw_samples", EvalConfig.iw_samples, "classification: K of the importance-weighted p(c|x).")
flags.DEFINE_integer("sample_rows", EvalConfig.sample_rows, "samples: rows of each figure.")
flags.DEFINE_integer("samples_per_row", EvalConfig.samples_per_row, "samples: samples from p(x|M) per memory image.")
flags.DEFINE_bool("verbose", False, VERBOSE_HELP)

FLAGS = flags.FLAGS
_INTEGER_LISTS = ("classes", "shots", "sweep_classes", "sweep_shots", "sweep_tiled_sizes")


def eval_config() -> EvalConfig:
    return dataclasses.replace(from_flag_values(EvalConfig, FLAGS), **integer_lists(FLAGS, _INTEGER_LISTS))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with quiet_tensorflow(FLAGS.verbose):
        from vma_tf import export
        from vma_tf.evaluation import reports, runner

    try:
        if FLAGS.mode == "export":
            logging.info("exported %s", export.export_run(FLAGS.logdir))
            return
        if FLAGS.mode == "curves":
            runner.training_curves(FLAGS.logdir, FLAGS.output_json)
            return
        result = runner.run_evaluation(
            FLAGS.logdir, FLAGS.mode, eval_config(), FLAGS.data_dir, FLAGS.cache_dir, FLAGS.output_json
        )
    except UserInputError as e:
        sys.exit(f"{os.path.basename(argv[0])}: error: {e}")
    logging.info("\n%s", reports.MARKDOWN[FLAGS.mode](result))


def run() -> None:
    """The `vma-eval` command."""
    commands.run(main, __name__, __doc__)


if __name__ == "__main__":
    run()
