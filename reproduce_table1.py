"""Reproduces Table 1 of both papers (conditional NLL on the GMN authors' Omniglot) in one command:

    python reproduce_table1.py --data_dir=../shared/data [--runs_dir=runs] [--steps=N]

Trains every row's flagfile (a finished logdir is reused, an unfinished one resumed), then runs
`eval.py --mode=conditional` on each under both sequence samplers: the GMN authors' (with
replacement) and distinct drawings. The VMA paper's per-class table does not depend on the
sampler, so it is computed under the first only. An evaluation already written for a run's latest
checkpoint with the same draws and K is reused, so a command interrupted in one session picks up
in the next where it stopped. `--only` trains and evaluates some rows; the table still shows
every row evaluated before (its K named where it differs). Writes RUNS_DIR/table1.md (every row
beside the published ones, with each row's budget), table1.json and table1.png (NLL against n,
one panel per C and sampler; ours solid, the papers' dashed).
"""

import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

# (row name, flagfile); each flagfile names its own logdir under runs/.
TABLE1_RUNS = (
    ("GMN", "omniglot_gmn.flags"),
    ("GMN, conditional", "omniglot_gmn_conditional.flags"),
    ("GMN, C_train = 1, avg", "omniglot_gmn_avg1.flags"),
    ("GMN, C_train = 2, avg", "omniglot_gmn_avg2.flags"),
    ("VMA, trained on sequences", "omniglot_table1_vma.flags"),
    ("VMA, trained on few-shot episodes", "omniglot_table1_vma_fewshot.flags"),
    ("VAE", "omniglot_table1_vae.flags"),
)
SAMPLINGS = ("with_replacement", "distinct")

flags.DEFINE_string("data_dir", None, "Dataset root laid out like shared/data; None: TFDS.")
flags.DEFINE_string("runs_dir", "runs", "Where each flagfile's logdir goes (runs/<name> by default).")
flags.DEFINE_integer("steps", None, "Cap on every run's training steps (default: each flagfile's).")
flags.DEFINE_list("only", [], "Flagfiles to include (default: all of the table).")
flags.DEFINE_integer("num_sequences", 500, "conditional: draws per C (the same draws for every model).")
flags.DEFINE_integer("num_importance_samples", 1000, "K of every bound.")
flags.DEFINE_list("classes", ["1", "2", "4", "16"], "conditional: C.")
FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))


def _logdir(flagfile: str) -> str:
    """RUNS_DIR/<the folder name of the logdir the (shipped) flagfile names>."""
    from vma_tf.cli import flagfiles

    named = [flag.split("=", 1)[1] for flag in flagfiles.expand(["reproduce_table1.py", f"--flagfile={flagfile}"])
             if flag.startswith("--logdir=")]
    return os.path.join(FLAGS.runs_dir, os.path.basename(named[-1]))


def _run(arguments: list[str]) -> None:
    print("+", " ".join(arguments), flush=True)
    completed = subprocess.run([sys.executable, *arguments], cwd=HERE)
    if completed.returncode:
        sys.exit(f"reproduce_table1.py: error: {' '.join(arguments[:2])} exited with {completed.returncode}")


def _budget(logdir: str, step: int) -> str:
    """'<step> steps, <hours> h' of a run: its steps at the median rate of its metrics.jsonl rows.
    A sum over the rows would count the windows in which the run was paused (SIGSTOP) as training;
    the median is the rate the run kept most of the time (alone, or beside another run)."""
    from vma_tf import checkpoints

    with open(os.path.join(logdir, checkpoints.METRICS_FILE)) as f:
        rates = [row["steps_per_sec"] for row in map(json.loads, f) if row["step"] <= step and row.get("steps_per_sec")]
    hours = step / statistics.median(rates) / 3600 if rates else float("nan")
    return f"{step:,} steps, {hours:.1f} h"


def _output(logdir: str, sampling: str) -> str:
    return os.path.join(logdir, "eval", f"table1_{sampling}.json")


