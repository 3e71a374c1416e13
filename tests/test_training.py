"""train.py end to end: bad input, resuming, and a short real run whose bound improves."""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

TINY = [
    "--conv_channels=4", "--embed_dim=8", "--latent_dim=4", "--hidden_units=8",
    "--classes_per_batch=2", "--targets_per_class=2", "--memory_per_class=2",
    "--log_every=1", "--image_summary_every=5", "--checkpoint_every=3", "--steps=3", "--export=false",
]


def run_train(*args, check=True):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_metrics(logdir):
    with open(os.path.join(logdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def model_weights(logdir):
    """({name: tensor} of every variable in the latest checkpoint, the step). A checkpoint stores each
    variable once, under the first path that reaches it (the model's or the optimizer's), so this
    takes them all: the model's weights, the optimizer's state and the step."""
    reader = tf.train.load_checkpoint(os.path.join(logdir, "checkpoints"))
    dtypes = reader.get_variable_to_dtype_map()  # numbers only: not the model configuration, a string
    names = [n for n in dtypes if n.endswith("/.ATTRIBUTES/VARIABLE_VALUE") and dtypes[n] != tf.string]
    return {n: reader.get_tensor(n) for n in names}, int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_samples=1"], r"--num_samples must be at least 2 for --model=vma \(VIMCO\), got 1"),
        (["--model=vae", "--num_samples=0"], "--num_samples must be at least 1 for --model=vae, got 0"),
        (["--model=gmm"], r"--model must be one of \('vma', 'vae', 'soft_attention', 'gmn'\), got 'gmm'"),
        (["--model=vae", "--task=recall"],
         r"--task=recall but --model=vae trains with \('few_shot', 'none', 'sequence'\)"),
        (["--model=gmn"], r"--task=few_shot but --model=gmn trains with \('sequence',\)"),
        (["--model=gmn", "--task=sequence", "--model_arch=resnet"],
         "--model_arch=resnet .* pass --image_size=28, got 26"),
        (["--model=soft_attention", "--memory=learned"], "--task=learned but --model=soft_attention trains with"),
        (["--model=vae", "--model_arch=mlp"], r"--model_arch=mlp but --model=vae has nets for \('conv',\)"),
        (["--memory_per_class=0"], "--memory_per_class must be at least 1"),
        (["--learning_rate_boundaries=5", "--learning_rate_values=1e-4,1e-5"],
         "--learning_rate_boundaries has 1 steps but --learning_rate_values 2 rates"),
        (["--learning_rate_boundaries=5,3", "--learning_rate_values=1e-4,1e-5"],
         r"--learning_rate_boundaries must be increasing positive steps, got \[5, 3\]"),
        (["--learning_rate_boundaries=5", "--learning_rate_values=fast"], "--learning_rate_values takes comma-sep"),
        (["--adam_beta_2=1"], r"--adam_beta_2 must lie in \[0, 1\)"),
        (["--dataset=omniglot_gmn", "--split=lake"], "--dataset=omniglot_gmn holds 28x28 images: pass --image_size=28"),
        (["--classes_per_batch=1480", "--split=45_5"], "needs 1480 classes .* split has 1479"),
        (["--data_dir=/nonexistent"], "missing Omniglot archive /nonexistent/omniglot/images_background.zip"),
        (["--latent_dim=-1"], "--latent_dim must be positive, got -1"),
        (["--clip_global_norm=-1"], "--clip_global_norm and --max_nonfinite_steps must be non-negative"),
        (["--mlp_units=256,x"], "--mlp_units takes comma-separated integers"),
        (["--dataset=mnist", "--image_size=28"], "--task=few_shot needs labelled classes"),
        (["--task=recall", "--memory_dim=8"], "--memory_dim .* needs --task=learned"),
        (["--task=learned", "--memory_dim=-1"], "--memory_dim and --memory_size must not be negative"),
        (["--task=learned", "--memory_dim=8"], "--memory_dim .* needs --model_arch=mlp"),
        (["--task=learned", "--memory_dim=8", "--model_arch=mlp"], "need --tie_embeddings=false"),
        (["--task=learned", "--memory_size=0"], "--task=learned needs a learned memory: pass a positive --memory_size"),
        (["--task=recall", "--memory_size=0"], "--memory_size must be positive, got 0"),
        (["--task=recall", "--batch_size=0"], "--batch_size must be positive, got 0"),
        (["--task=recall", "--memory_size=30000"], "--memory_size=30000 but the training split has 29580 images"),
        (["--image_summary_every=0"], "--image_summary_every must be positive, got 0"),
        (["--max_checkpoints=0"], "--max_checkpoints must be positive, got 0"),
        (["--seed=-1"], r"--seed must lie in 0\.\.2\*\*31-1 \(stateless seeds are int32\), got -1"),
        (["--learning_rate=nan"], "--learning_rate must be a positive number, got nan"),
        (["--weight_decay=inf"], "--weight_decay must be a non-negative number, got inf"),
        (["--clip_global_norm=nan"], "--clip_global_norm and --max_nonfinite_steps must be non-negative"),
        (["--steps=1000000000000000000000"], "--steps must be at most 4,611,686,018,427,387,904"),
        (["--logdir=/dev/null"], "--logdir=/dev/null is a file, not a folder"),
        (["--logdir=/proc/vma_run"], r"cannot write in /proc/vma_run \("),  # as a read-only or full disk would
        # Issue 30: sizes the host cannot hold are refused before any allocation, not at the first one.
        (["--latent_dim=10000000"], r"training needs at least [\d,.]+ GiB \([\d,.]+ GiB of weights with their "
                                    r"gradients and Adam's slots\) but this host has"),
        (["--conv_channels=100000"], "GiB of weights with their gradients and Adam's slots"),
        (["--task=learned", "--memory_size=100000000"], "GiB of weights with their gradients and Adam's slots"),
        (["--num_samples=10000000"], r"and a [\d,.]+ GiB tensor in the decoder's output\) but this host has"),
        # K x targets past int32: refused before the step is traced (its shapes would overflow).
        (["--model=gmn", "--task=sequence", "--sequences_per_batch=20", "--num_samples=30000000"],
         r"GiB tensor in the decoder's output\) but"),
    ],
)
def test_bad_input_ends_with_one_line_error(flags, message, data_dir, cache_dir, tmp_path):
    # train.py's main in this process (a subprocess per case costs a TensorFlow import each);
    # the test below runs the command itself.
    args = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={tmp_path}", *TINY, *flags]
    error = train_main_in_process(args)
    assert "\n" not in error and error.startswith("train.py: error: ") and re.search(message, error), error
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_every_task_the_flags_name_has_a_class():
    from vma_tf import config, tasks

    assert tuple(tasks.TASK_CLASSES) == config.TASKS


