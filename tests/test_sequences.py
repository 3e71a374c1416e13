"""Sequences: GMN's attention and full matching, and the causal pass that scores every x_t of a
sequence given x_<t in one call, for every model that reads a context."""

import numpy as np
import pytest
import tensorflow as tf

from vma_tf import objectives, tasks
from vma_tf.config import DataConfig, EpisodeConfig, ModelConfig, RunConfig, TrainConfig
from vma_tf.data import episodes
from vma_tf.data.episodes import Episode, causal_visibility, sample_sequence_episode
from vma_tf.errors import UserInputError
from vma_tf.models import REGISTRY, build_model
from vma_tf.models.gmn import GMN_MATCHINGS, PROTOTYPE_DIM, STRENGTH_RANGE
from vma_tf.visibility import grouped_matmul, visibility_groups

SEQUENCES, LENGTH, K = 2, 6, 3
SMALL = dict(latent_dim=8, embed_dim=16, conv_channels=8, hidden_units=32)


def _sequences(size, seed=0):
    return tf.cast(tf.random.stateless_uniform([SEQUENCES * LENGTH, size, size, 1], [seed, 1]) < 0.2, tf.float32)


def _gmn(pseudo_input=True, arch="conv", size=26, attention="full", matching="paper"):
    return build_model(ModelConfig(
        name="gmn", model_arch=arch, gmn_pseudo_input=pseudo_input, gmn_attention=attention, gmn_matching=matching,
        **SMALL
    ), size)


def test_causal_visibility_shows_each_target_the_earlier_images_of_its_own_sequence():
    visible = causal_visibility(2, 3, first_target=1).numpy()  # grouped: a row over its own sequence
    expected = np.zeros([4, 3], bool)
    expected[0, 0] = True  # sequence 0, t = 1 sees t = 0
    expected[1, :2] = True  # t = 2 sees t = 0, 1
    expected[2, 0] = True  # sequence 1
    expected[3, :2] = True
    np.testing.assert_array_equal(visible, expected)
    assert visibility_groups(causal_visibility(2, 3, first_target=1), 6) == 2


def batch_wide(visible: np.ndarray, memory_size: int) -> np.ndarray:
    """A grouped visibility mask [B, M / G] as the batch-wide one [B, M]: block-diagonal."""
    visible = np.asarray(visible)
    groups = memory_size // visible.shape[1]
    per_group = visible.shape[0] // groups
    wide = np.zeros([visible.shape[0], memory_size], bool)
    for target, row in enumerate(visible):
        group = target // per_group
        wide[target, group * visible.shape[1] : (group + 1) * visible.shape[1]] = row
    return wide


def test_sequence_episodes_hold_their_sequences_as_memory_and_targets():
    images = tf.constant(np.arange(5 * 20 * 4, dtype=np.uint8).reshape(5, 20, 2, 2) % 2)
    episode = sample_sequence_episode(images, 3, 2, 7, tf.constant([1, 2]), first_target=2)
    assert episode.memory.shape == (21, 2, 2, 1) and episode.targets.shape == (15, 2, 2, 1)
    assert episode.visible.shape == (15, 7)
    memory = episode.memory.numpy().reshape(3, 7, 2, 2)
    np.testing.assert_array_equal(episode.targets.numpy().reshape(3, 5, 2, 2), memory[:, 2:])
    labels = episode.memory_labels.numpy().reshape(3, 7)
    assert all(len(set(row)) <= 2 for row in labels)


@pytest.mark.parametrize("matching", GMN_MATCHINGS)
@pytest.mark.parametrize("pseudo_input", [True, False], ids=["pseudo_input", "conditional"])
def test_gmn_attention_sums_to_one_over_the_visible_entries_and_the_pseudo_input(pseudo_input, matching):
    model = _gmn(pseudo_input, matching=matching)
    sequences = _sequences(26)
    first = model.min_context_size
    grouped = causal_visibility(SEQUENCES, LENGTH, first)
    encoded, visible = model._in_groups(model.encode_context(sequences), grouped), model._visible(grouped)
    queries = tf.random.stateless_normal([4, visible.shape[0], SMALL["latent_dim"]], [3, 3])
    _, _, weights = model.controller.read(model.generator_query, queries, encoded.shared, visible)
    weights = weights.numpy()
    assert weights.shape == (4, *visible.shape)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights[:, ~visible.numpy()] == 0.0)
    if pseudo_input:  # x_1 reads the pseudo-input alone
        np.testing.assert_allclose(weights[:, 0, 0], 1.0)


