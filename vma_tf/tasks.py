"""Tasks: the data protocols a model is trained and tested with. A task owns its inputs (the
training batches, the test batches of `eval.py --mode=nll`) and its loss; the trainer and the
evaluation modes know neither. `RunConfig.task` names the task:

    few_shot  targets, and a memory of other drawings of their classes (Omniglot)
    recall    a memory of random images, the targets drawn from it (paper section 4.1)
    learned   batches of images; the model reads its own trained memory (ModelConfig.learned_memory_size)
    none      batches of images without a memory
    sequence  sequences of images from a few classes; each image reads the ones before it

Every batch is an `Episode` (a learned or absent memory is empty) and a pure function of
(seed, step), so a resumed run continues the exact sequence of an uninterrupted one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from vma_tf import objectives
from vma_tf.config import SEQUENCE_SAMPLINGS, TASKS, DataConfig, EvalConfig, RunConfig
from vma_tf.data import episodes, flat_images, labelled
from vma_tf.data.episodes import Episode
from vma_tf.data.omniglot import CharacterSet
from vma_tf.errors import UserInputError, require_positive
from vma_tf.models import GenerativeModel, LogWeights, context_for

_IMAGE_GRID_COLUMNS = 8  # image summaries of batches without classes
_MEMORY_IMAGES_STREAM = 31  # numpy's seed stream of the images a learned memory starts from


class Task(abc.ABC):
    """The few-shot, recall and image-batch protocols share the loss; they differ in their data."""

    # Whether each target is itself an entry of its batch's memory (recall): then eval reports
    # how often the model's most probable entry is the target's own.
    targets_in_memory = False
    # Whether the model reads a memory of its own (ModelConfig.learned_memory_size > 0) in place
    # of one from the data.
    reads_learned_memory = False

    def __init__(self, run: RunConfig):
        self.run = run

    @property
    def grid_columns(self) -> tuple[int, int]:
        """Image summaries: (targets per row, memory entries per row)."""
        return _IMAGE_GRID_COLUMNS, _IMAGE_GRID_COLUMNS

    def validate(self) -> None:
        """Raises UserInputError when the run's data or settings cannot serve this task; reads no
        data. Subclasses add their checks to this one's."""
        learned = self.run.model.learned_memory_size
        if self.reads_learned_memory and not learned:
            raise UserInputError(f"--task={self.run.task} needs a learned memory: pass a positive --memory_size")
        if learned and not self.reads_learned_memory:
            raise UserInputError(f"a learned memory of {learned} entries needs --task=learned, not {self.run.task}")

    @abc.abstractmethod
    def training_data(self) -> Callable[[int], tf.data.Dataset]:
        """Loads the training split; returns the dataset of the Episodes of the training steps from
        a given one on."""
        raise NotImplementedError

    def training_images(self, count: int, seed: int) -> tf.Tensor:
        """`count` distinct random training images, float32 [count, S, S, 1], a function of `seed`:
        where a learned memory starts."""
        raise UserInputError(f"--task={self.run.task} has no training images to start a memory from")

    @abc.abstractmethod
    def test_batches(
        self, test: CharacterSet | np.ndarray, config: EvalConfig, seed_of: Callable[[int], tf.Tensor]
    ) -> tuple[list[Episode], str]:
        """`config.num_episodes` test batches shaped like the training batches (batch i drawn with
        seed_of(i)), and a description of their memory."""
        raise NotImplementedError

    def loss(
        self, model: GenerativeModel, batch: Episode, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, LogWeights]:
        """(the loss to minimise [], the K-sample bound of each scored target [B'] in nats, the
        LogWeights). A target that sees fewer than `min_scored_context(model)` entries (x_1 of a
        sequence, for a model without a pseudo-input) is not scored."""
        train = self.run.train
        # Every target goes through the model, so that the batch keeps its static size (a model may
        # choose its computation by it); the unscored ones are dropped from the record afterwards.
        record = self.log_weights(model, batch, train.num_samples, seed)
        least = self.min_scored_context(model)
        if batch.visible is not None and least:
            scored = tf.reduce_sum(tf.cast(batch.visible, tf.int32), axis=1) >= least
            record = scored_targets(record, scored)
        loss, bound = objectives.bound_loss(record, train.vimco_baseline)
        return loss, bound, record


    def min_scored_context(self, model: GenerativeModel) -> int:
        """The fewest visible entries a target needs to be scored."""
        return model.min_context_size

    def log_weights(self, model: GenerativeModel, batch: Episode, num_samples: int, seed: tf.Tensor) -> LogWeights:
        """The model's K = num_samples log-weights of every target of the batch."""
        return model.log_weights_in_context(
            batch.targets, context_for(model, batch.memory), num_samples, seed, batch.visible
        )


