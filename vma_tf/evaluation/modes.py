"""The eval.py modes. Each takes a trained model, the test split and an EvalConfig and returns a
JSON-ready dict (nats, accuracies in [0, 1]); `samples` also returns its images.

Every draw (tasks and the model's samples) has a stateless seed derived from `config.seed`, the
purpose and its indices, so a mode's output is a function of the checkpoint and the seed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from vma_tf import tasks
from vma_tf.config import EpisodeConfig, EvalConfig, RunConfig
from vma_tf.data import episodes, flat_images, labelled
from vma_tf.data.omniglot import CharacterSet
from vma_tf.errors import UserInputError
from vma_tf.evaluation import few_shot
from vma_tf.evaluation.bounds import BoundEstimate, BoundEvaluator
from vma_tf.evaluation.progress import KeptPieces, progress_bar
from vma_tf.models import AddressedMemory, MemoryReader
from vma_tf.seeds import seed_for

_TASK_STREAM, _MODEL_STREAM = 11, 12
_PER_CLASS_STREAM, _PER_CLASS_MODEL_STREAM, _COPY_STREAM = 13, 14, 15
# Context sizes of the copy probe.
COPY_PROBE_SHOTS = (1, 5)
# The `conditional` table's sequences are the GMN paper's test sequences, whatever length the run
# trained on: the default training length is that protocol's too.
SEQUENCE_LENGTH = EpisodeConfig.sequence_length
_Z95 = 1.96  # half-width of a normal 95% interval, in standard errors


def _seed(config: EvalConfig, stream: int, *indices: int) -> tf.Tensor:
    """The stateless seed int32 [2] of one draw, named by its stream and indices."""
    seed = seed_for(config.seed, indices[0], stream)
    for index in indices[1:]:
        seed = tf.random.experimental.stateless_fold_in(seed, index)
    return seed


def _mean_and_stderr(values: list[float] | np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    stderr = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(stderr)


def _check_episode(test: CharacterSet, classes: int, per_class: int, what: str) -> None:
    if classes > test.num_classes:
        raise UserInputError(f"{what} needs {classes} classes but the test split has {test.num_classes}")
    if per_class > test.images_per_class:
        raise UserInputError(
            f"{what} needs {per_class} images per class but test classes have {test.images_per_class}"
        )


def nll(model, test: CharacterSet | np.ndarray, run: RunConfig, config: EvalConfig) -> dict:
    """Test NLL bound and its decomposition over `num_episodes` test batches of the run's task,
    shaped like its training batches, averaged over all their targets. When the task's targets
    are entries of their memory (recall) and the model reads entries, also how often the most
    probable entry is the target's own."""
    task = tasks.build_task(run)
    evaluator = BoundEvaluator(model, config.pairs_per_call)
    batches, description = task.test_batches(test, config, lambda index: _seed(config, _TASK_STREAM, index))
    recall = task.targets_in_memory and isinstance(model, MemoryReader)
    estimates, recalled = [], []
    with progress_bar(len(batches), "nll: test batches") as bar:
        for index, batch in enumerate(batches):
            estimates.append(evaluator(
                batch.targets, batch.memory, config.num_importance_samples, _seed(config, _MODEL_STREAM, index),
                batch.visible,
            ))
            if recall:
                probs = model.entry_posterior(batch.targets, model.encode_context(batch.memory))
                best = tf.gather(batch.memory_labels, tf.argmax(probs, axis=-1))
                recalled.append(best.numpy() == batch.target_labels.numpy())
            bar.update()
    nll_mean, nll_stderr = _mean_and_stderr(np.concatenate([e.nll for e in estimates]))
    result = {
        "nll_nats": nll_mean,
        "nll_stderr": nll_stderr,
        "elbo_nats": float(np.concatenate([e.elbo for e in estimates]).mean()),
        "recon_nats": float(np.concatenate([e.recon for e in estimates]).mean()),
        **_diagnostic_means(model, estimates),
        "diagnostics": list(model.DIAGNOSTICS),
        "num_importance_samples": config.num_importance_samples,
        "num_examples": int(sum(e.nll.size for e in estimates)),
        "memory": description,
        "memory_source": run.task,
        "model": run.model.name,
        "dataset": run.data.dataset,
    }
    if recall:
        memory_size = int(batches[0].memory.shape[0])
        result["memory_size"] = memory_size
        result["optimal_nats"] = math.log(memory_size)
        result["top1_recall_rate"] = float(np.concatenate(recalled).mean())
    return result


