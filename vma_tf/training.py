"""Training: the VIMCO train step, checkpoints, summaries and the loop.

A run's whole state lives in `logdir`: checkpoints (model, optimizer, step), TensorBoard
events, `metrics.jsonl` and `config.json`. Episodes and the model's samples are
stateless functions of (seed, step), so resuming from a checkpoint continues exactly
where the run stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time

import keras
import tensorflow as tf

from vma_tf import checkpoints, export, files, models, objectives, summaries, tasks
from vma_tf.config import ModelConfig, RunConfig, TrainConfig
from vma_tf.data.episodes import Episode
from vma_tf.errors import RunDivergedError, RunInterruptedError, StorageError, UserInputError, require_positive
from vma_tf.models import MemoryReader, build_model, context_for
from vma_tf.seeds import seed_for

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
_MODEL_STREAM, _SUMMARY_STREAM, _MEMORY_STREAM = 1, 2, 3
_MAX_SHOWN = 64  # memory entries in image summaries


MAX_STEPS = 2**62  # far past any run, and inside the int64 step counter


def validate(config: RunConfig) -> tasks.Task:
    """Raises UserInputError for flag values that cannot work, before any data is read; returns the
    run's task."""
    train, model = config.train, config.model
    # The model's nets are built for the data's images.
    models.validate(dataclasses.replace(model, image_size=config.data.image_size), train.num_samples)
    task = tasks.build_task(config)
    task.validate()
    if train.vimco_baseline not in objectives.VIMCO_BASELINES:
        raise UserInputError(f"--vimco_baseline must be one of {objectives.VIMCO_BASELINES}")
    if train.mixed_precision not in PRECISIONS:
        raise UserInputError(f"--mixed_precision must be one of {PRECISIONS}")
    require_positive({
        "--steps": train.steps,
        "--batch_size": train.batch_size,
        "--memory_size": model.memory_size,
        "--checkpoint_every": train.checkpoint_every,
        "--max_checkpoints": train.max_checkpoints,
        "--log_every": train.log_every,
        "--image_summary_every": train.image_summary_every,
        "--steps_per_call": train.steps_per_call,
        "--latent_dim": model.latent_dim,
        "--embed_dim": model.embed_dim,
        "--conv_channels": model.conv_channels,
        "--hidden_units": model.hidden_units,
    })
    if train.steps > MAX_STEPS:
        raise UserInputError(f"--steps must be at most {MAX_STEPS:,} (the step counter is int64), got {train.steps:,}")
    if not 0 <= train.seed < 2**31:
        raise UserInputError(f"--seed must lie in 0..2**31-1 (stateless seeds are int32), got {train.seed}")
    if not (math.isfinite(train.clip_global_norm) and train.clip_global_norm >= 0) or train.max_nonfinite_steps < 0:
        raise UserInputError("--clip_global_norm and --max_nonfinite_steps must be non-negative (0: off)")
    rates = [("--learning_rate", train.learning_rate)] + [("--learning_rate_values", rate)
                                                          for rate in train.learning_rate_values]
    for flag, rate in rates:
        if not (math.isfinite(rate) and rate > 0):
            raise UserInputError(f"{flag} must be a positive number, got {rate}")
    boundaries = train.learning_rate_boundaries
    if len(boundaries) != len(train.learning_rate_values):
        raise UserInputError(f"--learning_rate_boundaries has {len(boundaries)} steps but --learning_rate_values "
                             f"{len(train.learning_rate_values)} rates: one rate after each boundary")
    if list(boundaries) != sorted(set(boundaries)) or (boundaries and boundaries[0] < 1):
        raise UserInputError(f"--learning_rate_boundaries must be increasing positive steps, got {list(boundaries)}")
    if not (0 <= train.adam_beta_2 < 1 and math.isfinite(train.adam_epsilon) and train.adam_epsilon > 0):
        raise UserInputError(f"--adam_beta_2 must lie in [0, 1) and --adam_epsilon be positive, got "
                             f"{train.adam_beta_2} and {train.adam_epsilon}")
    if not (math.isfinite(train.weight_decay) and train.weight_decay >= 0):
        raise UserInputError(f"--weight_decay must be a non-negative number, got {train.weight_decay}")
    if os.path.exists(train.logdir) and not os.path.isdir(train.logdir):
        raise UserInputError(f"--logdir={train.logdir} is a file, not a folder")
    return task