def test_gmn_avg_reads_the_unweighted_mean_of_the_visible_prototypes():
    model = _gmn(attention="avg")
    encoded = model.encode_context(_sequences(26))  # one group
    visible = model._visible(tf.constant(batch_wide(causal_visibility(SEQUENCES, LENGTH), SEQUENCES * LENGTH)))
    inputs = tf.zeros([visible.shape[0], 0])
    read, _, _ = model.controller.read(model.generator_query, inputs, encoded.shared, visible)
    mask = visible.numpy().astype(np.float64)
    expected = (mask @ encoded.shared.prototypes.numpy()[0].astype(np.float64)) / mask.sum(-1, keepdims=True)
    np.testing.assert_allclose(read.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "arch, size, pseudo_input, matching",
    [("resnet", 28, True, "paper"), ("conv", 26, False, "paper"), ("resnet", 28, True, "authors_code")],
    ids=["resnet", "conv_conditional", "resnet_authors_code"],
)
def test_gmn_batched_causal_pass_equals_the_loop_over_t(arch, size, pseudo_input, matching):
    """q(z | x_t, X_<t), p(z | X_<t) and p(x_t | z, X_<t) at a fixed z, from one masked call over
    the whole batch and from one call per target with X_<t as its context."""
    model = _gmn(pseudo_input, arch, size, matching=matching)
    sequences = _sequences(size, seed=4)
    first = model.min_context_size
    visible = causal_visibility(SEQUENCES, LENGTH, first)
    positions = [(s, t) for s in range(SEQUENCES) for t in range(first, LENGTH)]
    x = tf.gather(sequences, [s * LENGTH + t for s, t in positions])
    z = tf.random.stateless_normal([len(positions), SMALL["latent_dim"]], [5, 5])

    def terms(x, context, visible, z):
        encoded, visible = model._in_groups(model.encode_context(context), visible), model._visible(visible)
        q_z = model.z_posterior(tf.cast(model.encoder(x), tf.float32), encoded, visible)
        p_z = model.z_prior(encoded, visible, tf.shape(x)[0])
        logits = model.likelihood(z, encoded, visible)[0].distribution.logits
        return np.concatenate([q_z.loc, q_z.stddev(), p_z.loc, p_z.stddev(), tf.reshape(logits, [len(z), -1])], -1)

    batched = terms(x, sequences, visible, z)
    looped = np.concatenate([
        terms(x[i : i + 1], sequences[s * LENGTH : s * LENGTH + t], None, z[i : i + 1])
        for i, (s, t) in enumerate(positions)
    ])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)