def _diagnostic_means(model, estimates: list[BoundEstimate]) -> dict[str, float]:
    """{diagnostic name: its mean over every target of the estimates}, in nats."""
    return {
        name: float(np.concatenate([e.diagnostics[name] for e in estimates]).mean()) for name in model.DIAGNOSTICS
    }


def conditional(
    model, test: CharacterSet, run: RunConfig, config: EvalConfig, kept: KeptPieces | None = None
) -> dict:
    """Table 1 of both papers, in nats, each cell a mean over `num_sequences` draws with its
    standard error; None where the model cannot read so few images (n = 0 without a pseudo-input)
    or the run's layout does not score them (n < C with the classes first).

    - "sequence" (the GMN paper's way): NLL of the (n+1)-th image of a 20-image sequence from C
      classes given the first n, sequences drawn by `sequence_sampling` (or the run's sampler)
      in the run's layout (`sequence_classes_first`).
    - "per_class" (the VMA paper's way), for models that read a context: NLL of a fresh drawing of
      each of C distinct classes given n other drawings of each, so the target's class is present.
    - probes, for models that read a context: the copy probe (a target's NLL with an exact copy of
      it in the context, against n fresh drawings of its class) and, for models that read entries,
      the mass of their entry posterior on the context's entries of the target's class, against
      chance (those entries' share of the context), over the sequences' positions whose context
      holds both classes' entries.

    Each C of each table, and each probe, is a piece of `kept`: a rerun after an interruption
    computes only the pieces not yet kept.
    """
    kept = KeptPieces() if kept is None else kept
    if max(config.shots) >= SEQUENCE_LENGTH or min(config.shots) < 0:
        raise UserInputError(f"--shots must lie in 0..{SEQUENCE_LENGTH - 1}, got {list(config.shots)}")
    per_class = config.per_class and model.reads_context
    for classes in config.classes:
        _check_episode(test, classes, max(config.shots) + 1 if per_class else 1, f"--classes={classes}")
    probes = model.reads_context and config.probe_episodes > 0
    if probes:
        _check_episode(test, 1, max(COPY_PROBE_SHOTS) + 1, "the copy probe")
    evaluator = BoundEvaluator(model, config.pairs_per_call)
    layout = SequenceLayout(config.sequence_sampling or run.episodes.sequence_sampling,
                            run.episodes.sequence_classes_first)
    images = tf.constant(test.images)  # once: every sequence is drawn from it

    readable = [shots for shots in config.shots if shots >= model.min_context_size]

    def scored(classes: int) -> list[int]:  # with the classes first, a sequence is scored from x_(C+1) on
        return [shots for shots in readable if not layout.classes_first or shots >= classes]

    draws = config.num_sequences if readable else 0
    tables = 1 + per_class
    bar = progress_bar(tables * len(config.classes) * draws + probes * config.probe_episodes, "conditional: draws")
    result = {
        **_cell_table(config, draws, lambda classes, index: _sequence_draw(
            evaluator, images, config, scored(classes), classes, index, layout), bar, kept, "sequence"),
        "num_sequences": config.num_sequences,
        "num_importance_samples": config.num_importance_samples,
        "sequence_sampling": layout.sampling,
        "sequence_classes_first": layout.classes_first,
    }
    if per_class:
        result["per_class"] = _cell_table(config, draws, lambda classes, index: _per_class_draw(
            evaluator, test, config, readable, classes, index), bar, kept, "per_class")
    if probes:
        copy, was_kept = kept.get("copy_probe", lambda: _copy_probe(evaluator, test, config, bar))
        bar.update(config.probe_episodes if was_kept else 0)
        result["probes"] = {"copy": copy}
        if isinstance(model, MemoryReader):
            result["probes"]["same_class_mass"] = kept.get(
                "same_class_mass", lambda: _same_class_mass(model, images, config, layout))[0]
    bar.close()
    return result


