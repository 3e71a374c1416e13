"""Whether a learned memory stays in use across seeds and the CPU's rounding (issue 31); writes JSON.

    python bench/learned_memory_seeds.py --data_dir=../shared/data --runs_dir=../runs/learned_seeds \
        --output=bench/results/learned_memory_seeds.json

Trains each configuration of `--configurations` for `--steps` steps at every seed of `--seeds`, on
each rounding path of `--rounding` (onednn: TensorFlow's default CPU kernels; plain: with
TF_ENABLE_ONEDNN_OPTS=0, whose float sums round differently), and under each `--memory_inits`.
A run whose logdir already holds the last step is reused, so an interrupted command resumes.
For each run it reports, from the run's metrics.jsonl, KL(q(a|x)||p(a)) at the last step and its
minimum over the last `--window` steps (both ends included), I(x; a) and the loss (all nats). The bar of issue 31: KL_a
of at least 1 nat over steps 2,500-3,000 for every seed and both rounding paths.
"""

import json
import os
import subprocess
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vma_tf.evaluation import reports  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> train.py arguments
CONFIGURATIONS = {
    "omniglot28": ["--flagfile=omniglot28_learned.flags"],
    "mnist_vectors": ["--flagfile=mnist_learned.flags", "--memory_dim=256", "--tie_embeddings=false"],
}
ROUNDING = {"onednn": {}, "plain": {"TF_ENABLE_ONEDNN_OPTS": "0"}}

flags.DEFINE_string("data_dir", None, "Dataset root laid out like shared/data; None: TFDS.")
flags.DEFINE_string("runs_dir", None, "Where every run's logdir goes.")
flags.DEFINE_string("output", None, "Where the JSON goes.")
flags.DEFINE_list("configurations", list(CONFIGURATIONS), "Which of the configurations to train.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
flags.DEFINE_list("rounding", list(ROUNDING), "Rounding paths: onednn, plain.")
flags.DEFINE_list("memory_inits", ["data", "random"], "--memory_init values.")
flags.DEFINE_integer("steps", 3000, "Training steps of every run.")
flags.DEFINE_integer("window", 500, "The last steps whose smallest KL_a is reported.")
flags.mark_flags_as_required(["runs_dir", "output"])
FLAGS = flags.FLAGS


def _rows(logdir: str) -> list[dict]:
    path = os.path.join(logdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def _train(name: str, seed: str, rounding: str, memory_init: str) -> dict:
    logdir = os.path.join(FLAGS.runs_dir, f"{name}_{memory_init}_{rounding}_seed{seed}")
    rows = _rows(logdir)
    if not rows or rows[-1]["step"] < FLAGS.steps:
        data = [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
        command = [sys.executable, "train.py", *CONFIGURATIONS[name], *data, f"--logdir={logdir}",
                   f"--seed={seed}", f"--memory_init={memory_init}", f"--steps={FLAGS.steps}", "--log_every=100",
                   f"--checkpoint_every={FLAGS.steps}", f"--image_summary_every={FLAGS.steps}", "--export=false"]
        print("+", " ".join(command), flush=True)
        completed = subprocess.run(command, cwd=HERE, env={**os.environ, **ROUNDING[rounding]})
        if completed.returncode:
            sys.exit(f"learned_memory_seeds.py: error: the run in {logdir} exited with {completed.returncode}")
        rows = _rows(logdir)
    last = rows[-1]
    window = [row["kl_a"] for row in rows if row["step"] >= FLAGS.steps - FLAGS.window]
    return {"configuration": name, "memory_init": memory_init, "rounding": rounding, "seed": int(seed),
            "steps": last["step"], "kl_a": last["kl_a"], "kl_a_min_window": min(window),
            "address_information": last["address_information"], "loss_nats": last["loss_nats"], "logdir": logdir}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = set(FLAGS.configurations) - set(CONFIGURATIONS) | set(FLAGS.rounding) - set(ROUNDING)
    if unknown:
        raise app.UsageError(f"unknown configuration or rounding path: {sorted(unknown)}")
    runs = [_train(name, seed, rounding, memory_init)
            for name in FLAGS.configurations for memory_init in FLAGS.memory_inits
            for rounding in FLAGS.rounding for seed in FLAGS.seeds]
    for run in runs:
        print(f"{run['configuration']:14} {run['memory_init']:7} {run['rounding']:7} seed {run['seed']}: KL_a "
              f"{run['kl_a']:.3f} (min {run['kl_a_min_window']:.3f} over the last {FLAGS.window} steps), "
              f"I(x; a) {run['address_information']:.3f}, loss {run['loss_nats']:.2f}")
    with open(FLAGS.output, "w") as f:
        json.dump({"machine": reports.machine_description(),
                   "steps": FLAGS.steps, "window": FLAGS.window, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