def least_weight_bytes(model_config: ModelConfig) -> int:
    """The bytes training holds for the model's variables at the least: each with its gradient and
    Adam's two slots. Built in a graph of its own, where nothing is allocated."""
    with tf.Graph().as_default():
        model = build_model(model_config)
    return 4 * sum(math.prod(variable.shape) * tf.as_dtype(variable.dtype).size for variable in model.variables)


def largest_tensor(graph: tf.Graph) -> tuple[int, str]:
    """(the bytes of the largest tensor a traced graph computes, the name of the layer computing
    it); the graph's reads of variables are not counted."""
    largest, layer = 0, ""
    for op in graph.get_operations():
        if op.type == "ReadVariableOp":
            continue
        for output in op.outputs:
            if output.dtype != tf.resource and output.shape.is_fully_defined():
                size = output.shape.num_elements() * output.dtype.size
                if size > largest:
                    # Without Keras's uniquifying suffixes: "decoder_3/conv2d_1_2/..." -> "decoder/conv2d".
                    largest, layer = size, "/".join(re.sub(r"(_\d+)+$", "", part) for part in op.name.split("/")[:2])
    return largest, layer


def host_memory_bytes() -> int:
    """The memory this process may use: the host's RAM, or its cgroup's limit when that is lower."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError), open("/sys/fs/cgroup/memory.max") as f:
        limit = min(limit, int(f.read()))  # "max" (no limit) is not an int
    return limit


def require_fits_in_memory(weight_bytes: int, tensor_bytes: int = 0, tensor_layer: str = "") -> None:
    """Raises UserInputError when training needs more than this host's memory: the variables with
    their gradients and Adam's slots (least_weight_bytes), and the step's largest tensor. Both
    are known before any work; a run would otherwise fail at an allocation, or be killed by the
    system."""
    available = host_memory_bytes()
    if weight_bytes + tensor_bytes > available:
        gib = 2**30
        tensor = f", and a {tensor_bytes / gib:,.1f} GiB tensor in {tensor_layer}" if tensor_bytes else ""
        raise UserInputError(
            f"training needs at least {(weight_bytes + tensor_bytes) / gib:,.1f} GiB ({weight_bytes / gib:,.1f} GiB "
            f"of weights with their gradients and Adam's slots{tensor}) but this host has {available / gib:,.1f} GiB; "
            "lower --num_samples, --batch_size, the memory or the nets' sizes"
        )


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy `name` (config.STRATEGIES) names. "mirrored" takes every local GPU,
    or every logical CPU device when there is no GPU (one unless configured otherwise)."""
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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


class Trainer:
    """Owns the model, optimizer, checkpoint and the compiled step of one run; the task owns the
    batches and the loss."""

    def __init__(self, config: RunConfig, image_size: int, task: tasks.Task):
        self.config = config
        self.task = task
        train = config.train
        keras.mixed_precision.set_global_policy(train.mixed_precision)
        keras.utils.set_random_seed(train.seed)
        self.strategy = make_strategy(train.strategy)
        self.is_chief = is_chief(self.strategy)
        with self.strategy.scope():
            self.model_config = dataclasses.replace(config.model, image_size=image_size)
            self.model = build_model(self.model_config)
            # The step's metrics, in nats: the loss, the reconstruction term and the model's diagnostics.
            self.metric_names = ("loss_nats", "recon_nats", *self.model.DIAGNOSTICS)
            optimizer = keras.optimizers.Adam(
                learning_rate_schedule(train), beta_2=train.adam_beta_2, epsilon=train.adam_epsilon
            )
            if train.mixed_precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.optimizer.build(self.model.trainable_variables)
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
        self._training_state = {"model": self.model, "optimizer": self.optimizer, "step": self.step}
        # Saved besides the training state; checkpoints written before 2026-11-23 lack them.
        self._recorded = {"window": self._window,
                          "model_config": checkpoints.model_config_variable(self.model_config)}  # a string: unscoped
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
            checkpoints.require_trained_model(latest, self.model_config, "the flags")
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
        if train.poison_steps:
            poisoned = tf.reduce_any(tf.equal(self.step + 1, tf.constant(train.poison_steps, tf.int64)))
            batch = batch._replace(targets=tf.where(poisoned, float("nan"), batch.targets))
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