def test_the_authors_matching_is_a_clipped_strength_times_the_cosine_of_query_and_prototype():
    """With matching="authors_code" the first hop's logits, recomputed in NumPy from the query layer's
    PReLU-affine map, the strength's affine map and the raw prototypes, are beta(h) cos(f, psi) with
    beta(h) in [1e-10, 10]; each controller reads its own pseudo-input as its own key."""
    model = _gmn(matching="authors_code")
    context = model.encode_context(_sequences(26)[:5])
    shared, prior = context.shared, context.prior
    assert shared.prototypes.shape == (1, 6, PROTOTYPE_DIM) and shared.keys.shape == (1, 6, PROTOTYPE_DIM)
    np.testing.assert_allclose(shared.prototypes[0, 1:], prior.prototypes[0, 1:])  # the same entries ...
    assert not np.allclose(shared.prototypes[0, 0], prior.prototypes[0, 0])  # ... after their own x*

    query = model.generator_query
    # A strength pushed far out of range on both sides: the clip has to hold it.
    query.strength.bias.assign([0.0])
    query.strength.kernel.assign(tf.random.stateless_normal(query.strength.kernel.shape, [4, 4]) * 50.0)
    z = tf.random.stateless_normal([7, SMALL["latent_dim"]], [2, 3])
    state = tf.random.stateless_normal([7, SMALL["hidden_units"]], [3, 4])
    unit_query, strength = query(z, state)
    strength = strength.numpy()[:, 0]
    assert np.all(strength >= STRENGTH_RANGE[0]) and np.all(strength <= STRENGTH_RANGE[1])
    assert np.any(strength == STRENGTH_RANGE[0]) and np.any(strength == STRENGTH_RANGE[1])

    h = np.concatenate([z, state], -1).astype(np.float64) @ query.dense.kernel.numpy() + query.dense.bias.numpy()
    f = np.maximum(h, 0) - query.slope.numpy() * np.maximum(-h, 0)
    raw_strength = state.numpy() @ query.strength.kernel.numpy() + query.strength.bias.numpy()
    psi = shared.prototypes.numpy()[0].astype(np.float64)
    cosine = (f @ psi.T) / np.linalg.norm(f, axis=-1, keepdims=True) / np.linalg.norm(psi, axis=-1)
    expected = np.clip(raw_strength, *STRENGTH_RANGE) * cosine
    logits = grouped_matmul(unit_query, shared.keys, transpose_matrices=True) * strength[:, None]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_gmn_residual_nets_have_the_shapes_of_appendix_c():
    model = _gmn(arch="resnet", size=28)
    assert model.encoder(tf.zeros([3, 28, 28, 1])).shape == (3, PROTOTYPE_DIM)
    code = SMALL["latent_dim"] + PROTOTYPE_DIM + SMALL["hidden_units"]  # [z, r, h]
    assert model.decoder(tf.zeros([3, code])).shape == (3, 28, 28, 1)
    assert model.sample(model.encode_context(tf.zeros([0, 28, 28, 1])), 2, tf.constant([0, 0]))["images"].shape == (
        2, 28, 28, 1)


@pytest.mark.parametrize("name", sorted(name for name in REGISTRY if "sequence" in REGISTRY[name].tasks))
def test_a_target_never_reads_the_future(name):
    """x_t's log-weights, drawn with one seed for the whole batch, do not change when the images
    after t change."""
    model = build_model(ModelConfig(name=name, **SMALL), 26)
    sequences = _sequences(26, seed=6).numpy()
    changed = sequences.copy()
    cut = 3  # positions >= cut of every sequence are redrawn
    for s in range(SEQUENCES):
        changed[s * LENGTH + cut : (s + 1) * LENGTH] = 1.0 - changed[s * LENGTH + cut : (s + 1) * LENGTH]
    visible = causal_visibility(SEQUENCES, LENGTH)
    seed = tf.constant([7, 7])
    before = model.log_weights_in_context(sequences, sequences if model.reads_context else None, K, seed, visible)
    after = model.log_weights_in_context(changed, changed if model.reads_context else None, K, seed, visible)
    past = [s * LENGTH + t for s in range(SEQUENCES) for t in range(model.min_context_size, cut)]
    np.testing.assert_allclose(
        tf.gather(before.log_weights, past, axis=1), tf.gather(after.log_weights, past, axis=1), rtol=1e-5, atol=1e-4
    )
    future = [s * LENGTH + t for s in range(SEQUENCES) for t in range(cut, LENGTH)]
    assert not np.allclose(tf.gather(before.log_weights, future, axis=1), tf.gather(after.log_weights, future, axis=1))


def test_the_sequence_task_scores_only_targets_that_see_enough_entries():
    run = RunConfig(
        DataConfig(), EpisodeConfig(sequence_length=LENGTH, sequences_per_batch=SEQUENCES),
        ModelConfig(name="vma", **SMALL), TrainConfig(logdir="unused"), task="sequence",
    )
    model = build_model(run.model, 26)
    sequences, labels = _sequences(26, seed=8), tf.zeros([SEQUENCES * LENGTH], tf.int32)
    episode = Episode(sequences, labels, sequences, labels, causal_visibility(SEQUENCES, LENGTH))
    _, bound, record = tasks.build_task(run).loss(model, episode, tf.constant([1, 2]))
    assert bound.shape == (SEQUENCES * (LENGTH - 1),)  # x_1 of each sequence reads nothing: VMA skips it
    assert np.all(np.isfinite(bound.numpy()))