def test_an_allocation_that_fails_after_the_estimate_ends_in_one_line(monkeypatch):
    from vma_tf import training

    def exhausted(config):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[4096,8192] and type")

    monkeypatch.setattr(training, "train", exhausted)
    assert train_main_in_process([]) == (
        "train.py: error: out of memory (OOM when allocating tensor with shape[4096,8192]): the model or its batch is "
        "too large for this machine; lower --num_samples, the batch, --latent_dim, --conv_channels or --memory_size")


def test_the_memory_estimate_counts_every_variable_four_times_and_the_decoders_output():
    """Checked against an independent count: the eager model's variables, and the decoder's
    Bernoulli logits [K, B, S, S, 1] in float32, which the step must hold at once."""
    import vma_tf
    from vma_tf import models, tasks, training
    from vma_tf.data.episodes import Episode

    config = vma_tf.config_from_flagfile("smoke.flags", num_samples=3, classes_per_batch=2, targets_per_class=2,
                                         memory_per_class=2)
    eager = models.build_model(config.model, 26)
    weights = 4 * 4 * sum(int(np.prod(v.shape)) for v in eager.variables)
    assert training.least_weight_bytes(config.model, config.data.image_size) == weights
    task = tasks.build_task(config)
    trainer = training.build_trainer(config, task)
    batch = Episode(tf.TensorSpec([4, 26, 26, 1]), tf.TensorSpec([4], tf.int32), tf.TensorSpec([4, 26, 26, 1]),
                    tf.TensorSpec([4], tf.int32))
    largest, layer = training.largest_tensor(trainer.train_step.get_concrete_function(batch).graph)
    assert largest >= 3 * 4 * 26 * 26 * 4 and layer