def train(config: RunConfig) -> dict[str, float]:
    """Trains (or resumes) the run `config` describes; returns the last logged metrics."""
    task = validate(config)
    train_config = config.train
    foreign = checkpoints.foreign_entries(train_config.logdir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserInputError(f"{train_config.logdir} holds files that are not a vma_tf run: {shown}; "
                             "use an empty or new folder")
    files.require_writable(train_config.logdir)
    checkpoints.check_entry_kinds(train_config.logdir)
    logger.info("reading %s (the first run decodes and caches it)", config.data.dataset)
    image_size, dataset_from = task.training_data()
    checkpoints.check_compatible(config)
    logger.info("building %s", config.model.name)
    weight_bytes = least_weight_bytes(dataclasses.replace(config.model, image_size=image_size))
    require_fits_in_memory(weight_bytes)
    trainer = Trainer(config, image_size, task)
    logger.info("tracing the training step (tens of seconds)")
    # A batch's absent fields are None, not the dataset's NoneTensorSpec: then the first step reuses this trace.
    batch_spec = Episode(*(spec if isinstance(spec, tf.TensorSpec) else None for spec in dataset_from(0).element_spec))
    step_graph = trainer.train_step.get_concrete_function(batch_spec).graph
    require_fits_in_memory(weight_bytes, *largest_tensor(step_graph))
    with contextlib.ExitStack() as held:
        if trainer.is_chief:  # one writer per logdir
            held.enter_context(files.exclusive_logdir(train_config.logdir))
            for folder in (train_config.logdir, checkpoints.checkpoint_dir(train_config.logdir)):
                for path in files.remove_stale_temporaries(folder, checkpoints.RUN_ENTRIES):
                    logger.info("removed %s, left by a killed run", path)
        return _train(config, trainer, dataset_from)


def _train(config: RunConfig, trainer: Trainer, dataset_from) -> dict[str, float]:
    train_config = config.train
    start = trainer.restore()
    chief = trainer.is_chief
    metrics_path = os.path.join(train_config.logdir, checkpoints.METRICS_FILE)
    if chief:
        checkpoints.write_run_config(config)
        _drop_metrics_after(metrics_path, start)
    if start == 0:
        trainer.start_memory_from_data()
    if start >= train_config.steps:
        logger.info("step %d already reached in %s", start, train_config.logdir)
        if chief:
            _export(config)
        return {}
    logger.info("training from step %d to %d in %s; the first calls also trace the summaries and the multi-step call",
                start, train_config.steps, train_config.logdir)

    dataset = dataset_from(start)
    writer = tf.summary.create_file_writer(train_config.logdir) if chief else tf.summary.create_noop_writer()
    window_start, window_steps, metrics = time.perf_counter(), 0, {}
    stop_signal = _StopSignal()

    def check_divergence(step: int) -> None:
        longest = trainer.read_longest_nonfinite_run()
        if train_config.max_nonfinite_steps and longest >= train_config.max_nonfinite_steps:
            raise RunDivergedError(
                f"step {step}: the loss or its gradient was not finite for {longest} steps in a row "
                "(--max_nonfinite_steps); "
                + (f"kept the last checkpoint, {trainer.manager.latest_checkpoint}"
                   if trainer.manager.latest_checkpoint else "no checkpoint had been saved yet")
            )

    # The first row after a (re)start times one step and its graph tracing: no ETA from it.
    first_row = True
    batches = iter(dataset.take(train_config.steps - start))
    step = start
    with writer.as_default(), stop_signal:
        if chief:
            summaries.write_run_config(config, start)
        while step < train_config.steps:
            # Every worker splits the run into the same calls (their collectives must match).
            image_step = _writes_images(step + 1, start, train_config)
            count = 1 if image_step else _steps_to_next_event(step, train_config)
            if count == 1:
                episode = next(batches)
                trainer.train_step(episode)
            else:
                trainer.train_steps(batches, tf.constant(count))
            step += count
            window_steps += count
            if step == start + 1:
                # The first call after a (re)start traces the graph: its time is not a training rate.
                window_start, window_steps = time.perf_counter(), 0
            # Rows at multiples of --log_every, and at step 1 (a resumed run's first row would be one
            # that an uninterrupted run does not write).
            logs = step % train_config.log_every == 0 or step == 1
            saves = step % train_config.checkpoint_every == 0 or step == train_config.steps
            if logs or saves or stop_signal.received:
                check_divergence(step)
            if stop_signal.received:
                trainer.save(step)
                raise RunInterruptedError(stop_signal.received, step)
            if chief and image_step:
                trainer.write_images(episode)
            if logs:
                elapsed = time.perf_counter() - window_start
                rate = window_steps / elapsed if window_steps else None  # None: the window held only the trace
                metrics = {"step": step, **trainer.read_metrics(), "steps_per_sec": rate}
                # TensorBoard shows what the console and metrics.jsonl show: means over the window.
                for name, value in metrics.items():
                    if name != "step" and value is not None:
                        tf.summary.scalar(f"train/{name}", value, step=step)
                tf.summary.scalar("train/learning_rate", trainer.optimizer.learning_rate, step=step)
                _log_progress(metrics, train_config.steps, trainer.model.DIAGNOSTICS, show_eta=not first_row)
                first_row = False
                if chief:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(metrics) + "\n")
                window_start, window_steps = time.perf_counter(), 0
            if saves:
                trainer.save(step)
    writer.flush()
    if chief:
        _export(config)
    else:
        shutil.rmtree(trainer.manager.directory, ignore_errors=True)  # a worker's own checkpoints
    return metrics