def _cell_table(
    config: EvalConfig, draws: int, draw: Callable[[int, int], dict[int, float]], bar: tqdm, kept: KeptPieces,
    name: str,
) -> dict:
    """{"table": {C: {n: mean}}, "stderr": {C: {n: s.e.}}} over `draws` draws per C, each draw
    (C, index) -> {n: NLL of that draw in nats} (n the model cannot read: absent). Each C is the
    piece "<name>/<C>" of `kept`."""

    def cells(classes: int) -> dict:
        values: dict[int, list[float]] = {shots: [] for shots in config.shots}
        for index in range(draws):
            for shots, nll_nats in draw(classes, index).items():
                values[shots].append(nll_nats)
            bar.update()
        summaries = {shots: _mean_and_stderr(v) if v else (None, None) for shots, v in values.items()}
        return {"table": {str(shots): mean for shots, (mean, _) in summaries.items()},
                "stderr": {str(shots): err for shots, (_, err) in summaries.items()}}

    table, stderr = {}, {}
    for classes in config.classes:
        piece, was_kept = kept.get(f"{name}/{classes}", functools.partial(cells, classes))
        bar.update(draws if was_kept else 0)
        table[str(classes)], stderr[str(classes)] = piece["table"], piece["stderr"]
    return {"table": table, "stderr": stderr}


class SequenceLayout(NamedTuple):
    """How the `conditional` table's sequences are drawn: `sampling` "distinct" or
    "with_replacement", and whether one drawing of each class comes first (EpisodeConfig)."""

    sampling: str
    classes_first: bool


def _sequence(images: tf.Tensor, config: EvalConfig, classes: int, index: int, layout: SequenceLayout):
    """The index-th test sequence of C = classes from the test images uint8 [C', N, H, W]: images
    float32 [20, H, W, 1], labels int32 [20]."""
    return episodes.sample_sequence(
        images, classes, SEQUENCE_LENGTH, _seed(config, _TASK_STREAM, classes, index),
        with_replacement=layout.sampling == "with_replacement", classes_first=layout.classes_first,
    )


def _sequence_draw(
    evaluator: BoundEvaluator, images: tf.Tensor, config: EvalConfig, scored: list[int], classes: int, index: int,
    layout: SequenceLayout,
) -> dict[int, float]:
    """{n: NLL of x_(n+1) given x_1..x_n} of one sequence, in one call: the context is the whole
    sequence and target n reads its first n images only."""
    if not scored:
        return {}
    sequence, _ = _sequence(images, config, classes, index, layout)
    visible = tf.range(SEQUENCE_LENGTH)[tf.newaxis, :] < tf.constant(scored)[:, tf.newaxis]  # [n's, T]
    estimate = evaluator(tf.gather(sequence, scored), sequence, config.num_importance_samples,
                         _seed(config, _MODEL_STREAM, classes, index), visible)
    return dict(zip(scored, estimate.nll.tolist()))


def _per_class_draw(
    evaluator: BoundEvaluator, test: CharacterSet, config: EvalConfig, scored: list[int], classes: int, index: int
) -> dict[int, float]:
    """{n: mean NLL of one fresh drawing of each of C distinct classes given n other drawings of
    each}, in one call: the context is max(n) drawings of each class, target (n, c) reads the first
    n of each."""
    rng = np.random.default_rng([config.seed, _PER_CLASS_STREAM, classes, index])
    chosen = rng.choice(test.num_classes, classes, replace=False)
    drawings = np.stack([rng.choice(test.images_per_class, max(scored) + 1, replace=False) for _ in chosen])
    targets = test.images[chosen, drawings[:, 0]]  # [C, H, W]
    context = test.images[chosen[:, None], drawings[:, 1:]]  # [C, max n, H, W], the rank along axis 1
    rank = np.tile(np.arange(max(scored)), classes)  # of each context entry, class-major
    visible = rank[np.newaxis, :] < np.repeat(scored, classes)[:, np.newaxis]  # [n's * C, C * max n]
    estimate = evaluator(
        _image_batch(np.tile(targets, (len(scored), 1, 1))[:, np.newaxis]), _image_batch(context),
        config.num_importance_samples, _seed(config, _PER_CLASS_MODEL_STREAM, classes, index), tf.constant(visible),
    )
    return dict(zip(scored, estimate.nll.reshape(len(scored), classes).mean(axis=1).tolist()))


