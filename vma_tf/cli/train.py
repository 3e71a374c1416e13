"""Trains a model (VMA by default): `python train.py --flagfile=omniglot.flags --logdir=DIR [--model=vae]`,
or `vma-train ...` once the package is installed.

Rerunning the same command resumes from the latest checkpoint in --logdir.
"""

import copy
import dataclasses
import os
import re
import signal
import sys

from absl import app, flags

import vma_tf
from vma_tf.cli import commands, flagfiles
from vma_tf.cli.tensorflow_logs import VERBOSE_HELP, quiet_tensorflow
from vma_tf.config import (
    MEMORY_INITS,
    SEQUENCE_SAMPLINGS,
    STRATEGIES,
    TASKS,
    DataConfig,
    EpisodeConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    from_flag_values,
    integer_lists,
)
from vma_tf.errors import RunDivergedError, RunInterruptedError, UserInputError

# Data
flags.DEFINE_enum(
    "dataset", DataConfig.dataset, ["omniglot", "omniglot_gmn", "mnist"],
    "omniglot, omniglot_gmn (the GMN authors' 28x28 arrays, Lake split) or mnist (Larochelle's binarized MNIST)."
)
flags.DEFINE_string(
    "data_dir", DataConfig.data_dir, "Dataset root laid out like shared/data (omniglot/, binarized_mnist/); None: TFDS."
)
flags.DEFINE_string(
    "cache_dir", DataConfig.cache_dir, "Preprocessed-array cache (default $VMA_CACHE_DIR or ~/.cache/vma_tf)."
)
flags.DEFINE_enum(
    "split",
    DataConfig.split,
    ["45_5", "lake", "drawings"],
    "Omniglot split: 45/5 alphabets (paper), Lake's, or drawings (15 of each character train, 5 test).",
)
flags.DEFINE_integer(
    "image_size", DataConfig.image_size, "Omniglot: 26 (104 crop, 4x4 max-pool; the paper) or 28 (112 pad). MNIST: 28."
)
# Episodes
flags.DEFINE_integer("classes_per_batch", EpisodeConfig.classes_per_batch, "Character classes per training batch.")
flags.DEFINE_integer(
    "targets_per_class", EpisodeConfig.targets_per_class, "Target images per class; batch = classes x targets."
)
flags.DEFINE_integer(
    "memory_per_class", EpisodeConfig.memory_per_class, "Memory images per class, disjoint from the targets."
)
flags.DEFINE_integer(
    "confounding_classes", EpisodeConfig.confounding_classes, "Extra classes that put images in memory only."
)
# Sequences
flags.DEFINE_integer("sequence_length", EpisodeConfig.sequence_length, "--task=sequence: images per sequence (T).")
flags.DEFINE_integer(
    "sequences_per_batch", EpisodeConfig.sequences_per_batch, "--task=sequence: sequences per training batch."
)
flags.DEFINE_integer(
    "sequence_classes", EpisodeConfig.sequence_classes, "--task=sequence: classes per sequence (GMN's C_train)."
)
flags.DEFINE_enum(
    "sequence_sampling",
    EpisodeConfig.sequence_sampling,
    list(SEQUENCE_SAMPLINGS),
    "--task=sequence: distinct classes and drawings, or with_replacement (the GMN authors' sampler; "
    "a sequence may repeat a drawing). Also eval.py --mode=conditional's.",
)
flags.DEFINE_boolean(
    "sequence_classes_first",
    EpisodeConfig.sequence_classes_first,
    "--task=sequence: the first --sequence_classes positions hold one drawing of each class and are not "
    "scored (the GMN authors' layout for models without a pseudo-input). Also eval.py --mode=conditional's.",
)
# Task: where the memory comes from
flags.DEFINE_enum(
    "task",
    RunConfig.task,
    list(TASKS),
    "few_shot: other images of the targets' classes each step; recall: --memory_size random "
    "training images each step, the targets drawn from them; learned: trainable entries; "
    "none: batches of images without a memory (--model=vae); sequence: sequences of images, "
    "each reading the ones before it (GMN, and both papers' Table 1).",
)
flags.DEFINE_integer("memory_size", EpisodeConfig.recall_memory_size, "|M| of a recall or learned memory.")
flags.DEFINE_enum(
    "memory_init",
    ModelConfig.memory_init,
    list(MEMORY_INITS),
    "Learned memory only: data (random training images; vectors: a fixed random projection of them) or "
    "random (blobs, or N(0, 0.1^2) vectors); see README.",
)
flags.DEFINE_integer(
    "memory_dim",
    ModelConfig.memory_dim,
    "Learned memory only: 0 for image entries, else vector entries of this size "
    "(--model_arch=mlp; the paper's MNIST runs: 256).",
)
flags.DEFINE_integer(
    "images_per_batch", EpisodeConfig.images_per_batch, "Targets per step of the recall, learned and none tasks."
)
# Model
flags.DEFINE_string(
    "model",
    ModelConfig.name,
    "vma; a baseline with VMA's conv nets: vae (no memory), soft_attention (memory read by attention on z); "
    "or gmn (Generative Matching Networks, --task=sequence).",
)
flags.DEFINE_enum(
    "model_arch",
    ModelConfig.model_arch,
    ["conv", "mlp", "resnet"],
    "conv nets (VMA paper 4.2), MLPs (4.1) or GMN's residual nets (GMN paper, appendix C; 28x28).",
)
flags.DEFINE_list(
    "mlp_units",
    [str(units) for units in ModelConfig.mlp_units],
    "Hidden layers of every MLP of --model_arch=mlp (decoder reversed).",
)
flags.DEFINE_integer("latent_dim", ModelConfig.latent_dim, "|z|.")
flags.DEFINE_integer(
    "embed_dim", ModelConfig.embed_dim, "Matching space of q(a|x) and p(a) (GMN: of its attention)."
)
flags.DEFINE_integer("conv_channels", ModelConfig.conv_channels, "Feature maps of every conv layer (paper: 48 or 64).")
flags.DEFINE_integer(
    "hidden_units", ModelConfig.hidden_units, "Hidden units of the MLP heads (GMN: and its controllers' state)."
)
flags.DEFINE_enum("prior", ModelConfig.prior, ["learned", "flat"], "p(a): learned query or uniform.")
flags.DEFINE_bool(
    "tie_embeddings", ModelConfig.tie_embeddings, "One embedding net for memory and query (h_q = h); see README."
)
flags.DEFINE_bool(
    "gmn_pseudo_input", ModelConfig.gmn_pseudo_input, "GMN: a learned pseudo-input (false: the 'conditional' GMN)."
)
flags.DEFINE_enum("gmn_attention", ModelConfig.gmn_attention, ["full", "avg"], "GMN: attention, or the mean (avg).")
flags.DEFINE_integer("gmn_hops", ModelConfig.gmn_hops, "GMN: attention passes of the shared controller.")
flags.DEFINE_integer("gmn_prior_hops", ModelConfig.gmn_prior_hops, "GMN: attention passes of the prior's controller.")
flags.DEFINE_enum(
    "gmn_matching", ModelConfig.gmn_matching, ["paper", "authors_code"],
    "GMN: the paper's dot product of f and g, or the authors' code: strength beta(h) x cosine of f and psi.",
)
# Optimisation
flags.DEFINE_string("logdir", TrainConfig.logdir, "Checkpoints, TensorBoard events, metrics.jsonl, config.json.")
flags.DEFINE_integer("steps", TrainConfig.steps, "Total number of training steps.")
flags.DEFINE_integer("seed", TrainConfig.seed, "Seeds initialisation, episodes and every sample.")
flags.DEFINE_integer("num_samples", TrainConfig.num_samples, "K, posterior samples per target (VIMCO needs K >= 2).")
flags.DEFINE_enum(
    "vimco_baseline", TrainConfig.vimco_baseline, ["geometric", "arithmetic"], "VIMCO leave-one-out baseline."
)
flags.DEFINE_float("learning_rate", TrainConfig.learning_rate, "Adam learning rate (before the first boundary).")
flags.DEFINE_list(
    "learning_rate_boundaries", [], "Steps after which the rate changes to the next --learning_rate_values entry."
)
flags.DEFINE_list("learning_rate_values", [], "The rates after each of --learning_rate_boundaries.")
flags.DEFINE_float("adam_beta_2", TrainConfig.adam_beta_2, "Adam's beta_2 (the GMN authors: 0.99).")
flags.DEFINE_float("adam_epsilon", TrainConfig.adam_epsilon, "Adam's epsilon (the GMN authors: 1e-8).")
flags.DEFINE_float("weight_decay", TrainConfig.weight_decay, "L2 weight decay coefficient (never on a learned memory).")
flags.DEFINE_integer("checkpoint_every", TrainConfig.checkpoint_every, "Steps between checkpoints.")
flags.DEFINE_integer("max_checkpoints", TrainConfig.max_checkpoints, "Checkpoints kept.")
flags.DEFINE_integer(
    "log_every", TrainConfig.log_every, "Steps between progress lines, metrics.jsonl rows and scalar summaries."
)
flags.DEFINE_integer(
    "image_summary_every", TrainConfig.image_summary_every, "Steps between image and histogram summaries."
)
flags.DEFINE_enum(
    "mixed_precision",
    TrainConfig.mixed_precision,
    ["float32", "mixed_bfloat16", "mixed_float16"],
    "Keras dtype policy; distributions stay float32. mixed_float16 is for GPUs.",
)
flags.DEFINE_bool("jit_compile", TrainConfig.jit_compile, "XLA-compile the step (slower on CPU, try on GPU).")
flags.DEFINE_integer(
    "steps_per_call",
    TrainConfig.steps_per_call,
    "Training steps per compiled call (one host dispatch each); the rows and checkpoints do not depend on it.",
)
flags.DEFINE_enum(
    "strategy",
    TrainConfig.strategy,
    list(STRATEGIES),
    "tf.distribute: one device, every local device (mirrored), or the hosts of TF_CONFIG (multi_worker).",
)
flags.DEFINE_float(
    "clip_global_norm", TrainConfig.clip_global_norm, "Clip the gradient to this global norm; 0: no clipping."
)
flags.DEFINE_integer(
    "max_nonfinite_steps",
    TrainConfig.max_nonfinite_steps,
    "Non-finite steps are skipped; this many in a row stop the run (0: never stop).",
)
flags.DEFINE_bool("verbose", False, VERBOSE_HELP)
flags.DEFINE_bool(
    "export", TrainConfig.export, "Write LOGDIR/saved_model (plain-TensorFlow signatures) when training ends."
)
# Second names of flags: the GMN paper's, and the names of the day that flagfiles may still hold.
ALIASES = {"gmn_train_classes": "sequence_classes", "memory": "task", "batch_size": "images_per_batch"}
for alias, original in ALIASES.items():
    flags.DEFINE_alias(alias, original)