def _writes_images(step: int, start: int, train: TrainConfig) -> bool:
    """Whether training step `step` (1-based) ends with image summaries: every image_summary_every
    steps, and the first step after a (re)start."""
    return step % train.image_summary_every == 0 or step == start + 1


def _steps_to_next_event(step: int, train: TrainConfig) -> int:
    """How many steps, at most steps_per_call, the next call may run after `step`: it ends at the
    next step that logs, saves, writes images or ends the run, where the loop must look."""
    def next_multiple(every: int) -> int:
        return (step // every + 1) * every

    events = [next_multiple(train.log_every), next_multiple(train.checkpoint_every), train.steps,
              next_multiple(train.image_summary_every), *([1] if step < 1 else [])]
    return max(1, min(train.steps_per_call, min(events) - step))


class _StopSignal:
    """While active, SIGTERM and SIGINT only set `received`; the loop then saves and stops."""

    def __init__(self):
        self.received = 0
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._receive)
        return self

    def _receive(self, number, frame) -> None:
        self.received = number

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def _drop_metrics_after(path: str, step: int) -> None:
    """Rows of metrics.jsonl written after the checkpoint a run resumes from are redone: drop them,
    and a row torn by a crash or a full disk mid-write."""
    if not os.path.isfile(path):
        return
    kept, torn = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line.rstrip("\n") + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                torn.append(number)
    if torn:
        logger.warning("%s: dropped row(s) %s, not whole JSON rows (torn by a crash mid-write)", path, torn)
    files.write_atomically(path, "".join(kept))


def _export(config: RunConfig) -> None:
    if config.train.export:
        logger.info("exporting the SavedModel (tens of seconds)")
        logger.info("exported %s", export.export_run(config.train.logdir))


def _log_progress(metrics: dict[str, float], total_steps: int, diagnostics: tuple[str, ...], show_eta: bool) -> None:
    """One console line per metrics row; the ETA from the row's steps/s when `show_eta`."""
    eta, rate = "—", metrics["steps_per_sec"]
    if show_eta and rate:
        remaining = int((total_steps - metrics["step"]) / max(rate, 1e-9))
        eta = f"{remaining // 3600}:{remaining % 3600 // 60:02d}:{remaining % 60:02d}"
    diagnostics = "  ".join(f"{name} {metrics[name]:.3f}" for name in diagnostics)
    logger.info(
        "step %d  loss %.2f nats  recon %.2f  %s  %s steps/s  ETA %s",
        metrics["step"],
        metrics["loss_nats"],
        metrics["recon_nats"],
        diagnostics,
        "—" if rate is None else f"{rate:.2f}",
        eta,
    )