def _copy_probe(evaluator: BoundEvaluator, test: CharacterSet, config: EvalConfig, bar: tqdm) -> dict:
    """NLL of a drawing x with x itself and n - 1 other drawings of its class in the context (copy)
    and with n other drawings (fresh), for n in COPY_PROBE_SHOTS, over `probe_episodes` draws:
    how much an exact copy in memory is worth to the model, in nats."""
    largest = max(COPY_PROBE_SHOTS)
    copies: dict[int, list[float]] = {n: [] for n in COPY_PROBE_SHOTS}
    fresh: dict[int, list[float]] = {n: [] for n in COPY_PROBE_SHOTS}
    for index in range(config.probe_episodes):
        rng = np.random.default_rng([config.seed, _COPY_STREAM, index])
        character = rng.integers(test.num_classes)
        drawings = rng.choice(test.images_per_class, largest + 1, replace=False)
        context = test.images[character, drawings][np.newaxis]  # [1, largest + 1, H, W]: x, then the others
        visible = np.zeros([2 * len(COPY_PROBE_SHOTS), largest + 1], bool)
        for row, n in enumerate(COPY_PROBE_SHOTS):
            visible[2 * row, :n] = True  # x and n - 1 others
            visible[2 * row + 1, 1 : n + 1] = True  # n others
        targets = np.repeat(context[:, :1], len(visible), axis=1)
        nll = evaluator(_image_batch(targets), _image_batch(context), config.num_importance_samples,
                        _seed(config, _COPY_STREAM, index), tf.constant(visible)).nll
        for row, n in enumerate(COPY_PROBE_SHOTS):
            copies[n].append(nll[2 * row])
            fresh[n].append(nll[2 * row + 1])
        bar.update()
    by_shots = {}
    for n in COPY_PROBE_SHOTS:
        gain, gain_stderr = _mean_and_stderr(np.subtract(fresh[n], copies[n]))
        by_shots[str(n)] = {"copy_nats": float(np.mean(copies[n])), "fresh_nats": float(np.mean(fresh[n])),
                            "gain_nats": gain, "gain_stderr": gain_stderr}
    return {"shots": by_shots, "num_episodes": config.probe_episodes}


def _same_class_mass(model: MemoryReader, images: tf.Tensor, config: EvalConfig, layout: SequenceLayout) -> dict:
    """For each C >= 2 of the table, over its first `probe_episodes` sequences (those the sequence
    table scores) and the positions t whose x_<t holds entries of x_t's class and of another:
    the mean mass of the entry posterior of x_t on x_<t's entries of its class, and chance, the mean
    share of those entries in x_<t."""
    posterior = tf.function(lambda x, context: model.entry_posterior(x, model.encode_context(context)),
                            reduce_retracing=True)
    result = {}
    for classes in (c for c in config.classes if c >= 2):
        mass, chance = [], []
        for index in range(min(config.probe_episodes, config.num_sequences)):
            sequence, labels = _sequence(images, config, classes, index, layout)
            labels = labels.numpy()
            for t in range(1, SEQUENCE_LENGTH):
                same = labels[:t] == labels[t]
                if same.all() or not same.any():
                    continue
                weights = posterior(sequence[t : t + 1], sequence[:t]).numpy()[0]
                mass.append(float(weights[same].sum()))
                chance.append(float(same.mean()))
        excess = _mean_and_stderr(np.subtract(mass, chance)) if mass else (None, None)
        result[str(classes)] = {
            "mass": float(np.mean(mass)) if mass else None,
            "chance": float(np.mean(chance)) if chance else None,
            "excess_stderr": excess[1],
            "num_positions": len(mass),
        }
    return result