FLAGS = flags.FLAGS


def run_config(values: flags.FlagValues = FLAGS) -> RunConfig:
    """The RunConfig that parsed flag values (the command line's, by default) describe."""
    lists = integer_lists(values, ("mlp_units", "learning_rate_boundaries"))
    try:
        rates = tuple(float(value) for value in values.learning_rate_values)
    except ValueError as e:
        raise UserInputError(f"--learning_rate_values takes comma-separated numbers ({e})") from e
    train = dataclasses.replace(
        from_flag_values(TrainConfig, values), learning_rate_boundaries=lists["learning_rate_boundaries"],
        learning_rate_values=rates,
    )
    data = from_flag_values(DataConfig, values)
    # config.json stores them resolved: eval.py finds the data from any working directory.
    folders = ("data_dir", "cache_dir")
    data = dataclasses.replace(data, **{name: os.path.abspath(getattr(data, name)) for name in folders
                                        if getattr(data, name)})
    # --memory_size sizes the task's memory: each recall batch's random images, or with
    # --task=learned the memory the model trains.
    learned_memory_size = values.memory_size if values.task == "learned" else 0
    return RunConfig(
        task=values.task,
        data=data,
        episodes=from_flag_values(EpisodeConfig, values, recall_memory_size=values.memory_size),
        model=from_flag_values(ModelConfig, values, name=values.model, mlp_units=lists["mlp_units"],
                               learned_memory_size=learned_memory_size),
        train=train,
    )


