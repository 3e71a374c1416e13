"""The eval.py modes. Each takes a trained model, the test split and an EvalConfig and returns a
JSON-ready dict (nats, accuracies in [0, 1]); `samples` also returns its images.

Every draw (tasks and the model's samples) has a stateless seed derived from `config.seed`, the
purpose and its indices, so a mode's output is a function of the checkpoint and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from vma_tf.config import EpisodeConfig, EvalConfig, RunConfig
from vma_tf.data import episodes
from vma_tf.data import images as flat_images
from vma_tf.data.omniglot import CharacterSet
from vma_tf.errors import UserInputError
from vma_tf.evaluation import classification as few_shot
from vma_tf.evaluation.bounds import BoundEvaluator
from vma_tf.seeds import seed_for

_TASK_STREAM, _MODEL_STREAM = 11, 12
SEQUENCE_LENGTH = 20
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
    """Test NLL bound and its decomposition over `num_episodes` test batches shaped like the
    training batches, averaged over all their targets. The memory of each batch is that of
    the run's kind: few-shot episodes (other images of the targets' classes), a recall memory of
    `config.memory_size` test images (the targets drawn from it), or the learned memory."""
    evaluator = BoundEvaluator(model, config.pairs_per_call)
    estimates, recalled = [], []
    batches, description = _nll_batches(test, run, config)
    for index, (targets, target_labels, memory, memory_labels) in enumerate(batches):
        estimates.append(
            evaluator(targets, memory, config.num_importance_samples, _seed(config, _MODEL_STREAM, index))
        )
        if run.model.memory == "recall":
            q_a = model.address_posterior(targets, model.encode_memory(memory)).probs_parameter()
            recalled.append(tf.gather(memory_labels, tf.argmax(q_a, axis=-1)).numpy() == target_labels.numpy())
    per_target = {name: np.concatenate([getattr(e, name) for e in estimates]) for name in
                  ("nll", "elbo", "recon", "kl_a", "kl_z")}
    nll_mean, nll_stderr = _mean_and_stderr(per_target["nll"])
    result = {
        "nll_nats": nll_mean,
        "nll_stderr": nll_stderr,
        "elbo_nats": float(per_target["elbo"].mean()),
        "recon_nats": float(per_target["recon"].mean()),
        "kl_a": float(per_target["kl_a"].mean()),
        "kl_z": float(per_target["kl_z"].mean()),
        "num_importance_samples": config.num_importance_samples,
        "num_examples": int(per_target["nll"].size),
        "memory": description,
        "memory_source": run.model.memory,
        "dataset": run.data.dataset,
    }
    if recalled:
        memory_size = int(batches[0][2].shape[0])
        result["memory_size"] = memory_size
        result["optimal_nats"] = math.log(memory_size)
        result["top1_recall_rate"] = float(np.concatenate(recalled).mean())
    return result


def _nll_batches(test: CharacterSet | np.ndarray, run: RunConfig, config: EvalConfig) -> tuple[list, str]:
    """The `nll` test batches as Episodes (a learned memory's have memory None), and a
    description of their memory."""
    if run.model.memory == "few_shot":
        shape = run.episodes
        _check_episode(
            test, shape.classes_per_batch + shape.confounding_classes,
            shape.targets_per_class + shape.memory_per_class, "the training episode shape",
        )
        images = tf.constant(test.images)
        batches = [episodes.sample_episode(images, shape, _seed(config, _TASK_STREAM, index))
                   for index in range(config.num_episodes)]
        description = (
            f"{shape.memory_per_class} other images of each of the {shape.classes_per_batch} target classes"
            + (f" + {shape.confounding_classes} confounding classes" if shape.confounding_classes else "")
        )
        return batches, description
    batch_size = run.train.batch_size
    if run.model.memory == "recall":
        memory_size = config.memory_size or run.model.memory_size
        if memory_size > len(test):
            raise UserInputError(f"--memory_size={memory_size} but the test split has {len(test)} images")
        pixels = tf.constant(test)
        batches = [
            flat_images.sample_recall_episode(pixels, memory_size, batch_size, _seed(config, _TASK_STREAM, index))
            for index in range(config.num_episodes)
        ]
        return batches, f"{memory_size} random test images; the targets are drawn from them"
    # A learned memory: distinct random test images, batch by batch.
    order = np.random.default_rng([config.seed, _TASK_STREAM]).permutation(len(test))
    chunks = [order[start : start + batch_size] for start in range(0, len(test), batch_size)]
    batches = [
        episodes.Episode(tf.constant(test[chunk, ..., None], tf.float32), tf.constant(chunk, tf.int32), None, None)
        for chunk in chunks[: config.num_episodes]
    ]
    return batches, f"the learned memory ({run.model.memory_size} entries)"


def conditional(model, test: CharacterSet, run: RunConfig, config: EvalConfig) -> dict:
    """Table 1: NLL of the (n+1)-th image of a 20-image sequence from C classes given the
    first n as memory. table[C][n] is the mean over `num_sequences` sequences, in nats."""
    if max(config.shots) >= SEQUENCE_LENGTH or min(config.shots) < 1:
        raise UserInputError(f"--shots must lie in 1..{SEQUENCE_LENGTH - 1}, got {list(config.shots)}")
    for classes in config.classes:
        _check_episode(test, classes, 1, f"--classes={classes}")
    evaluator = BoundEvaluator(model, config.pairs_per_call)
    images = tf.constant(test.images)
    table, stderr = {}, {}
    for classes in config.classes:
        values: dict[int, list[float]] = {shots: [] for shots in config.shots}
        for sequence_index in range(config.num_sequences):
            sequence, _ = episodes.sample_sequence(
                images, classes, SEQUENCE_LENGTH, _seed(config, _TASK_STREAM, classes, sequence_index)
            )
            for shots in config.shots:
                estimate = evaluator(
                    sequence[shots : shots + 1], sequence[:shots], config.num_importance_samples,
                    _seed(config, _MODEL_STREAM, classes, sequence_index, shots),
                )
                values[shots].append(float(estimate.nll[0]))
        summaries = {shots: _mean_and_stderr(v) for shots, v in values.items()}
        table[str(classes)] = {str(shots): mean for shots, (mean, _) in summaries.items()}
        stderr[str(classes)] = {str(shots): err for shots, (_, err) in summaries.items()}
    return {
        "table": table,
        "stderr": stderr,
        "num_sequences": config.num_sequences,
        "num_importance_samples": config.num_importance_samples,
    }


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
    classes: int, shots: int, target_classes: int, targets_per_class: int,
) -> dict:
    """NLL of the first `targets_per_class` drawings of the first `target_classes` classes of each
    draw, with the next `shots` drawings of the first `classes` classes in memory."""
    nlls, kl_a = [], []
    for draw in range(config.sweep_memories):
        order, drawings = _sweep_orders(test, config, draw)
        in_memory, targeted = order[:classes], order[:target_classes]
        memory_drawings = drawings[in_memory, targets_per_class : targets_per_class + shots]
        memory = test.images[in_memory[:, None], memory_drawings]  # [classes, shots, H, W]
        targets = test.images[targeted[:, None], drawings[targeted, :targets_per_class]]
        estimate = evaluator(_image_batch(targets), _image_batch(memory), config.num_importance_samples,
                             _seed(config, _MODEL_STREAM, draw))
        nlls.append(estimate.nll)
        kl_a.append(estimate.kl_a)
    mean, stderr = _mean_and_stderr(np.concatenate(nlls))
    return {
        "classes": classes,
        "shots": shots,
        "memory_size": classes * shots,
        "nll_nats": mean,
        "nll_stderr": stderr,
        "kl_a": float(np.concatenate(kl_a).mean()),
        "num_targets": int(sum(len(n) for n in nlls)),
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
    evaluator = BoundEvaluator(model, config.pairs_per_call)
    by_classes = [
        _memory_point(evaluator, test, config, classes, config.sweep_fixed_shots, 1, config.sweep_targets)
        for classes in config.sweep_classes
    ]
    single = [p["nll_nats"] for p in by_classes if p["classes"] == 1]
    for p in by_classes:
        p["optimal_reference_nats"] = single[0] + math.log(p["classes"]) if single else None
    by_shots = [
        _memory_point(evaluator, test, config, test.num_classes, shots, config.sweep_targets, 1)
        for shots in config.sweep_shots
    ]
    return {
        "by_classes": by_classes,
        "by_shots": by_shots,
        "fixed_shots": config.sweep_fixed_shots,
        "num_test_classes": test.num_classes,
        "num_importance_samples": config.num_importance_samples,
    }


def classification(model, test: CharacterSet, run: RunConfig, config: EvalConfig) -> dict:
    """N-way k-shot accuracy on test classes, with the support set as memory: the argmax of
    p(c|x) from q(a|x) and from importance weights, mean over episodes with a 95% interval."""
    tasks = {}
    for name in config.classification_tasks:
        try:
            tasks[name] = few_shot.parse_task(name)
        except ValueError as e:
            raise UserInputError(str(e)) from e
        ways, shots = tasks[name]
        _check_episode(test, ways, shots + config.queries_per_class, name)
    classifier = few_shot.FewShotClassifier(model, config.iw_samples)
    images = tf.constant(test.images)
    results = {}
    for task_index, (name, (ways, shots)) in enumerate(tasks.items()):
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
        mean, stderr = _mean_and_stderr(accuracy)
        mean_iw, stderr_iw = _mean_and_stderr(accuracy_iw)
        results[name] = {
            "accuracy": mean, "ci95": _Z95 * stderr, "accuracy_iw": mean_iw, "ci95_iw": _Z95 * stderr_iw,
            "ways": ways, "shots": shots,
        }
    return {
        "tasks": results,
        "episodes": config.classification_episodes,
        "queries_per_class": config.queries_per_class,
        "iw_samples": config.iw_samples,
    }


def samples(model, test: CharacterSet | np.ndarray, run: RunConfig, config: EvalConfig) -> dict:
    """Figure 4A: one test image in memory and samples from p(x|M); Figure 3: for random test
    targets, the 5 most probable memory entries under q(a|x), with every test class in memory
    (few-shot) or `memory_size` test images holding the targets (recall). A learned memory
    gives Figure 2B instead: rows of samples that share an address drawn from p(a).

    Returns the JSON part and, under "images", float32 arrays for the figures: one_shot
    [rows, 1 + samples_per_row, H, W], targets [rows, H, W], top_entries [rows, 5, H, W]; or,
    for a learned memory, by_address [rows, samples_per_row, H, W].
    """
    if run.model.memory == "learned":
        return _learned_memory_samples(model, config)
    if run.model.memory == "few_shot":
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
        memory_size = min(config.memory_size or run.model.memory_size, len(test))
        pixels = tf.constant(test)
        examples = flat_images.sample_recall_episode(pixels, config.sample_rows, config.sample_rows,
                                                     _seed(config, _TASK_STREAM, 0)).memory
        addressed = flat_images.sample_recall_episode(pixels, memory_size, config.sample_rows,
                                                      _seed(config, _TASK_STREAM, 1))
    sample_fn = tf.function(model.sample, reduce_retracing=True)
    rows = []
    for row in range(config.sample_rows):
        memory = examples[row : row + 1]
        drawn, _ = sample_fn(memory, config.samples_per_row, _seed(config, _MODEL_STREAM, row))
        rows.append(tf.concat([memory, drawn], axis=0)[..., 0].numpy())

    q_a = model.address_posterior(addressed.targets, model.encode_memory(addressed.memory)).probs_parameter().numpy()
    top = np.argsort(-q_a, axis=-1)[:, :5]
    top_probabilities = np.take_along_axis(q_a, top, axis=-1)
    same_class = addressed.memory_labels.numpy()[top] == addressed.target_labels.numpy()[:, None]
    return {
        "memory_size": int(addressed.memory.shape[0]),
        "top5_probabilities": top_probabilities.round(4).tolist(),
        "top5_same_class": same_class.tolist(),
        "top1_same_class_rate": float(same_class[:, 0].mean()),
        "images": {
            "one_shot": np.stack(rows),
            "targets": addressed.targets[..., 0].numpy(),
            "top_entries": tf.gather(addressed.memory, top)[..., 0].numpy(),
        },
    }


def _learned_memory_samples(model, config: EvalConfig) -> dict:
    encoding = model.encode_memory(None)
    prior = model.address_prior(encoding)
    address_seed, z_seed = tf.unstack(tf.random.experimental.stateless_split(_seed(config, _MODEL_STREAM, 0), 2))
    rows = tf.cast(prior.sample(config.sample_rows, seed=address_seed), tf.int32)
    addresses = tf.repeat(rows[:, None], config.samples_per_row, axis=1)  # [rows, samples_per_row]
    drawn = model.sample_at(encoding, addresses, z_seed)
    probs = prior.probs_parameter().numpy()
    return {
        "memory_size": int(probs.size),
        "row_addresses": rows.numpy().tolist(),
        "row_prior_probabilities": probs[rows.numpy()].round(4).tolist(),
        "prior_entropy_nats": float(-(probs * np.log(np.maximum(probs, 1e-30))).sum()),
        "images": {"by_address": drawn[..., 0].numpy()},
    }


# Modes that need labelled classes and few-shot memories; the others serve every run.
FEW_SHOT_MODES = ("conditional", "memory_sweep", "classification")
MODES: dict[str, Callable[..., dict]] = {
    "nll": nll,
    "conditional": conditional,
    "memory_sweep": memory_sweep,
    "classification": classification,
    "samples": samples,
}