def _saved(logdir: str, sampling: str, any_k: bool) -> dict | None:
    """The run's conditional result under `sampling` already on disk, if it scores the run's newest
    checkpoint with this command's draws (and its K, unless any_k)."""
    from vma_tf import checkpoints

    if not os.path.isfile(_output(logdir, sampling)):
        return None
    newest = checkpoints.newest_whole_checkpoint(checkpoints.checkpoint_dir(logdir), set_aside=False)
    with open(_output(logdir, sampling)) as f:
        result = json.load(f)
    same = (
        newest is not None
        and result["meta"]["checkpoint_step"] == int(newest.rsplit("-", 1)[1])  # a checkpoint is numbered by its step
        and result["num_sequences"] == FLAGS.num_sequences
        and sorted(result["table"], key=int) == sorted(FLAGS.classes, key=int)
        and (any_k or result["num_importance_samples"] == FLAGS.num_importance_samples)
    )
    return result if same else None


def _evaluate(logdir: str, sampling: str, data: list[str]) -> dict:
    """The run's conditional result under `sampling`, computed unless already there (`_saved`)."""
    result = _saved(logdir, sampling, any_k=False)
    if result is not None:
        return result
    per_class = "true" if sampling == SAMPLINGS[0] else "false"  # the per-class draws ignore the sampler
    _run([
        "eval.py", f"--logdir={logdir}", "--mode=conditional", f"--output_json={_output(logdir, sampling)}", *data,
        f"--sequence_sampling={sampling}", f"--num_sequences={FLAGS.num_sequences}", f"--per_class={per_class}",
        f"--num_importance_samples={FLAGS.num_importance_samples}", f"--classes={','.join(FLAGS.classes)}",
    ])
    with open(_output(logdir, sampling)) as f:
        return json.load(f)


def _label(name: str, logdir: str, result: dict) -> str:
    """A row's name with its budget, and its K where it is not this command's."""
    k = result["num_importance_samples"]
    other_k = f", K = {k}" if k != FLAGS.num_importance_samples else ""
    return f"{name} ({_budget(logdir, result['meta']['checkpoint_step'])}{other_k})"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from vma_tf.evaluation import reports

    unknown = set(FLAGS.only) - {flagfile for _, flagfile in TABLE1_RUNS}
    if unknown:
        sys.exit(f"reproduce_table1.py: error: --only names no row of the table: {sorted(unknown)}")
    data = [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
    results: dict[str, dict[str, dict]] = {sampling: {} for sampling in SAMPLINGS}
    for name, flagfile in TABLE1_RUNS:
        logdir = os.path.abspath(_logdir(flagfile))
        if not FLAGS.only or flagfile in FLAGS.only:
            steps = [f"--steps={FLAGS.steps}"] if FLAGS.steps else []
            _run(["train.py", f"--flagfile={flagfile}", f"--logdir={logdir}", *data, *steps])
            evaluated = {sampling: _evaluate(logdir, sampling, data) for sampling in SAMPLINGS}
        else:  # not this command's to train: shown as evaluated before, if it was
            evaluated = {sampling: _saved(logdir, sampling, any_k=True) for sampling in SAMPLINGS}
        for sampling, result in evaluated.items():
            if result is not None:
                results[sampling][_label(name, logdir, result)] = result
    os.makedirs(FLAGS.runs_dir, exist_ok=True)
    machine = reports.machine_description()
    table = os.path.join(FLAGS.runs_dir, "table1.md")
    with open(table, "w") as f:
        f.write(f"Trained and evaluated on {machine}.\n\n")
        for sampling in SAMPLINGS:
            f.write(reports.table1_markdown(results[sampling]) + "\n")
    with open(os.path.join(FLAGS.runs_dir, "table1.json"), "w") as f:
        json.dump({"machine": machine, **results}, f, indent=1)
    reports.table1_figure(results, os.path.join(FLAGS.runs_dir, "table1.png"))
    print(f"wrote {table}")


if __name__ == "__main__":
    app.run(main)
