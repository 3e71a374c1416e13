"""The Trainer: one run's compiled step (the task's loss under a tf.distribute strategy, several
steps per call), its checkpoints, image summaries and metrics window."""

from __future__ import annotations

import glob
import os
import tempfile

import keras
import tensorflow as tf

from vma_tf import checkpoints, files, objectives, tasks
from vma_tf.config import RunConfig, TrainConfig
from vma_tf.data.episodes import Episode
from vma_tf.errors import StorageError
from vma_tf.models import GenerativeModel, MemoryReader, build_model, context_for
from vma_tf.seeds import seed_for
from vma_tf.training.distribute import is_chief, make_strategy, replica_share

_MODEL_STREAM, _SUMMARY_STREAM, _MEMORY_STREAM = 1, 2, 3
_MAX_SHOWN = 64  # memory entries in image summaries


def learning_rate_schedule(train: TrainConfig) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The run's learning rate: a constant, or piecewise constant over the applied updates, the rate
    of step s (1-based) being the one after the last boundary below s."""
    if not train.learning_rate_boundaries:
        return train.learning_rate
    # Keras compares the updates done before this one (s - 1) with each boundary b, inclusive.
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [boundary - 1 for boundary in train.learning_rate_boundaries],
        [train.learning_rate, *train.learning_rate_values],
    )


def weight_decay_variables(model: keras.Model) -> list[tf.Variable]:
    """The variables L2 weight decay applies to: every trainable one but a learned memory
    (the paper's "all parameters with the exception of M")."""
    memory = model.learned_memory
    return [v for v in model.trainable_variables if memory is None or v is not memory]


def image_grid(images: tf.Tensor, columns: int) -> tf.Tensor:
    """Tiles images [N, H, W, 1] into one image [1, ceil(N/columns) * H, columns * W, 1]."""
    count, height, width = images.shape[0], images.shape[1], images.shape[2]
    rows = -(-count // columns)
    padded = tf.pad(images, [[0, rows * columns - count], [0, 0], [0, 0], [0, 0]], constant_values=0.5)
    grid = tf.reshape(padded, [rows, columns, height, width, 1])
    grid = tf.transpose(grid, [0, 2, 1, 3, 4])
    return tf.reshape(grid, [1, rows * height, columns * width, 1])


def _use_run_settings(train: TrainConfig) -> None:
    """Sets what a run sets for the whole process: Keras's dtype policy (--mixed_precision) and
    its random seed, from which the model's initial weights are drawn."""
    keras.mixed_precision.set_global_policy(train.mixed_precision)
    keras.utils.set_random_seed(train.seed)


def build_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with the run's schedule; with mixed_float16, wrapped to scale the loss."""
    optimizer = keras.optimizers.Adam(learning_rate_schedule(train), beta_2=train.adam_beta_2,
                                      epsilon=train.adam_epsilon)
    if train.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_trainer(config: RunConfig, task: tasks.Task) -> Trainer:
    """The Trainer of `config`'s run: its strategy, and under the strategy's scope the model and
    the optimizer. It first sets the run's dtype policy and seed for the whole process, as Keras
    keeps them, so that one config always builds the same initial weights."""
    _use_run_settings(config.train)
    strategy = make_strategy(config.train.strategy)
    with strategy.scope():
        model = build_model(config.model, config.data.image_size)
        optimizer = build_optimizer(config.train)
    return Trainer(model, optimizer, strategy, task, config)


class Trainer:
    """Handed a model, its optimizer, a strategy and the task, it owns the run's step counter,
    checkpoints, metrics window and compiled step; the task owns the batches and the loss.
    `config.model` describes `model`, built for images of `config.data.image_size`."""

    def __init__(self, model: GenerativeModel, optimizer: keras.optimizers.Optimizer,
                 strategy: tf.distribute.Strategy, task: tasks.Task, config: RunConfig):
        self.model, self.optimizer, self.strategy, self.task, self.config = model, optimizer, strategy, task, config
        self.is_chief = is_chief(strategy)
        train = config.train
        # The step's metrics, in nats: the loss, the reconstruction term and the model's diagnostics.
        self.metric_names = ("loss_nats", "recon_nats", *model.DIAGNOSTICS)
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            optimizer.build(model.trainable_variables)
            self.nonfinite_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_in_a_row")
            self._longest_nonfinite_run = tf.Variable(0, dtype=tf.int64, trainable=False, name="longest_nonfinite")
            self._sums = tf.Variable(tf.zeros([len(self.metric_names)]), trainable=False, name="metric_sums")
            self._count = tf.Variable(0.0, trainable=False, name="metric_count")
            self._skipped = tf.Variable(0.0, trainable=False, name="skipped_steps")
        # The metrics window and the non-finite run are saved too, so that a run resumed mid-window
        # writes the rows an uninterrupted run writes.
        self._window = tf.train.Checkpoint(
            sums=self._sums, count=self._count, skipped=self._skipped, nonfinite_in_a_row=self.nonfinite_in_a_row
        )
        self._training_state = {"model": model, "optimizer": optimizer, "step": self.step}
        # Saved besides the training state; checkpoints written before 2026-11-23 lack them.
        self._recorded = {"window": self._window,
                          "model_config": checkpoints.model_config_variable(config)}  # a string: unscoped
        self.checkpoint = tf.train.Checkpoint(**self._training_state, **self._recorded)
        # Every worker saves (a save may need them all); only the chief's checkpoints are the run's.
        directory = checkpoints.checkpoint_dir(train.logdir)
        if not self.is_chief:
            directory = os.path.join(tempfile.gettempdir(), f"vma_tf-worker-{os.getpid()}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=train.max_checkpoints)
        self._run_directory = checkpoints.checkpoint_dir(train.logdir)
        self.train_step = tf.function(self._train_step, jit_compile=train.jit_compile)
        self.train_steps = tf.function(self._train_steps)
        self.write_images = tf.function(self._write_images)

    def restore(self) -> int:
        """Restores the run's newest whole checkpoint, if any (the chief sets damaged ones aside);
        returns the step to continue from."""
        latest = checkpoints.newest_whole_checkpoint(self._run_directory, set_aside=self.is_chief)
        if latest:
            checkpoints.require_trained_model(latest, self.config, "the flags")
            present = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
            restored = self.checkpoint if set(self._recorded) <= present else tf.train.Checkpoint(
                **self._training_state, **{name: value for name, value in self._recorded.items() if name in present}
            )
            checkpoints.restore(restored, latest, "the flags")
            if self.is_chief:  # the manager reads the (possibly rewritten) index when it is made
                self.manager = tf.train.CheckpointManager(
                    self.checkpoint, self._run_directory, max_to_keep=self.config.train.max_checkpoints
                )
        return int(self.step.numpy())

    def start_memory_from_data(self) -> None:
        """A fresh run's learned memory starts from training images, when the model asks for them."""
        count = self.model.memory_from_data
        if count:
            seed = seed_for(self.config.train.seed, 0, _MEMORY_STREAM)
            with self.strategy.scope():
                self.model.start_memory_from(self.task.training_images(count, self.config.train.seed), seed)

    def save(self, step: int) -> None:
        """Writes checkpoint `step`. A failed write (a full disk) removes its partial files and
        raises StorageError; the earlier checkpoints stay as they were."""
        try:
            self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            directory = self.manager.directory
            files.remove_stale_temporaries(directory, ())
            for path in glob.glob(os.path.join(glob.escape(directory), f"ckpt-{step}.*")):
                os.remove(path)
            cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            raise StorageError(
                f"could not write checkpoint {step} in {directory} ({cause}); removed its partial files, the run "
                f"resumes from {self.manager.latest_checkpoint or 'step 0'}"
            ) from None

    def _replica_step(self, batch: Episode, seed: tf.Tensor) -> tuple[tf.Tensor, list, tf.Tensor]:
        """One replica's share of a step: (its loss, its gradients, its metrics [len(metric_names)]),
        each scaled by the replica's fraction of the batch's scored targets, so that their sums over
        the replicas are the step's loss, gradient and metric means."""
        train = self.config.train
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        if replicas > 1:
            batch = replica_share(batch, context.replica_id_in_sync_group, replicas)
            seed = tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)
        with tf.GradientTape() as tape:
            loss, bound, record = self.task.loss(self.model, batch, seed)
            share = 1.0
            if replicas > 1:
                scored = tf.cast(tf.shape(bound)[0], tf.float32)
                share = scored / context.all_reduce(tf.distribute.ReduceOp.SUM, scored)
                loss *= share
            if train.weight_decay:
                loss += objectives.l2_penalty(weight_decay_variables(self.model), train.weight_decay) / replicas
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.model.trainable_variables)
        values = {"loss_nats": -tf.reduce_mean(bound), "recon_nats": -tf.reduce_mean(record.log_likelihood)}
        values.update({name: tf.reduce_mean(value) for name, value in record.diagnostics.items()})
        return loss, gradients, tf.stack([values[name] for name in self.metric_names]) * share

    def _train_step(self, batch: Episode) -> None:
        """One step under the strategy: the replicas' losses, gradients and metrics are summed."""
        train = self.config.train
        seed = seed_for(train.seed, self.step, _MODEL_STREAM)
        variables = self.model.trainable_variables
        loss, gradients, stacked = self.strategy.run(self._replica_step, args=(batch, seed))
        if self.strategy.num_replicas_in_sync > 1:
            def total(value):
                return None if value is None else self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

            loss, stacked = total(loss), total(stacked)
            gradients = [total(gradient) for gradient in gradients]
        # With mixed_float16 the loss-scale optimizer itself skips steps whose scaled gradient
        # overflows (and lowers the scale); everywhere else a non-finite gradient skips the step.
        # One norm serves both: it is non-finite when any gradient is (or when they are so large
        # that their squares overflow, which is divergence too), and clipping reuses it.
        gradient_norm = tf.linalg.global_norm(gradients)
        finite = tf.math.is_finite(loss)
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            finite = tf.logical_and(finite, tf.math.is_finite(gradient_norm))
        if train.clip_global_norm:
            gradients, _ = tf.clip_by_global_norm(gradients, train.clip_global_norm, use_norm=gradient_norm)

        def apply() -> tf.Tensor:
            self.optimizer.apply_gradients(zip(gradients, variables))
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        self.step.assign_add(1)
        self.nonfinite_in_a_row.assign(tf.where(finite, tf.constant(0, tf.int64), self.nonfinite_in_a_row + 1))
        # Kept in the graph and read by the loop only every few steps: a host read per step would
        # stall a GPU's pipeline.
        self._longest_nonfinite_run.assign(tf.maximum(self._longest_nonfinite_run, self.nonfinite_in_a_row))
        self._skipped.assign_add(1.0 - tf.cast(finite, tf.float32))
        self._sums.assign_add(tf.where(finite, stacked, tf.zeros_like(stacked)))
        self._count.assign_add(tf.cast(finite, tf.float32))

    def _train_steps(self, batches: tf.data.Iterator, count: tf.Tensor) -> None:
        """`count` steps on the iterator's next batches, in one call (SimCLR's train_multiple_steps):
        one host dispatch for them all."""
        for _ in tf.range(count):
            self.train_step(next(batches))

    def read_longest_nonfinite_run(self) -> int:
        """The most non-finite steps in a row since the last call; resets the count."""
        longest = int(self._longest_nonfinite_run.numpy())
        self._longest_nonfinite_run.assign(self.nonfinite_in_a_row)
        return longest

    def _write_images(self, batch: Episode) -> None:
        """Image grids of targets, the memory (when its entries are images), reconstructions and
        samples from p(x|M); histograms of the entry posterior of a model that reads entries."""
        model, step = self.model, self.step
        seed = seed_for(self.config.train.seed, step, _SUMMARY_STREAM)
        target_columns, memory_columns = self.task.grid_columns
        encoded = model.encode_context(context_for(model, batch.memory))
        record = model.log_weights(batch.targets, encoded, 1, seed, batch.visible)
        tf.summary.image("images/targets", image_grid(batch.targets, target_columns), step=step)
        tf.summary.image("images/reconstructions", image_grid(record.likelihood.mean()[0], target_columns), step=step)
        memory = batch.memory if model.reads_context else model.learned_memory
        if memory is not None and memory.shape.rank == 4:
            # A learned memory's pixels are unconstrained; the grid shows them clipped to [0, 1].
            shown = tf.clip_by_value(tf.convert_to_tensor(memory)[:_MAX_SHOWN], 0.0, 1.0)
            tf.summary.image("images/memory", image_grid(shown, memory_columns), step=step)
        samples = model.sample(encoded, _MAX_SHOWN, seed)["images"]
        tf.summary.image("images/samples", image_grid(samples, memory_columns), step=step)
        if isinstance(model, MemoryReader) and batch.visible is None:  # entry_posterior reads every entry
            probs = model.entry_posterior(batch.targets, encoded)
            tf.summary.histogram("addressing/entry_posterior", probs, step=step)
            tf.summary.histogram("addressing/entry_posterior_max", tf.reduce_max(probs, axis=-1), step=step)

    def read_metrics(self) -> dict[str, float]:
        """Means of the step metrics over the finite steps since the last call, in nats, and the
        count of skipped non-finite steps; resets the accumulators."""
        means = (self._sums / tf.maximum(self._count, 1.0)).numpy()
        metrics = {name: float(value) for name, value in zip(self.metric_names, means)}
        metrics["skipped_nonfinite"] = int(self._skipped.numpy())
        self._sums.assign(tf.zeros_like(self._sums))
        self._count.assign(0.0)
        self._skipped.assign(0.0)
        return metrics
