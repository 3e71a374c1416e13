"""Trains Variational Memory Addressing: `python train.py --flagfile=omniglot.flags --logdir=DIR`.

Rerunning the same command resumes from the latest checkpoint in --logdir.
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from vma_tf.config import (  # noqa: E402
    DataConfig,
    EpisodeConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    from_flag_values,
    integer_lists,
)
from vma_tf.errors import RunDivergedError, RunInterruptedError, UserInputError  # noqa: E402

# Data
flags.DEFINE_enum("dataset", "omniglot", ["omniglot", "mnist"], "omniglot, or mnist (Larochelle's binarized MNIST).")
flags.DEFINE_string("data_dir", None,
                    "Dataset root laid out like shared/data (omniglot/, binarized_mnist/); None: TFDS.")
flags.DEFINE_string("cache_dir", None, "Preprocessed-array cache (default $VMA_CACHE_DIR or ~/.cache/vma_tf).")
flags.DEFINE_enum("split", "45_5", ["45_5", "lake", "drawings"],
                  "Omniglot split: 45/5 alphabets (paper), Lake's, or drawings (15 of each character train, 5 test).")
flags.DEFINE_integer("image_size", 26, "Omniglot: 26 (104 crop, 4x4 max-pool; the paper) or 28 (112 pad). MNIST: 28.")
# Episodes
flags.DEFINE_integer("classes_per_batch", 8, "Character classes per training batch.")
flags.DEFINE_integer("targets_per_class", 4, "Target images per class; batch = classes x targets.")
flags.DEFINE_integer("memory_per_class", 4, "Memory images per class, disjoint from the targets.")
flags.DEFINE_integer("confounding_classes", 0, "Extra classes that put images in memory only.")
# Memory
flags.DEFINE_enum("memory", "few_shot", ["few_shot", "recall", "learned"],
                  "few_shot: other images of the targets' classes each step; recall: --memory_size random "
                  "training images each step, the targets drawn from them; learned: trainable entries.")
flags.DEFINE_integer("memory_size", 256, "|M| of a recall or learned memory.")
flags.DEFINE_integer("memory_dim", 0, "Learned memory only: 0 for image entries, else vector entries of this size "
                                      "(--model_arch=mlp; the paper's MNIST runs: 256).")
flags.DEFINE_integer("batch_size", 32, "Targets per step with a recall or learned memory.")
# Model
flags.DEFINE_enum("model_arch", "conv", ["conv", "mlp"], "conv nets (paper 4.2) or MLPs (paper 4.1).")
flags.DEFINE_list("mlp_units", ["256", "128"], "Hidden layers of every MLP of --model_arch=mlp (decoder reversed).")
flags.DEFINE_integer("latent_dim", 64, "|z|.")
flags.DEFINE_integer("embed_dim", 128, "Dimension of the matching space of q(a|x) and p(a).")
flags.DEFINE_integer("conv_channels", 48, "Feature maps of every conv layer (paper: 48 or 64).")
flags.DEFINE_integer("hidden_units", 256, "Hidden units of the MLP heads of q(z|x,m) and p(z|m).")
flags.DEFINE_enum("prior", "learned", ["learned", "flat"], "p(a): learned query or uniform.")
flags.DEFINE_bool("tie_embeddings", True, "One embedding net for memory and query (h_q = h); see README.")
# Optimisation
flags.DEFINE_string("logdir", "runs/vma", "Checkpoints, TensorBoard events, metrics.jsonl, config.json.")
flags.DEFINE_integer("steps", 100_000, "Total number of training steps.")
flags.DEFINE_integer("seed", 0, "Seeds initialisation, episodes and every sample.")
flags.DEFINE_integer("num_samples", 4, "K, posterior samples per target (VIMCO needs K >= 2).")
flags.DEFINE_enum("vimco_baseline", "geometric", ["geometric", "arithmetic"], "VIMCO leave-one-out baseline.")
flags.DEFINE_float("learning_rate", 3e-4, "Adam learning rate.")
flags.DEFINE_float("weight_decay", 0.0, "L2 weight decay coefficient (never on a learned memory).")
flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints.")
flags.DEFINE_integer("max_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("log_every", 100, "Steps between progress lines, metrics.jsonl rows and scalar summaries.")
flags.DEFINE_integer("image_summary_every", 1000, "Steps between image and histogram summaries.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy; distributions stay float32. mixed_float16 is for GPUs.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the step (slower on CPU, try on GPU).")
flags.DEFINE_float("clip_global_norm", 0.0, "Clip the gradient to this global norm; 0: no clipping.")
flags.DEFINE_integer("max_nonfinite_steps", 10,
                     "Non-finite steps are skipped; this many in a row stop the run (0: never stop).")
flags.DEFINE_list("poison_steps", [], "Test hook: these steps' targets become NaN (to exercise the skipping).")
flags.DEFINE_bool("export", True, "Write LOGDIR/saved_model (plain-TensorFlow signatures) when training ends.")

FLAGS = flags.FLAGS


def run_config():
    lists = integer_lists(FLAGS, ("poison_steps", "mlp_units"))
    train = dataclasses.replace(from_flag_values(TrainConfig, FLAGS), poison_steps=lists["poison_steps"])
    return RunConfig(
        data=from_flag_values(DataConfig, FLAGS),
        episodes=from_flag_values(EpisodeConfig, FLAGS),
        model=dataclasses.replace(from_flag_values(ModelConfig, FLAGS), mlp_units=lists["mlp_units"]),
        train=train,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from vma_tf import training

    try:
        training.train(run_config())
    except (UserInputError, RunDivergedError) as e:
        sys.exit(f"train.py: error: {e}")
    except RunInterruptedError as e:
        print(f"train.py: {e}", file=sys.stderr)
        sys.exit(128 + e.signal_number)


if __name__ == "__main__":
    app.run(main)