def train_main_in_process(args: list[str]) -> str:
    """The message train.py's main exits with, given command-line args (absl flags are parsed in
    this process and reset afterwards)."""
    from absl import flags

    from vma_tf.cli import train as train_entry

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", *args])
    try:
        train_entry.main(["train.py"])
    except SystemExit as e:
        return str(e.code)
    finally:
        flags.FLAGS.unparse_flags()
    raise AssertionError(f"train.py ran to the end with {args}")


def test_the_command_ends_bad_input_with_one_line(data_dir, cache_dir, tmp_path):
    result = run_train(f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={tmp_path}", *TINY,
                       "--num_samples=1", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "train.py: error: --num_samples must be at least 2 for --model=vma (VIMCO), got 1"), result.stderr[-2000:]
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


# The plain bound's model; VMA (VIMCO) resumes in the SIGKILL test of test_robustness.py, bitwise.
@pytest.mark.parametrize("name", ["vae"])
def test_rerunning_resumes_step_count_and_weights(name, data_dir, cache_dir, tmp_path):
    """A run of 6 steps rerun to 14 (its last checkpoint, at 6, lies inside the window of rows every 4
    steps) writes the rows, weights and step of a run of 14 steps."""
    common = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", *TINY, f"--model={name}", "--log_every=4"]
    resumed, straight = str(tmp_path / "resumed"), str(tmp_path / "straight")
    run_train(*common, f"--logdir={resumed}", "--steps=6")
    first_weights, first_step = model_weights(resumed)
    assert first_step == 6
    progress = run_train(*common, f"--logdir={resumed}", "--steps=14").stderr
    run_train(*common, f"--logdir={straight}", "--steps=14")
    # The resumed run's first row times steps 7-8 and the tracing: no ETA from it, one at step 12.
    etas = re.findall(r"step (\d+) .* ETA (\S+)", progress)
    assert etas[0] == ("8", "—") and re.fullmatch(r"12 \d+:\d\d:\d\d", " ".join(etas[1])), etas

    resumed_rows, straight_rows = read_metrics(resumed), read_metrics(straight)
    assert [row["step"] for row in resumed_rows] == [row["step"] for row in straight_rows] == [1, 4, 8, 12]
    for resumed_row, straight_row in zip(resumed_rows, straight_rows):  # the same windows: 5-8 spans the restart
        for metric in ("loss_nats", "recon_nats", "kl_z", "skipped_nonfinite"):
            assert resumed_row[metric] == pytest.approx(straight_row[metric], rel=1e-4), (metric, resumed_row)
    resumed_weights, resumed_step = model_weights(resumed)
    straight_weights, straight_step = model_weights(straight)
    assert resumed_step == straight_step == 14
    assert any(not np.array_equal(first_weights[n], resumed_weights[n]) for n in first_weights)
    for variable, value in straight_weights.items():
        np.testing.assert_allclose(resumed_weights[variable], value, rtol=1e-4, atol=1e-6, err_msg=variable)


