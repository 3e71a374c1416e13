"""Training under tf.distribute, mixed precision and XLA: the step a user selects with --strategy,
--mixed_precision and --jit_compile computes what the plain step computes."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from vma_tf import tasks, training
from vma_tf.config import DataConfig, EpisodeConfig, ModelConfig, RunConfig, TrainConfig
from vma_tf.data.episodes import Episode
from vma_tf.errors import UserInputError

SMALL = ModelConfig(latent_dim=8, embed_dim=16, conv_channels=8, hidden_units=32)


def _config(**train) -> RunConfig:
    return RunConfig(DataConfig(), EpisodeConfig(), SMALL, TrainConfig(logdir="unused", **train))


def _batch(seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)

    def images(count):
        return tf.constant((rng.random((count, 26, 26, 1)) < 0.2).astype(np.float32))

    return Episode(images(8), tf.range(8), images(6), tf.range(6))


# Two logical CPU devices exist only if configured before TensorFlow starts: a process of its own.
MIRRORED_AGAINST_ONE_DEVICE = textwrap.dedent("""
    import dataclasses, json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from test_distribute import _batch, _config
    from vma_tf import objectives, tasks, training
    from vma_tf.seeds import seed_for

    config = _config(strategy="mirrored", weight_decay=1e-3)
    task, batch = tasks.build_task(config), _batch()
    mirrored = training.build_trainer(config, task)
    seed = seed_for(0, mirrored.step, 1)

    @tf.function
    def mirrored_step():
        loss, gradients, metrics = mirrored.strategy.run(mirrored._replica_step, args=(batch, seed))
        def total(value):
            return mirrored.strategy.reduce("SUM", value, axis=None)
        return total(loss), [total(g) for g in gradients], total(metrics)

    loss, gradients, metrics = mirrored_step()
    # One device, the same global batch: each replica's half with that replica's seed, the loss
    # and the metrics weighted by the half's share of the targets.
    single_device = dataclasses.replace(config, train=dataclasses.replace(config.train, strategy="default"))
    single = training.build_trainer(single_device, task)
    variables = single.model.trainable_variables
    same_init = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(variables, mirrored.model.trainable_variables))

    @tf.function  # compiled like the step, so that both sum in the same order
    def one_device():
        expected_loss, expected_gradients, expected_metrics = 0.0, [0.0] * len(variables), 0.0
        for replica in range(2):
            half = training.replica_share(batch, tf.constant(replica), 2)
            with tf.GradientTape() as tape:
                half_seed = tf.random.experimental.stateless_fold_in(seed, replica)
                half_loss, bound, record = task.loss(single.model, half, half_seed)
                decay = objectives.l2_penalty(training.weight_decay_variables(single.model), 1e-3)
                half_loss = 0.5 * half_loss + decay / 2
            expected_loss += half_loss
            expected_gradients = [a + b for a, b in zip(expected_gradients, tape.gradient(half_loss, variables))]
            expected_metrics += 0.5 * -tf.reduce_mean(bound)
        return expected_loss, expected_gradients, expected_metrics

    expected_loss, expected_gradients, expected_metrics = one_device()
    mirrored.train_step(batch)
    synced = all(np.array_equal(*[copy.numpy() for copy in variable.value.values])
                 for variable in mirrored.model.trainable_variables)
    json.dump({
        "replicas": mirrored.strategy.num_replicas_in_sync, "same_init": same_init, "synced": synced,
        "loss": [float(loss), float(expected_loss)], "loss_nats": [float(metrics[0]), float(expected_metrics)],
        "gradients": [[g.numpy().ravel().tolist() for g in gradients],
                      [g.numpy().ravel().tolist() for g in expected_gradients]],
        "step": int(mirrored.step.numpy()),
    }, sys.stdout)
