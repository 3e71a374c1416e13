"""Few-shot classification with a generative memory model, without fine-tuning (VMA paper, 4.2).

Any model that reads memory entries serves. With the support set as memory M, label(a) the class
of m_a and r(a | x) the model's entry posterior (VMA: q(a|x); soft attention: the attention
weights at the mean of q(z|x)):
    feed-forward:         p(c|x) = sum_{a: label(a) = c} r(a|x)
    importance-weighted:  p(c|x) ~ sum_k w_k R_k(c) / sum_k w_k, self-normalised importance
                          sampling with K draws of the latents from q, R_k(c) the weight that
                          sample k's read puts on class c (VMA: [label(a_k) = c]).
The second corrects the entry posterior by how well each read explains x; for VMA, classes
that q(a|x) never proposes get no mass.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from vma_tf.config import EpisodeConfig
from vma_tf.data import episodes
from vma_tf.models import MemoryReader, read_weights

_TASK = re.compile(r"^(\d+)way(\d+)shot$")


def parse_task(name: str) -> tuple[int, int]:
    """"20way5shot" -> (ways, shots) = (20, 5); ValueError for anything else."""
    match = _TASK.match(name)
    if not match or int(match[1]) < 2 or int(match[2]) < 1:
        raise ValueError(f"a classification task is named like 5way1shot (ways >= 2, shots >= 1), got {name!r}")
    return int(match[1]), int(match[2])


def labelled_episode(
    images: tf.Tensor, ways: int, shots: int, queries_per_class: int, seed: tf.Tensor
) -> tuple[episodes.Episode, np.ndarray, np.ndarray]:
    """An N-way k-shot episode from images uint8 [C, N, H, W]: `ways` classes, `shots` support
    and `queries_per_class` query images of each, all distinct drawings.

    Returns the episode (support = memory, queries = targets, labels = class indices of the
    split) and the support and query labels renumbered into range(ways), int [M] and [B].
    """
    shape = EpisodeConfig(classes_per_batch=ways, targets_per_class=queries_per_class, memory_per_class=shots)
    episode = episodes.sample_episode(images, shape, seed)
    classes = np.unique(episode.memory_labels.numpy())
    support_labels = np.searchsorted(classes, episode.memory_labels.numpy())
    query_labels = np.searchsorted(classes, episode.target_labels.numpy())
    return episode, support_labels, query_labels


class FewShotClassifier:
    """Class posteriors of queries given a labelled support set, from a model that reads memory entries."""

    def __init__(self, model: MemoryReader, iw_samples: int):
        self.model = model
        self.iw_samples = iw_samples
        self._posteriors = tf.function(self._class_posteriors, reduce_retracing=True)

    def _class_posteriors(self, queries, support, support_labels, num_classes: int, seed):
        encoded = self.model.encode_context(support)
        label_one_hot = tf.one_hot(support_labels, num_classes)  # [M, N]
        feed_forward = tf.matmul(self.model.entry_posterior(queries, encoded), label_one_hot)
        record = self.model.log_weights(queries, encoded, self.iw_samples, seed)
        normalised_weights = tf.nn.softmax(record.log_weights, axis=0)  # [K, B]
        reads = read_weights(record.reads, tf.shape(support)[0])  # [K, B, M]
        importance_weighted = tf.einsum("kb,kbm,mn->bn", normalised_weights, reads, label_one_hot)
        return feed_forward, importance_weighted

    def __call__(
        self, queries: tf.Tensor, support: tf.Tensor, support_labels: np.ndarray, num_classes: int, seed: tf.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries [B, H, W, 1], support [M, H, W, 1] with labels int [M] in range(num_classes).

        Returns (feed-forward p(c|x), importance-weighted p(c|x)), each float32 [B, num_classes].
        """
        feed_forward, importance_weighted = self._posteriors(
            queries, support, tf.constant(support_labels, tf.int32), num_classes, seed
        )
        return feed_forward.numpy(), importance_weighted.numpy()