def test_several_steps_per_call_write_the_rows_and_weights_of_one_and_resume_exactly(data_dir, cache_dir, tmp_path):
    """--steps_per_call=3 over 2 x 3 + 1 steps, stopped at step 4 and resumed (calls of 1 + 3, then
    1 + 2 steps), writes the rows and weights of --steps_per_call=1, bit for bit."""
    common = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", *TINY, "--log_every=7", "--checkpoint_every=7",
              "--image_summary_every=100"]
    one, three = str(tmp_path / "one"), str(tmp_path / "three")
    run_train(*common, f"--logdir={one}", "--steps=7", "--steps_per_call=1")
    run_train(*common, f"--logdir={three}", "--steps=4", "--steps_per_call=3")
    assert model_weights(three)[1] == 4
    run_train(*common, f"--logdir={three}", "--steps=7", "--steps_per_call=3")

    def rows(logdir):
        return [{k: v for k, v in row.items() if k != "steps_per_sec"} for row in read_metrics(logdir)]

    assert [row["step"] for row in rows(one)] == [1, 7]
    assert rows(three) == rows(one)
    (weights, step), (expected_weights, expected_step) = model_weights(three), model_weights(one)
    assert step == expected_step == 7
    del weights["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]  # the resumed run saved twice
    assert weights.keys() == expected_weights.keys() - {"save_counter/.ATTRIBUTES/VARIABLE_VALUE"}
    for variable, value in weights.items():
        np.testing.assert_array_equal(value, expected_weights[variable], err_msg=variable)


@pytest.mark.slow
def test_smoke_run_improves_the_bound(smoke_run, data_dir):
    """smoke.flags for 150 steps: the bound improves by > 150 nats from the first step (~470 nats)."""
    logdir = smoke_run
    rows = read_metrics(logdir)
    required = {"step", "loss_nats", "kl_a", "kl_z", "recon_nats", "steps_per_sec"}
    assert all(required <= set(row) for row in rows)
    first, last = rows[0], rows[-1]
    assert first["step"] == 1 and last["step"] == 150
    assert first["loss_nats"] > 400  # an untrained Bernoulli decoder: about 676 * log 2 = 469 nats
    assert last["loss_nats"] < first["loss_nats"] - 150, (first, last)
    # TensorBoard shows the same window means as metrics.jsonl, and images from the first step on.
    scalars, image_steps = {}, set()
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("train/"):
                    scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
                elif value.tag == "images/targets":
                    image_steps.add(event.step)
    # Step 1's window is the graph's tracing, not a training rate; every later row has one.
    assert first["steps_per_sec"] is None and ("train/steps_per_sec", 1) not in scalars
    assert all(row["steps_per_sec"] > 0 for row in rows[1:])
    for row in rows:
        for name in ("loss_nats", "kl_a", "steps_per_sec"):
            if row[name] is not None:
                assert scalars[(f"train/{name}", row["step"])] == pytest.approx(row[name], rel=1e-6), (name, row)
    assert {1, 100} <= image_steps
    with open(os.path.join(logdir, "config.json")) as f:
        assert json.load(f)["train"]["num_samples"] == 4


def test_the_learning_rate_schedule_changes_at_its_steps_and_resumes_on_them(tmp_path):
    """--learning_rate=1e-3 --learning_rate_boundaries=2,4 --learning_rate_values=5e-4,1e-4: steps
    1-2 at 1e-3, 3-4 at 5e-4, 5 on at 1e-4, also in a run restored from a checkpoint at step 3."""
    from test_distribute import _batch, _config

    from vma_tf import tasks, training

    config = _config(learning_rate=1e-3, learning_rate_boundaries=(2, 4), learning_rate_values=(5e-4, 1e-4),
                     adam_beta_2=0.99, adam_epsilon=1e-8)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, logdir=str(tmp_path)))
    expected = [1e-3, 1e-3, 5e-4, 5e-4, 1e-4, 1e-4]

    def rates(trainer, steps):
        used = []
        for step in steps:
            used.append(float(trainer.optimizer.learning_rate))  # the rate this step applies
            trainer.train_step(_batch(step))
        return used

    trainer = training.build_trainer(config, tasks.build_task(config))
    assert trainer.optimizer.beta_2 == 0.99 and trainer.optimizer.epsilon == 1e-8
    np.testing.assert_allclose(rates(trainer, range(3)), expected[:3], rtol=1e-6)
    trainer.save(3)
    resumed = training.build_trainer(config, tasks.build_task(config))
    assert resumed.restore() == 3
    np.testing.assert_allclose(rates(resumed, range(3, 6)), expected[3:], rtol=1e-6)


def test_one_config_builds_the_same_initial_weights_whatever_was_drawn_before(tmp_path):
    """build_trainer seeds the initial weights from the config's seed, so a library user who builds
    a trainer after other random draws gets the weights train.py gets; another seed, others."""
    from test_distribute import _config

    from vma_tf import tasks, training

    config = _config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, logdir=str(tmp_path)))

    def initial_weights(config):
        return [v.numpy() for v in training.build_trainer(config, tasks.build_task(config)).model.trainable_variables]

    first = initial_weights(config)
    tf.random.uniform([3])
    np.random.rand(3)
    tf.keras.utils.set_random_seed(config.train.seed + 1)
    again = initial_weights(config)
    other_seed = dataclasses.replace(config.train, seed=config.train.seed + 1)
    reseeded = initial_weights(dataclasses.replace(config, train=other_seed))
    assert len(first) > 4 and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, reseeded, strict=True))