""")


def test_a_mirrored_step_on_two_devices_equals_its_halves_on_one():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_AGAINST_ONE_DEVICE, os.path.dirname(__file__)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["same_init"] and out["synced"] and out["step"] == 1
    np.testing.assert_allclose(*out["loss"], rtol=1e-5)
    np.testing.assert_allclose(*out["loss_nats"], rtol=1e-5)
    for got, expected in zip(*out["gradients"]):  # float32 sums in another order: relative norm 1e-5
        got, expected = np.asarray(got), np.asarray(expected)
        assert np.linalg.norm(got - expected) <= 1e-5 * np.linalg.norm(expected) + 1e-9


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(UserInputError, match="cannot be split evenly across 3 replicas"):
        training.replica_share(_batch(), tf.constant(0), 3)


@pytest.mark.parametrize(
    "train", [dict(mixed_precision="mixed_bfloat16"), dict(mixed_precision="mixed_float16"), dict(jit_compile=True)],
    ids=["mixed_bfloat16", "mixed_float16", "jit_compile"],
)
def test_one_step_runs_with_a_finite_loss(train):
    config = _config(**train)
    try:
        trainer = training.build_trainer(config, tasks.build_task(config))
        trainer.train_step(_batch())
        metrics = trainer.read_metrics()
    finally:
        keras.mixed_precision.set_global_policy("float32")  # build_trainer sets it process-wide
    assert int(trainer.step.numpy()) == 1 and metrics["skipped_nonfinite"] == 0
    assert np.isfinite(metrics["loss_nats"]) and 300 < metrics["loss_nats"] < 700  # ~ 26*26*log 2 untrained
    if train.get("mixed_precision"):
        assert trainer.model.pyramid.convs[0].compute_dtype == train["mixed_precision"].removeprefix("mixed_")


# One process per worker (or, for the reference, one process with two logical CPU devices): a few
# steps on the same global batches, then the weights, the loss rows and the median step time.
STEPS_ON_A_CLUSTER = textwrap.dedent("""
    import json, sys, time
    import numpy as np, tensorflow as tf
    if sys.argv[2] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from test_distribute import _batch, _config
    from vma_tf import tasks, training

    config = _config(strategy=sys.argv[2])
    trainer = training.build_trainer(config, tasks.build_task(config))
    losses, seconds = [], []
    for step in range(int(sys.argv[3])):
        start = time.perf_counter()
        trainer.train_step(_batch(step))
        losses.append(trainer.read_metrics()["loss_nats"])
        seconds.append(time.perf_counter() - start)
    json.dump({
        "replicas": trainer.strategy.num_replicas_in_sync, "chief": trainer.is_chief, "losses": losses,
        "weights": [variable.numpy().ravel().tolist() for variable in trainer.model.trainable_variables],
        "step_ms": 1000 * float(np.median(seconds[2:])),
    }, sys.stdout)
""")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cluster_step(strategy: str, steps: int, tf_config: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO, **({"TF_CONFIG": tf_config} if tf_config else {})}
    return subprocess.Popen(
        [sys.executable, "-c", STEPS_ON_A_CLUSTER, os.path.dirname(__file__), strategy, str(steps)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _result(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return __import__("json").loads(stdout.strip().splitlines()[-1])


def test_two_worker_processes_train_in_step_and_as_one_process_would():
    """--strategy=multi_worker across two processes on 127.0.0.1 (TF_CONFIG with two local ports): both
    workers end with identical weights, and their loss rows equal those of one process that splits
    the same global batches across two devices."""
    json = __import__("json")
    steps = 4
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = [
        _cluster_step("multi_worker", steps, json.dumps({"cluster": {"worker": workers},
                                                         "task": {"type": "worker", "index": index}}))
        for index in range(2)
    ]
    chief, other = (_result(process) for process in processes)
    one_process = _result(_cluster_step("mirrored", steps))
    assert chief["replicas"] == other["replicas"] == one_process["replicas"] == 2
    assert chief["chief"] and not other["chief"]
    for chief_weights, other_weights in zip(chief["weights"], other["weights"]):
        np.testing.assert_array_equal(chief_weights, other_weights)
    np.testing.assert_allclose(chief["losses"], one_process["losses"], rtol=1e-5)
    assert chief["losses"] == other["losses"]
    print(f"step ms: two workers {chief['step_ms']:.0f}, one process on two devices {one_process['step_ms']:.0f}")
