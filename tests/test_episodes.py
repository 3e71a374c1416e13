"""Episode sampling: disjoint targets and memory, requested classes, determinism, validation."""

import numpy as np
import pytest
import tensorflow as tf

from vma_tf.config import EpisodeConfig
from vma_tf.data import episodes
from vma_tf.data.omniglot import CharacterSet
from vma_tf.errors import UserInputError
from vma_tf.evaluation import few_shot

CLASSES, PER_CLASS = 12, 20


@pytest.fixture(scope="module")
def characters():
    """Each image is filled with its own id (class * 20 + drawing), so images can be traced back."""
    ids = np.arange(CLASSES * PER_CLASS, dtype=np.uint8).reshape(CLASSES, PER_CLASS)
    images = np.broadcast_to(ids[:, :, None, None], (CLASSES, PER_CLASS, 3, 3)).copy()
    return CharacterSet(images, np.arange(CLASSES, dtype=np.int32), tuple("a" * CLASSES))


def _ids(images):
    return images.numpy()[:, 0, 0, 0].astype(int)


@pytest.mark.parametrize("confounding", [0, 3])
def test_episodes_are_disjoint_and_labelled(characters, confounding):
    config = EpisodeConfig(classes_per_batch=4, targets_per_class=3, memory_per_class=5,
                           confounding_classes=confounding)
    for step, episode in enumerate(episodes.episode_dataset(characters, config, seed=3).take(20)):
        target_ids, memory_ids = _ids(episode.targets), _ids(episode.memory)
        assert episode.targets.shape == (12, 3, 3, 1) and episode.memory.shape == (config.few_shot_memory_size, 3, 3, 1)
        assert not set(target_ids) & set(memory_ids), step
        assert len(set(memory_ids)) == config.few_shot_memory_size and len(set(target_ids)) == 12
        np.testing.assert_array_equal(target_ids // PER_CLASS, episode.target_labels.numpy())
        np.testing.assert_array_equal(memory_ids // PER_CLASS, episode.memory_labels.numpy())
        target_classes = set(episode.target_labels.numpy())
        assert len(target_classes) == 4
        memory_classes, counts = np.unique(episode.memory_labels.numpy(), return_counts=True)
        assert len(memory_classes) == 4 + confounding and set(counts) == {5}
        assert target_classes <= set(memory_classes)


def test_episodes_depend_only_on_seed_and_step(characters):
    config = EpisodeConfig(classes_per_batch=2, targets_per_class=2, memory_per_class=2)
    run = list(episodes.episode_dataset(characters, config, seed=5).take(6))
    resumed = list(episodes.episode_dataset(characters, config, seed=5, start_step=4).take(2))
    other_seed = next(iter(episodes.episode_dataset(characters, config, seed=6)))
    for a, b in zip(run[4:], resumed):
        np.testing.assert_array_equal(a.targets.numpy(), b.targets.numpy())
        np.testing.assert_array_equal(a.memory.numpy(), b.memory.numpy())
    assert not np.array_equal(run[0].targets.numpy(), other_seed.targets.numpy())
    assert not np.array_equal(run[0].targets.numpy(), run[1].targets.numpy())


def test_classes_are_drawn_uniformly(characters):
    config = EpisodeConfig(classes_per_batch=3, targets_per_class=1, memory_per_class=1)
    seen = np.concatenate([
        e.target_labels.numpy() for e in episodes.episode_dataset(characters, config, seed=0).take(400)
    ])
    counts = np.bincount(seen, minlength=CLASSES)
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()


@pytest.mark.parametrize(
    "config, message",
    [
        (EpisodeConfig(memory_per_class=0), "memory_per_class must be at least 1"),
        (EpisodeConfig(classes_per_batch=13), "needs 13 classes .* split has 12"),
        (EpisodeConfig(classes_per_batch=10, confounding_classes=3), "needs 13 classes"),
        (EpisodeConfig(targets_per_class=10, memory_per_class=11), "only 20 images"),
    ],
)
def test_impossible_episodes_are_rejected(characters, config, message):
    with pytest.raises(UserInputError, match=message):
        episodes.episode_dataset(characters, config, seed=0)



@pytest.mark.parametrize("num_classes", [1, 3, 12])
def test_sequences_hold_distinct_drawings_of_the_requested_classes(characters, num_classes):
    images = tf.constant(characters.images)
    for index in range(5):
        sequence, labels = episodes.sample_sequence(images, num_classes, 20, tf.constant([index, 1]))
        ids, labels = _ids(sequence), labels.numpy()
        assert sequence.shape == (20, 3, 3, 1) and len(set(ids)) == 20  # no drawing twice
        np.testing.assert_array_equal(ids // PER_CLASS, labels)
        assert len(set(labels)) <= num_classes
    again, _ = episodes.sample_sequence(images, num_classes, 20, tf.constant([4, 1]))
    np.testing.assert_array_equal(again.numpy(), sequence.numpy())
    if num_classes == 1:
        assert sorted(ids % PER_CLASS) == list(range(PER_CLASS))


def test_classification_episodes_label_support_and_queries_consistently(characters):
    images = tf.constant(characters.images)
    for index in range(10):
        episode, support_labels, query_labels = few_shot.labelled_episode(
            images, ways=5, shots=3, queries_per_class=2, seed=tf.constant([index, 2])
        )
        support_ids, query_ids = _ids(episode.memory), _ids(episode.targets)
        assert not set(support_ids) & set(query_ids)
        assert sorted(np.unique(support_labels, return_counts=True)[1]) == [3] * 5
        assert sorted(np.unique(query_labels, return_counts=True)[1]) == [2] * 5
        for query_class, label in zip(query_ids // PER_CLASS, query_labels):
            assert set(support_ids[support_labels == label] // PER_CLASS) == {query_class}