def scored_targets(record: LogWeights, scored: tf.Tensor) -> LogWeights:
    """The record of the targets that scored bool [B] keeps: every per-sample field [K, B', ...] but
    `likelihood`, which still covers all B targets."""
    def keep(values: tf.Tensor | None) -> tf.Tensor | None:
        return None if values is None else tf.boolean_mask(values, scored, axis=1)

    return record._replace(
        log_weights=keep(record.log_weights),
        log_likelihood=keep(record.log_likelihood),
        score_log_prob=keep(record.score_log_prob),
        diagnostics={name: keep(value) for name, value in record.diagnostics.items()},
        reads=keep(record.reads),
    )


class FewShotTask(Task):
    """Few-shot Omniglot episodes (paper section 4.2)."""

    @property
    def grid_columns(self) -> tuple[int, int]:
        shape = self.run.episodes
        return shape.targets_per_class, shape.memory_per_class

    def validate(self) -> None:
        super().validate()
        if not labelled.has_classes(self.run.data.dataset):
            raise UserInputError(
                f"--task=few_shot needs labelled classes: use --dataset={'|'.join(labelled.LOADERS)}, or "
                "--task=recall|learned"
            )

    def training_data(self) -> Callable[[int], tf.data.Dataset]:
        characters = labelled.load_splits(self.run.data)["train"]
        episodes.validate(characters, self.run.episodes)
        seed = self.run.train.seed
        return lambda start: episodes.episode_dataset(
            characters, self.run.episodes, seed, start_step=start
        )

    def test_batches(self, test, config, seed_of):
        shape = self.run.episodes
        classes = shape.classes_per_batch + shape.confounding_classes
        per_class = shape.targets_per_class + shape.memory_per_class
        if classes > test.num_classes or per_class > test.images_per_class:
            raise UserInputError(
                f"the training episode shape needs {classes} classes of {per_class} images; the test split has "
                f"{test.num_classes} of {test.images_per_class}"
            )
        images = tf.constant(test.images)
        batches = [episodes.sample_episode(images, shape, seed_of(index)) for index in range(config.num_episodes)]
        description = (
            f"{shape.memory_per_class} other images of each of the {shape.classes_per_batch} target classes"
            + (f" + {shape.confounding_classes} confounding classes" if shape.confounding_classes else "")
        )
        return batches, description


class SequenceTask(Task):
    """Sequences of `sequence_length` images from `sequence_classes` classes each (Bartunov & Vetrov
    2017, section 3): every image x_t is a target that reads x_<t, all T of a sequence in one pass
    through a causal mask. The model maximises sum_t log p(x_t | x_<t)."""

    @property
    def grid_columns(self) -> tuple[int, int]:
        return self.run.episodes.sequence_length, self.run.episodes.sequence_length

    def validate(self) -> None:
        super().validate()
        shape = self.run.episodes
        if not labelled.has_classes(self.run.data.dataset):
            raise UserInputError(
                f"--task=sequence needs labelled classes: use --dataset={'|'.join(labelled.LOADERS)}"
            )
        if min(shape.sequence_length, shape.sequences_per_batch, shape.sequence_classes) < 1:
            raise UserInputError("--sequence_length, --sequences_per_batch and --sequence_classes must be at least 1")
        if shape.sequence_length < 2:
            raise UserInputError("--sequence_length must be at least 2: x_1 has nothing to read")
        if shape.sequence_sampling not in SEQUENCE_SAMPLINGS:
            raise UserInputError(f"--sequence_sampling must be one of {SEQUENCE_SAMPLINGS}, got "
                                 f"{shape.sequence_sampling!r}")
        if shape.sequence_classes_first and shape.sequence_classes >= shape.sequence_length:
            raise UserInputError(
                f"--sequence_classes_first leaves nothing to score in a sequence of {shape.sequence_length} images "
                f"from {shape.sequence_classes} classes: use a --sequence_length above --sequence_classes"
            )

    def min_scored_context(self, model):
        # With the classes first, the loss starts at position C (the GMN authors' start_from).
        shape = self.run.episodes
        return max(model.min_context_size, shape.sequence_classes if shape.sequence_classes_first else 0)

    def log_weights(self, model, batch, num_samples, seed):
        # A training batch's targets are its memory, every image of every sequence (a test batch
        # leaves out the first images): the model may then run its nets once over them.
        if batch.targets.shape[0] == batch.memory.shape[0]:
            return model.log_weights_of_context(batch.memory, num_samples, seed, batch.visible)
        return super().log_weights(model, batch, num_samples, seed)

    def _check(self, characters: CharacterSet, split: str) -> None:
        shape = self.run.episodes
        # Without replacement, one class may fill the whole sequence with distinct drawings.
        distinct_drawings = shape.sequence_length if shape.sequence_sampling == "distinct" else 1
        if shape.sequence_classes > characters.num_classes or distinct_drawings > characters.images_per_class:
            raise UserInputError(
                f"a sequence of {shape.sequence_length} images from {shape.sequence_classes} classes needs that many "
                f"classes and drawings per class; the {split} split has {characters.num_classes} classes of "
                f"{characters.images_per_class}"
            )

    def training_data(self) -> Callable[[int], tf.data.Dataset]:
        characters = labelled.load_splits(self.run.data)["train"]
        self._check(characters, "training")
        seed = self.run.train.seed
        return lambda start: episodes.sequence_dataset(
            characters, self.run.episodes, seed, start_step=start
        )

    def test_batches(self, test, config, seed_of):
        # Every model of a layout scores the same targets: x_2..x_T (n >= 1 conditioning images; the
        # n = 0 column is `conditional`'s), or from x_(C+1) on with the classes first.
        self._check(test, "test")
        shape = self.run.episodes
        first_target = shape.sequence_classes if shape.sequence_classes_first else 1
        images = tf.constant(test.images)
        batches = [
            episodes.sample_sequence_episode(
                images, shape.sequences_per_batch, shape.sequence_classes, shape.sequence_length, seed_of(index),
                first_target=first_target, with_replacement=shape.sequence_sampling == "with_replacement",
                classes_first=shape.sequence_classes_first,
            )
            for index in range(config.num_episodes)
        ]
        layout = ", one drawing of each class first" if shape.sequence_classes_first else ""
        return batches, (
            f"the earlier images of sequences of {shape.sequence_length} from {shape.sequence_classes} classes"
            f"{layout} (targets: x_{first_target + 1} to x_{shape.sequence_length})"
        )