def run_config_from_flagfile(path: str, **overrides) -> RunConfig:
    """The RunConfig of `train.py --flagfile=path --name=value ...` for each override (lists may be
    Python lists), parsed into a copy of this command's flags: the command line's are untouched.
    `path` may name a shipped configuration from anywhere ("omniglot.flags"); a flagfile's own
    --flagfile lines are read relative to its folder, the overrides' paths relative to the working
    directory."""
    arguments = flagfiles.expand(["train.py", f"--flagfile={path}"])
    values = flags.FlagValues()
    for flag in FLAGS.get_flags_for_module(__name__):
        if flag.name not in ALIASES:
            values[flag.name] = copy.deepcopy(flag)
    for alias, original in ALIASES.items():  # an alias sets the flag it was defined on: define it anew
        flags.DEFINE_alias(alias, original, flag_values=values)
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise UserInputError(f"unknown setting(s) {', '.join(unknown)}: pass train.py's flag names")

    def argument(name: str, value) -> str:
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return f"--{name}={str(value).lower() if isinstance(value, bool) else value}"

    try:
        values(arguments)
        values(["train.py", *(argument(name, value) for name, value in overrides.items())])
    except flags.Error as e:
        raise UserInputError(str(e)) from None
    return run_config(values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with quiet_tensorflow(FLAGS.verbose):
        import tensorflow as tf

    try:
        vma_tf.train(run_config())
    except (UserInputError, RunDivergedError) as e:
        sys.exit(f"{os.path.basename(argv[0])}: error: {e}")
    except (MemoryError, tf.errors.ResourceExhaustedError) as e:
        allocation = re.search(r"OOM when allocating tensor with shape\[[\d,]*\]", str(e))
        cause = allocation[0] if allocation else type(e).__name__
        sys.exit(f"{os.path.basename(argv[0])}: error: out of memory ({cause}): the model or its batch is too "
                 "large for this machine; lower --num_samples, the batch, --latent_dim, --conv_channels "
                 "or --memory_size")
    except RunInterruptedError as e:
        print(f"{os.path.basename(argv[0])}: {e}", file=sys.stderr)
        sys.exit(128 + e.signal_number)
    except KeyboardInterrupt:  # before the first step or after the last: no step was lost
        print(f"{os.path.basename(argv[0])}: interrupted outside the training loop; the checkpoints are as they were",
              file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def run() -> None:
    """The `vma-train` command."""
    commands.run(main, __name__, __doc__)


if __name__ == "__main__":
    run()
