"""Reproduces Table 1 of both papers (conditional NLL on Omniglot sequences) in one command:

    python reproduce_table1.py --data_dir=../shared/data [--runs_dir=runs] [--steps=N]

Trains every flagfile of the table (a finished logdir is reused, an unfinished one resumed), runs
`eval.py --mode=conditional` on each and writes RUNS_DIR/table1.md (and .json): every run's rows
with the published rows under them. --steps caps each run's training (default: its flagfile's).
"""

import json
import os
import subprocess
import sys

from absl import app, flags

# (row name, flagfile); each flagfile names its own logdir under runs/.
TABLE1_RUNS = (
    ("GMN (this package)", "omniglot_gmn.flags"),
    ("GMN, conditional (this package)", "omniglot_gmn_conditional.flags"),
    ("GMN, C_train = 1, avg (this package)", "omniglot_gmn_avg1.flags"),
    ("GMN, C_train = 2, avg (this package)", "omniglot_gmn_avg2.flags"),
    ("VMA (this package)", "omniglot_table1_vma.flags"),
    ("VAE (this package)", "omniglot_table1_vae.flags"),
)

flags.DEFINE_string("data_dir", None, "Dataset root laid out like shared/data; None: TFDS.")
flags.DEFINE_string("runs_dir", "runs", "Where each flagfile's logdir goes (runs/<name> by default).")
flags.DEFINE_integer("steps", None, "Cap on every run's training steps (default: each flagfile's).")
flags.DEFINE_list("only", [], "Flagfiles to include (default: all of the table).")
flags.DEFINE_integer("num_sequences", 100, "conditional: sequences of 20 images per C.")
flags.DEFINE_integer("num_importance_samples", 1000, "K of every bound.")
flags.DEFINE_list("classes", ["1", "2", "4"], "conditional: C.")
FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))


def _logdir(flagfile: str) -> str:
    with open(os.path.join(HERE, flagfile)) as f:
        named = [line.split("=", 1)[1].strip() for line in f if line.startswith("--logdir=")]
    return os.path.join(FLAGS.runs_dir, os.path.basename(named[-1]))


def _run(arguments: list[str]) -> None:
    print("+", " ".join(arguments), flush=True)
    completed = subprocess.run([sys.executable, *arguments], cwd=HERE)
    if completed.returncode:
        sys.exit(f"reproduce_table1.py: error: {' '.join(arguments[:2])} exited with {completed.returncode}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from vma_tf.evaluation import reports

    data = [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
    results = {}
    for name, flagfile in TABLE1_RUNS:
        if FLAGS.only and flagfile not in FLAGS.only:
            continue
        logdir = os.path.abspath(_logdir(flagfile))
        steps = [f"--steps={FLAGS.steps}"] if FLAGS.steps else []
        _run(["train.py", f"--flagfile={flagfile}", f"--logdir={logdir}", *data, *steps])
        output = os.path.join(logdir, "eval", "table1_conditional.json")
        _run([
            "eval.py", f"--logdir={logdir}", "--mode=conditional", f"--output_json={output}", *data,
            f"--num_sequences={FLAGS.num_sequences}", f"--num_importance_samples={FLAGS.num_importance_samples}",
            f"--classes={','.join(FLAGS.classes)}",
        ])
        with open(output) as f:
            result = json.load(f)
        results[f"{name}, {result['meta']['checkpoint_step']} steps"] = result
    os.makedirs(FLAGS.runs_dir, exist_ok=True)
    table = os.path.join(FLAGS.runs_dir, "table1.md")
    with open(table, "w") as f:
        f.write(reports.table1_markdown(results))
    with open(os.path.join(FLAGS.runs_dir, "table1.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {table}")


if __name__ == "__main__":
    app.run(main)