class ImageBatchTask(Task):
    """Batches of images without a memory from the data (task "none")."""

    def validate(self) -> None:
        super().validate()
        require_positive({"--batch_size": self.run.episodes.images_per_batch})

    def training_data(self) -> Callable[[int], tf.data.Dataset]:
        train_images = flat_images.load_splits(self.run.data)["train"]
        shape, seed = self.run.episodes, self.run.train.seed
        return lambda start: flat_images.batch_dataset(
            train_images, self.memory_size, shape.images_per_batch, seed, start_step=start
        )

    @property
    def memory_size(self) -> int:
        """The random training images in each batch's memory (0: none)."""
        return 0

    def test_batches(self, test, config, seed_of):
        # Distinct random test images, batch by batch: every image at most once.
        pixels = flat_images.flattened(test)
        order = np.random.default_rng(np.asarray(seed_of(0)).view(np.uint32)).permutation(len(pixels))
        batch_size = self.run.episodes.images_per_batch
        chunks = [order[start : start + batch_size] for start in range(0, len(pixels), batch_size)]
        batches = [
            Episode(tf.constant(pixels[chunk, ..., None], tf.float32), tf.constant(chunk, tf.int32), None, None)
            for chunk in chunks[: config.num_episodes]
        ]
        return batches, self.memory_description

    @property
    def memory_description(self) -> str:
        """The test batches' memory, as eval.py reports it."""
        return "none"


class RecallTask(ImageBatchTask):
    """Train to recall (paper section 4.1, Figure 2A): recall_memory_size random images, the
    targets drawn from them."""

    targets_in_memory = True

    def validate(self) -> None:
        super().validate()
        require_positive({"--memory_size": self.memory_size})

    @property
    def memory_size(self) -> int:
        return self.run.episodes.recall_memory_size

    def test_batches(self, test, config, seed_of):
        pixels = flat_images.flattened(test)
        memory_size = config.recall_memory_size or self.memory_size
        if memory_size > len(pixels):
            raise UserInputError(f"a recall memory of {memory_size} test images, but the test split has {len(pixels)}")
        pixels = tf.constant(pixels)
        batches = [
            flat_images.sample_recall_episode(pixels, memory_size, self.run.episodes.images_per_batch, seed_of(index))
            for index in range(config.num_episodes)
        ]
        return batches, f"{memory_size} random test images; the targets are drawn from them"


class LearnedMemoryTask(ImageBatchTask):
    """Batches of images without a memory from the data: the model reads its learned memory."""

    reads_learned_memory = True

    def training_images(self, count, seed):
        train_images = flat_images.load_splits(self.run.data)["train"]
        if count > len(train_images):
            raise UserInputError(f"--memory_size={count} but the training split has {len(train_images)} images")
        chosen = np.random.default_rng([seed, _MEMORY_IMAGES_STREAM]).choice(len(train_images), count, replace=False)
        return tf.constant(train_images[chosen, ..., None], tf.float32)

    @property
    def memory_description(self) -> str:
        return f"the learned memory ({self.run.model.learned_memory_size} entries)"


TASK_CLASSES: dict[str, type[Task]] = {
    "few_shot": FewShotTask,
    "recall": RecallTask,
    "learned": LearnedMemoryTask,
    "none": ImageBatchTask,
    "sequence": SequenceTask,
}


def build_task(run: RunConfig) -> Task:
    """The task `run.task` names; UserInputError for an unknown one."""
    if run.task not in TASK_CLASSES:
        raise UserInputError(f"--task must be one of {TASKS}, got {run.task!r}")
    return TASK_CLASSES[run.task](run)


def load_test_split(data: DataConfig) -> CharacterSet | np.ndarray:
    """The test split: Omniglot's characters by class (the modes that need classes use them), or
    MNIST's images uint8 [N, 28, 28]."""
    if labelled.has_classes(data.dataset):
        return labelled.load_splits(data)["test"]
    return flat_images.load_splits(data)["test"]
