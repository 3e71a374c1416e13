"""Distribution: the strategy a run names, which process writes the run's files, and each
replica's share of a batch."""

from __future__ import annotations

import tensorflow as tf

from vma_tf.data.episodes import Episode
from vma_tf.errors import UserInputError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy `name` (config.STRATEGIES) names. "mirrored" takes every local GPU,
    or every logical CPU device when there is no GPU (one unless configured otherwise)."""
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def local_share(strategy: tf.distribute.Strategy) -> float:
    """The share of a batch's targets this process's replicas train on: 1 on one host, 1 / hosts
    on a multi-worker cluster of one replica per host."""
    if strategy.num_replicas_in_sync == 1:  # the default strategy has no worker_devices
        return 1.0
    return len(strategy.extended.worker_devices) / strategy.num_replicas_in_sync


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always, but on a multi-worker cluster's
    non-chief workers (TF_CONFIG's "chief", or worker 0 when there is none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def replica_share(batch: Episode, replica: tf.Tensor, replicas: int) -> Episode:
    """Replica `replica`'s contiguous 1/replicas of the batch's targets (and their rows of `visible`);
    every replica reads the whole memory."""
    size = batch.targets.shape[0]
    if size % replicas:
        raise UserInputError(f"a batch of {size} targets cannot be split evenly across {replicas} replicas")

    def share(values: tf.Tensor) -> tf.Tensor:
        return tf.gather(tf.reshape(values, [replicas, size // replicas, *values.shape[1:]]), replica)

    return batch._replace(
        targets=share(batch.targets),
        target_labels=share(batch.target_labels),
        visible=None if batch.visible is None else share(batch.visible),
    )
