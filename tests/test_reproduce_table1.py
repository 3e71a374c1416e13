"""reproduce_table1.py: one command trains a row, scores it under both samplers, and a later
command for another row reuses what is done."""

import json
import os
import subprocess
import sys

from conftest import REPO

TINY = ["--steps=2", "--num_sequences=2", "--classes=1,2"]


def _reproduce(data_dir: str, runs_dir: str, *flags: str) -> dict:
    subprocess.run([sys.executable, "reproduce_table1.py", f"--data_dir={data_dir}", f"--runs_dir={runs_dir}",
                    *TINY, *flags], cwd=REPO, check=True, capture_output=True)
    with open(os.path.join(runs_dir, "table1.json")) as f:
        return json.load(f)


def test_a_row_is_trained_scored_under_both_samplers_and_kept_when_another_row_runs(gmn_data_dir, tmp_path):
    table = _reproduce(gmn_data_dir, str(tmp_path), "--only=omniglot_gmn_avg1.flags", "--num_importance_samples=3")
    (name, first), = table["with_replacement"].items()
    assert name.startswith("GMN, C_train = 1, avg (2 steps,") and "K =" not in name
    second = table["distinct"][name]
    assert (first["sequence_sampling"], second["sequence_sampling"]) == ("with_replacement", "distinct")
    assert first["num_importance_samples"] == second["num_importance_samples"] == 3
    # The per-class draws do not depend on the sampler: scored once, under the first.
    assert "per_class" in first and "per_class" not in second
    assert all(value > 0 for row in first["table"].values() for value in row.values() if value is not None)
    evaluations = [os.path.join(tmp_path, "omniglot_gmn_avg1", "eval", f"table1_{s}.json")
                   for s in ("with_replacement", "distinct")]
    written = [os.path.getmtime(path) for path in evaluations]

    # Another row at another K: the first is shown as scored before, with its K, and not rescored.
    table = _reproduce(gmn_data_dir, str(tmp_path), "--only=omniglot_table1_vae.flags", "--num_importance_samples=4")
    names = list(table["with_replacement"])
    assert len(names) == 2 and names[0] == name.replace(")", ", K = 3)")
    assert names[1].startswith("VAE (2 steps,") and "K =" not in names[1]
    assert table["with_replacement"][names[0]] == first
    assert [os.path.getmtime(path) for path in evaluations] == written
    with open(os.path.join(tmp_path, "table1.md")) as f:
        markdown = f.read()
    assert markdown.count(names[0]) >= 2 and os.path.isfile(os.path.join(tmp_path, "table1.png"))
