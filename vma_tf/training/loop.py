"""The training loop: validation before any work, the run's folder, signals, metrics.jsonl and
the console. A run's whole state lives in `logdir`: checkpoints (model, optimizer, step),
TensorBoard events, `metrics.jsonl` and `config.json`. Episodes and the model's samples are
stateless functions of (seed, step), so resuming from a checkpoint continues exactly where the run
stopped."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from typing import NamedTuple

import tensorflow as tf

from vma_tf import checkpoints, files, models, objectives, summaries, tasks
from vma_tf.config import RunConfig, TrainConfig
from vma_tf.data.episodes import Episode
from vma_tf.errors import RunDivergedError, RunInterruptedError, UserInputError, require_positive
from vma_tf.training.distribute import local_share
from vma_tf.training.memory import largest_tensor, least_output_bytes, least_weight_bytes, require_fits_in_memory
from vma_tf.training.trainer import Trainer, build_trainer

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


MAX_STEPS = 2**62  # far past any run, and inside the int64 step counter


def validate(config: RunConfig) -> tasks.Task:
    """Raises UserInputError for flag values that cannot work, before any data is read; returns the
    run's task."""
    train, model = config.train, config.model
    task = tasks.build_task(config)
    models.validate(model, config.data.image_size, config.task, train.num_samples)
    task.validate()
    if train.vimco_baseline not in objectives.VIMCO_BASELINES:
        raise UserInputError(f"--vimco_baseline must be one of {objectives.VIMCO_BASELINES}")
    if train.mixed_precision not in PRECISIONS:
        raise UserInputError(f"--mixed_precision must be one of {PRECISIONS}")
    require_positive({
        "--steps": train.steps,
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


class TrainingResult(NamedTuple):
    """metrics: the last row written to metrics.jsonl (empty when the run had already reached its
    steps); is_chief: whether this process wrote the run's files (the one to export them)."""

    metrics: dict[str, float]
    is_chief: bool


def train(config: RunConfig) -> TrainingResult:
    """Trains (or resumes) the run `config` describes, under the process settings it sets."""
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
    dataset_from = task.training_data()
    checkpoints.check_compatible(config)
    logger.info("building %s", config.model.name)
    weight_bytes = least_weight_bytes(config.model, config.data.image_size)
    require_fits_in_memory(weight_bytes)
    trainer = build_trainer(config, task)
    # A batch's absent fields are None, not the dataset's NoneTensorSpec: then the first step reuses this trace.
    batch_spec = Episode(*(spec if isinstance(spec, tf.TensorSpec) else None for spec in dataset_from(0).element_spec))
    output_bytes = least_output_bytes(train_config.num_samples, batch_spec.targets) * local_share(trainer.strategy)
    require_fits_in_memory(weight_bytes, int(output_bytes), "in the decoder's output")
    logger.info("tracing the training step (tens of seconds)")
    step_graph = trainer.train_step.get_concrete_function(batch_spec).graph
    require_fits_in_memory(weight_bytes, *largest_tensor(step_graph))
    with contextlib.ExitStack() as held:
        if trainer.is_chief:  # one writer per logdir
            held.enter_context(files.exclusive_logdir(train_config.logdir))
            for folder in (train_config.logdir, checkpoints.checkpoint_dir(train_config.logdir)):
                for path in files.remove_stale_temporaries(folder, checkpoints.RUN_ENTRIES):
                    logger.info("removed %s, left by a killed run", path)
        return TrainingResult(_train(config, trainer, dataset_from), trainer.is_chief)


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
    if not chief:
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