@pytest.mark.parametrize("name", ["gmn", "vma", "soft_attention"])
def test_attention_per_sequence_equals_the_batch_wide_mask(name):
    """A sequence batch's grouped mask [B, T] (each target attends over its own sequence) gives the
    log-weights, draws and diagnostics of the block-diagonal mask [B, S T] over the whole batch."""
    model = build_model(ModelConfig(name=name, **SMALL), 26)
    sequences = _sequences(26, seed=9)
    first = model.min_context_size
    grouped = causal_visibility(SEQUENCES, LENGTH, first)
    wide = tf.constant(batch_wide(grouped, SEQUENCES * LENGTH))
    x = tf.gather(sequences, [s * LENGTH + t for s in range(SEQUENCES) for t in range(first, LENGTH)])
    per_sequence = model.log_weights_in_context(x, sequences, K, tf.constant([3, 4]), grouped)
    batch = model.log_weights_in_context(x, sequences, K, tf.constant([3, 4]), wide)
    np.testing.assert_allclose(per_sequence.log_weights, batch.log_weights, rtol=1e-5, atol=1e-4)
    for diagnostic in model.DIAGNOSTICS:
        np.testing.assert_allclose(
            per_sequence.diagnostics[diagnostic], batch.diagnostics[diagnostic], rtol=1e-5, atol=1e-5
        )
    if per_sequence.reads.dtype.is_integer:  # hard reads: the same entries of the whole memory
        np.testing.assert_array_equal(per_sequence.reads, batch.reads)
    else:  # soft reads: the per-sequence weights are the batch-wide ones within the target's sequence
        rows = [t // (LENGTH - first) for t in range(x.shape[0])]
        within = np.stack([batch.reads[:, i, s * LENGTH : (s + 1) * LENGTH] for i, s in enumerate(rows)], axis=1)
        np.testing.assert_allclose(per_sequence.reads, within, atol=1e-6)


@pytest.mark.parametrize("name", sorted(name for name in REGISTRY if "sequence" in REGISTRY[name].tasks))
def test_a_sequence_scored_against_itself_has_the_log_weights_of_separate_encodings(name):
    """log_weights_of_context (the nets run once over images that are targets and entries) equals
    log_weights_in_context with the same images passed as both."""
    model = build_model(ModelConfig(name=name, **SMALL), 26)
    sequences = _sequences(26, seed=10)
    visible = causal_visibility(SEQUENCES, LENGTH)
    seed = tf.constant([5, 6])
    once = model.log_weights_of_context(sequences, K, seed, visible)
    twice = model.log_weights_in_context(sequences, sequences if model.reads_context else None, K, seed, visible)
    np.testing.assert_allclose(once.log_weights, twice.log_weights, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(once.log_likelihood, twice.log_likelihood, rtol=1e-5, atol=1e-4)


def test_the_matching_controller_steps_like_keras_gru_cell():
    """The controller's own GRU step, given a read's projected input r W, equals Keras's GRUCell on r."""
    controller = _gmn().controller
    read = tf.random.stateless_normal([5, PROTOTYPE_DIM], [1, 1])
    state = tf.random.stateless_normal([5, SMALL["hidden_units"]], [2, 2])
    expected, _ = controller.cell(read, [state])
    np.testing.assert_allclose(
        controller._update(controller.gate_inputs(read), state), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("leading, groups", [((), 3), ((1,), 3), ((2,), 3), ((2, 3), 3), ((2,), 1)])
@pytest.mark.parametrize("transpose", [False, True])
def test_grouped_matmul_multiplies_each_target_by_its_groups_matrix(leading, groups, transpose):
    rng = np.random.default_rng(0)
    per_group, inner, outer = 4, 5, 6
    values = rng.standard_normal([*leading, groups * per_group, inner]).astype(np.float32)
    matrices = rng.standard_normal([groups, inner, outer]).astype(np.float32)
    expected = np.concatenate(
        [values[..., g * per_group : (g + 1) * per_group, :] @ matrices[g] for g in range(groups)], axis=-2
    )
    product = grouped_matmul(values, np.swapaxes(matrices, 1, 2) if transpose else matrices, transpose)
    assert product.shape == expected.shape
    np.testing.assert_allclose(product, expected, rtol=1e-5, atol=1e-5)


def _drawings_by_identity(classes: int = 30, per_class: int = 20) -> tf.Tensor:
    """uint8 [classes, per_class, 1, 1] whose one pixel is the drawing's index: with the labels, an
    image tells which drawing of which class it is."""
    return tf.constant(np.tile(np.arange(per_class, dtype=np.uint8)[None, :, None, None], [classes, 1, 1, 1]))


def _repeats(num_classes: int, with_replacement: bool, sequences: int = 4000) -> np.ndarray:
    """bool [sequences, T]: whether x_t's exact drawing appears among x_<t."""
    images = _drawings_by_identity()
    drawn = [episodes.sample_sequence(images, num_classes, 20, tf.constant([index, 7]), with_replacement)
             for index in range(sequences)]
    identity = np.stack([labels.numpy() * 100 + pixels.numpy().reshape(-1) for pixels, labels in drawn])  # [S, T]
    return np.stack([[identity[s, t] in identity[s, :t] for t in range(20)] for s in range(sequences)])


def test_the_authors_sampler_repeats_drawings_at_its_closed_form_rate():
    """C = 1, drawings with replacement among 20: x_t (after n = t earlier images) repeats one of them
    with probability 1 - (19/20)^n."""
    rate = _repeats(1, with_replacement=True).mean(axis=0)
    expected = 1 - (19 / 20) ** np.arange(20)
    stderr = np.sqrt(expected * (1 - expected) / 4000) + 1e-9
    assert np.all(np.abs(rate - expected) <= 4 * stderr), (rate, expected)
    assert rate[19] > 0.55


def test_the_distinct_sampler_never_repeats_a_drawing():
    assert not _repeats(2, with_replacement=False, sequences=500).any()


@pytest.mark.parametrize("with_replacement", [True, False])
def test_with_the_classes_first_each_class_opens_the_sequence_once(with_replacement):
    images = tf.constant(np.arange(30, dtype=np.uint8).repeat(20).reshape(30, 20, 1, 1))  # pixel = class
    for index in range(200):
        sequence, labels = episodes.sample_sequence(images, 4, 20, tf.constant([index, 3]), with_replacement,
                                                    classes_first=True)
        labels = labels.numpy()
        np.testing.assert_array_equal(sequence.numpy()[:, 0, 0, 0], labels)
        classes = set(labels[4:]) | set(labels[:4])
        assert set(labels[:4]) == classes  # positions 0..C-1: one drawing of each of the sequence's classes
        if not with_replacement:
            assert len(set(labels[:4])) == 4


def test_with_the_classes_first_the_loss_starts_at_position_c():
    classes = 3
    run = RunConfig(
        DataConfig(),
        EpisodeConfig(sequence_length=LENGTH, sequences_per_batch=SEQUENCES, sequence_classes=classes,
                      sequence_classes_first=True),
        ModelConfig(name="gmn", gmn_pseudo_input=True, **SMALL), TrainConfig(logdir="unused"), task="sequence",
    )
    model = build_model(run.model, 26)
    sequences, labels = _sequences(26, seed=8), tf.zeros([SEQUENCES * LENGTH], tf.int32)
    episode = Episode(sequences, labels, sequences, labels, causal_visibility(SEQUENCES, LENGTH))
    task = tasks.build_task(run)
    _, bound, _ = task.loss(model, episode, tf.constant([1, 2]))
    assert bound.shape == (SEQUENCES * (LENGTH - classes),)  # even a model with a pseudo-input skips x_1..x_C
    every = model.log_weights_of_context(sequences, run.train.num_samples, tf.constant([1, 2]), episode.visible)
    scored = np.tile(np.arange(LENGTH) >= classes, SEQUENCES)
    expected = objectives.multi_sample_bound(every.log_weights).numpy()[scored]
    np.testing.assert_allclose(bound.numpy(), expected, rtol=1e-5)


def test_the_classes_first_need_a_position_left_to_score():
    run = RunConfig(
        DataConfig(dataset="omniglot"),
        EpisodeConfig(sequence_length=4, sequence_classes=4, sequence_classes_first=True),
        ModelConfig(name="gmn", **SMALL), TrainConfig(logdir="unused"), task="sequence",
    )
    with pytest.raises(UserInputError, match="--sequence_classes_first leaves nothing to score"):
        tasks.build_task(run).validate()