def _sweep_orders(test: CharacterSet, config: EvalConfig, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """One draw's random order of the test classes [C] and of each class's drawings [C, N].

    Every point of the sweep reads the same draws, so the points differ only in what is in
    memory: their differences are paired and far less noisy than their levels.
    """
    rng = np.random.default_rng([config.seed, _TASK_STREAM, draw])
    classes = rng.permutation(test.num_classes)
    drawings = rng.permuted(np.tile(np.arange(test.images_per_class), (test.num_classes, 1)), axis=1)
    return classes, drawings


def _image_batch(images: np.ndarray) -> tf.Tensor:
    """uint8 [C, N, H, W] -> float32 [C * N, H, W, 1]."""
    return tf.constant(images.reshape(-1, *images.shape[2:], 1), tf.float32)


def _memory_point(
    evaluator: BoundEvaluator, test: CharacterSet, config: EvalConfig,
    classes: int, shots: int, target_classes: int, targets_per_class: int, bar: tqdm,
) -> dict:
    """NLL of the first `targets_per_class` drawings of the first `target_classes` classes of each
    draw, with the next `shots` drawings of the first `classes` classes in memory."""
    estimates = []
    for draw in range(config.sweep_memories):
        order, drawings = _sweep_orders(test, config, draw)
        in_memory, targeted = order[:classes], order[:target_classes]
        memory_drawings = drawings[in_memory, targets_per_class : targets_per_class + shots]
        memory = test.images[in_memory[:, None], memory_drawings]  # [classes, shots, H, W]
        targets = test.images[targeted[:, None], drawings[targeted, :targets_per_class]]
        estimates.append(evaluator(_image_batch(targets), _image_batch(memory), config.num_importance_samples,
                                   _seed(config, _MODEL_STREAM, draw)))
        bar.update()
    mean, stderr = _mean_and_stderr(np.concatenate([e.nll for e in estimates]))
    return {
        "classes": classes,
        "shots": shots,
        "memory_size": classes * shots,
        "nll_nats": mean,
        "nll_stderr": stderr,
        **_diagnostic_means(evaluator.model, estimates),
        "num_targets": int(sum(e.nll.size for e in estimates)),
    }


def memory_sweep(model, test: CharacterSet, run: RunConfig, config: EvalConfig) -> dict:
    """Figure 5. A: a growing number of test classes in memory at `sweep_fixed_shots` images each,
    against the optimal-model line NLL(C = 1) + log C; the targets are `sweep_targets` drawings
    of one of the classes. B: every test class in memory with a growing number of images per
    class; the targets are one drawing of each of `sweep_targets` classes. Each point averages
    over `sweep_memories` draws that all points share."""
    for classes in config.sweep_classes:
        _check_episode(test, classes, config.sweep_targets + config.sweep_fixed_shots, f"--sweep_classes={classes}")
    for shots in config.sweep_shots:
        _check_episode(test, max(test.num_classes, config.sweep_targets), shots + 1, f"--sweep_shots={shots}")
    if config.sweep_tiled_sizes and min(config.sweep_tiled_sizes) < 1:
        raise UserInputError(f"--sweep_tiled_sizes must be positive, got {list(config.sweep_tiled_sizes)}")
    evaluator = BoundEvaluator(model, config.pairs_per_call)
    tiled_sizes = config.sweep_tiled_sizes if isinstance(model, AddressedMemory) else ()
    points = len(config.sweep_classes) + len(config.sweep_shots) + len(tiled_sizes)
    bar = progress_bar(points * config.sweep_memories, "memory_sweep: draws")
    by_classes = [
        _memory_point(evaluator, test, config, classes, config.sweep_fixed_shots, 1, config.sweep_targets, bar)
        for classes in config.sweep_classes
    ]
    single = [p["nll_nats"] for p in by_classes if p["classes"] == 1]
    for p in by_classes:
        p["optimal_reference_nats"] = single[0] + math.log(p["classes"]) if single else None
    by_shots = [
        _memory_point(evaluator, test, config, test.num_classes, shots, config.sweep_targets, 1, bar)
        for shots in config.sweep_shots
    ]
    # Past the test split, only a memory that encodes compactly fits (soft attention and GMN keep
    # per-entry feature maps of every entry).
    by_tiled_size = [_tiled_memory_point(evaluator, test, config, size, bar) for size in tiled_sizes]
    bar.close()
    return {
        "by_classes": by_classes,
        "by_shots": by_shots,
        "by_tiled_size": by_tiled_size,
        "diagnostics": list(model.DIAGNOSTICS),
        "fixed_shots": config.sweep_fixed_shots,
        "num_test_classes": test.num_classes,
        "num_importance_samples": config.num_importance_samples,
    }


def _tiled_memory_point(
    evaluator: BoundEvaluator, test: CharacterSet, config: EvalConfig, size: int, bar: tqdm
) -> dict:
    """B past the test split: a memory of `size` images, the test images tiled (every copy after the
    first shifted and with flipped pixels), encoded once. Each draw's targets are one drawing of
    each of its first sweep_targets classes, and each target reads every entry but its own image
    and that image's copies (a mask), so the memory holds the other drawings of its class, many
    times over, and everything else."""
    flat = flat_images.flattened(test)
    tiled, sources = flat_images.tiled_images(flat, size, config.seed)
    encoded = evaluator.encode(_image_batch(tiled[None]))
    del tiled
    estimates = []
    for draw in range(config.sweep_memories):
        order, drawings = _sweep_orders(test, config, draw)
        targeted = order[: config.sweep_targets]
        own_image = targeted * test.images_per_class + drawings[targeted, 0]  # indices into `flat`
        visible = tf.constant(sources[None, :] != own_image[:, None])  # [targets, size]
        estimates.append(evaluator.bound(_image_batch(flat[own_image][:, None]), encoded,
                                         config.num_importance_samples, _seed(config, _MODEL_STREAM, draw), visible))
        bar.update()
    mean, stderr = _mean_and_stderr(np.concatenate([e.nll for e in estimates]))
    return {
        "memory_size": size,
        "nll_nats": mean,
        "nll_stderr": stderr,
        **_diagnostic_means(evaluator.model, estimates),
        "num_targets": int(sum(e.nll.size for e in estimates)),
    }


def classification(model, test: CharacterSet, run: RunConfig, config: EvalConfig) -> dict:
    """N-way k-shot accuracy on test classes, with the support set as memory: the argmax of
    p(c|x) from q(a|x) and from importance weights, mean over episodes with a 95% interval."""
    shapes = {}
    for name in config.classification_tasks:
        try:
            shapes[name] = few_shot.parse_task(name)
        except ValueError as e:
            raise UserInputError(str(e)) from e
        ways, shots = shapes[name]
        _check_episode(test, ways, shots + config.queries_per_class, name)
    classifier = few_shot.FewShotClassifier(model, config.iw_samples)
    images = tf.constant(test.images)
    results = {}
    bar = progress_bar(len(shapes) * config.classification_episodes, "classification: episodes")
    for task_index, (name, (ways, shots)) in enumerate(shapes.items()):
        accuracy, accuracy_iw = [], []
        for episode_index in range(config.classification_episodes):
            episode, support_labels, query_labels = few_shot.labelled_episode(
                images, ways, shots, config.queries_per_class, _seed(config, _TASK_STREAM, task_index, episode_index)
            )
            feed_forward, importance_weighted = classifier(
                episode.targets, episode.memory, support_labels, ways,
                _seed(config, _MODEL_STREAM, task_index, episode_index),
            )
            accuracy.append(np.mean(feed_forward.argmax(-1) == query_labels))
            accuracy_iw.append(np.mean(importance_weighted.argmax(-1) == query_labels))
            bar.update()
        mean, stderr = _mean_and_stderr(accuracy)
        mean_iw, stderr_iw = _mean_and_stderr(accuracy_iw)
        results[name] = {
            "accuracy": mean, "ci95": _Z95 * stderr, "accuracy_iw": mean_iw, "ci95_iw": _Z95 * stderr_iw,
            "ways": ways, "shots": shots,
        }
    bar.close()
    return {
        "tasks": results,
        "episodes": config.classification_episodes,
        "queries_per_class": config.queries_per_class,
        "iw_samples": config.iw_samples,
    }


def samples(model, test: CharacterSet | np.ndarray, run: RunConfig, config: EvalConfig) -> dict:
    """What a model draws, by what it can do.

    A model that reads a memory: Figure 4A (rows: one test image as the whole memory, then
    samples from p(x|M)); and, if it reads individual entries, Figure 3: random test targets and
    the 5 entries with the most posterior mass, in a memory of every test class (labelled data)
    or of `memory_size` test images holding the targets. An addressed model that reads its own
    memory: Figure 2B (rows of samples that share an address drawn from p(a)). Any other model:
    rows of samples from p(x).

    Returns the JSON part and, under "images", float32 arrays for the figures: one_shot
    [rows, 1 + samples_per_row, H, W], targets [rows, H, W], top_entries [rows, 5, H, W];
    by_address or unconditional [rows, samples_per_row, H, W].
    """
    if model.reads_context:
        return _samples_from_memory(model, test, run, config)
    if isinstance(model, AddressedMemory):
        return _learned_memory_samples(model, config)
    drawn = model.sample(None, config.sample_rows * config.samples_per_row, _seed(config, _MODEL_STREAM, 0))
    images = drawn["images"][..., 0].numpy()
    shape = (config.sample_rows, config.samples_per_row, *images.shape[1:])
    return {"images": {"unconditional": images.reshape(shape)}}


def _samples_from_memory(model, test: CharacterSet | np.ndarray, run: RunConfig, config: EvalConfig) -> dict:
    if isinstance(test, CharacterSet):
        images = tf.constant(test.images)
        _check_episode(test, config.sample_rows, 2, "--sample_rows")
        one_shot_shape = EpisodeConfig(classes_per_batch=config.sample_rows, targets_per_class=1, memory_per_class=1)
        examples = episodes.sample_episode(images, one_shot_shape, _seed(config, _TASK_STREAM, 0)).memory
        memory_per_class = max(1, min(run.episodes.memory_per_class, test.images_per_class - 1))
        addressing_shape = EpisodeConfig(
            classes_per_batch=test.num_classes, targets_per_class=1, memory_per_class=memory_per_class
        )
        episode = episodes.sample_episode(images, addressing_shape, _seed(config, _TASK_STREAM, 1))
        chosen = np.random.default_rng(config.seed).choice(test.num_classes, config.sample_rows, replace=False)
        addressed = episode._replace(
            targets=tf.gather(episode.targets, chosen), target_labels=tf.gather(episode.target_labels, chosen)
        )
    else:
        memory_size = min(config.recall_memory_size or run.episodes.recall_memory_size, len(test))
        pixels = tf.constant(test)
        examples = flat_images.sample_recall_episode(pixels, config.sample_rows, config.sample_rows,
                                                     _seed(config, _TASK_STREAM, 0)).memory
        addressed = flat_images.sample_recall_episode(pixels, memory_size, config.sample_rows,
                                                      _seed(config, _TASK_STREAM, 1))
    sample_fn = tf.function(lambda memory, n, seed: model.sample(model.encode_context(memory), n, seed)["images"],
                            reduce_retracing=True)
    rows = []
    for row in range(config.sample_rows):
        memory = examples[row : row + 1]
        drawn = sample_fn(memory, config.samples_per_row, _seed(config, _MODEL_STREAM, row))
        rows.append(tf.concat([memory, drawn], axis=0)[..., 0].numpy())
    result = {"images": {"one_shot": np.stack(rows)}}
    if isinstance(test, CharacterSet):
        result["images"]["sequence"] = _sequence_samples(model, sample_fn, images, config)
    if not isinstance(model, MemoryReader):
        return result

    probs = model.entry_posterior(addressed.targets, model.encode_context(addressed.memory)).numpy()
    top = np.argsort(-probs, axis=-1)[:, :5]
    top_probabilities = np.take_along_axis(probs, top, axis=-1)
    same_class = addressed.memory_labels.numpy()[top] == addressed.target_labels.numpy()[:, None]
    result["images"].update(targets=addressed.targets[..., 0].numpy(),
                            top_entries=tf.gather(addressed.memory, top)[..., 0].numpy())
    return {
        **result,
        "memory_size": int(addressed.memory.shape[0]),
        "top5_probabilities": top_probabilities.round(4).tolist(),
        "top5_same_class": same_class.tolist(),
        "top1_same_class_rate": float(same_class[:, 0].mean()),
    }


SEQUENCE_SAMPLE_ROWS = 11  # GMN's Figure 2: samples given the first 0..10 images of a sequence


def _sequence_samples(model, sample_fn: Callable, images: tf.Tensor, config: EvalConfig) -> np.ndarray:
    """GMN's Figure 2 for one test sequence of a single class: float32 [11, 1 + samples_per_row, H, W].
    Column 0 holds the sequence x_1, x_2, ... top to bottom; row t the samples given x_1..x_t (blank
    where the model cannot read t images)."""
    sequence, _ = episodes.sample_sequence(images, 1, SEQUENCE_SAMPLE_ROWS, _seed(config, _TASK_STREAM, 2))
    rows = []
    for shots in range(SEQUENCE_SAMPLE_ROWS):
        if shots < model.min_context_size:
            drawn = tf.fill([config.samples_per_row, *sequence.shape[1:]], 0.5)
        else:
            drawn = sample_fn(sequence[:shots], config.samples_per_row, _seed(config, _MODEL_STREAM, 100 + shots))
        rows.append(tf.concat([sequence[shots : shots + 1], drawn], axis=0)[..., 0].numpy())
    return np.stack(rows)


def _learned_memory_samples(model: AddressedMemory, config: EvalConfig) -> dict:
    encoded = model.encode_context(None)
    prior = model.address_prior(encoded)
    address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(_seed(config, _MODEL_STREAM, 0), 2))
    rows = tf.cast(prior.sample(config.sample_rows, seed=address_seed), tf.int32)
    addresses = tf.repeat(rows[:, None], config.samples_per_row, axis=1)  # [rows, samples_per_row]
    drawn = model.sample_at(encoded, addresses, z_seed)
    probs = prior.probs_parameter().numpy()
    return {
        "memory_size": int(probs.size),
        "row_addresses": rows.numpy().tolist(),
        "row_prior_probabilities": probs[rows.numpy()].round(4).tolist(),
        "prior_entropy_nats": float(-(probs * np.log(np.maximum(probs, 1e-30))).sum()),
        "images": {"by_address": drawn[..., 0].numpy()},
    }


def unserved_reason(mode: str, model, run: RunConfig) -> str | None:
    """Why `model`, trained as `run`, cannot serve `mode`, or None when it can."""
    if mode in LABELLED_MODES and not labelled.has_classes(run.data.dataset):
        return f"--mode={mode} needs test characters with classes (Omniglot); this run's data is {run.data.dataset}"
    if mode == "classification" and not (model.reads_context and isinstance(model, MemoryReader)):
        what = "its own learned memory only" if model.learned_memory is not None else "none"
        return f"--mode=classification needs a model with a memory of labelled entries; {run.model.name} has {what}"
    return None


# Modes that need labelled test classes; the others serve every run.
LABELLED_MODES = ("conditional", "memory_sweep", "classification")
# Modes long enough to keep their pieces as they go (a `kept` argument): a rerun resumes them.
RESUMABLE_MODES = ("conditional",)
MODES: dict[str, Callable[..., dict]] = {
    "nll": nll,
    "conditional": conditional,
    "memory_sweep": memory_sweep,
    "classification": classification,
    "samples": samples,
}
