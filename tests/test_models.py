"""The model contract, for every registered model (a new model joins by its registry name), and
the capabilities and math particular to each: VMA's addressing, soft attention's read."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from vma_tf import models, nets, objectives
from vma_tf.config import ModelConfig
from vma_tf.errors import UserInputError
from vma_tf.evaluation.bounds import BoundEvaluator
from vma_tf.export import LOG_LIKELIHOOD_SEED, export_saved_model
from vma_tf.models import REGISTRY, AddressedMemory, AttendingMemory, MemoryReader, build_model, context_for

B, M, K, S, Z = 5, 7, 3, 26, 8
SMALL = dict(latent_dim=Z, embed_dim=16, conv_channels=8, hidden_units=32)


def _images(count, seed):
    return tf.cast(tf.random.stateless_uniform([count, S, S, 1], [seed, 0]) < 0.2, tf.float32)


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def model(request):
    return build_model(ModelConfig(name=request.param, **SMALL), S)


def _encoded(model, memory):
    return model.encode_context(context_for(model, memory))


def test_log_weights_have_the_contracts_shapes_and_are_finite(model):
    x, memory = _images(B, 1), _images(M, 2)
    record = model.log_weights(x, _encoded(model, memory), K, tf.constant([0, 1]))
    assert record.log_weights.shape == (K, B) and record.log_likelihood.shape == (K, B)
    assert np.all(np.isfinite(record.log_weights.numpy()))
    assert set(record.diagnostics) == set(model.DIAGNOSTICS)
    for name, value in record.diagnostics.items():
        assert value.shape == (K, B), name
    assert record.likelihood.batch_shape == (K, B) and record.likelihood.event_shape == (S, S, 1)
    # log p(x|latents) is the Bernoulli log-probability of x under the likelihood's own logits.
    logits = record.likelihood.distribution.logits.numpy().astype(np.float64)
    pixels = x.numpy().astype(np.float64)
    expected = (pixels * logits - np.logaddexp(0.0, logits)).reshape(K, B, -1).sum(-1)
    np.testing.assert_allclose(record.log_likelihood.numpy(), expected, rtol=1e-4)
    if record.score_log_prob is not None:
        assert record.score_log_prob.shape == (K, B)
    if isinstance(model, MemoryReader):
        assert model.reads_context
        probs = model.entry_posterior(x, _encoded(model, memory)).numpy()
        assert probs.shape == (B, M)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    else:
        assert record.reads is None


def test_the_bound_tightens_with_more_samples(model):
    x, memory = _images(32, 3), _images(6, 4)
    evaluator = BoundEvaluator(model)
    nll = [evaluator(x, memory, k, tf.constant([5, k])).nll.mean() for k in (1, 10, 100)]
    # The gain from more samples is about half the variance of log w: an untrained model whose
    # posterior equals its prior (GMN: both heads start alike) has next to none.
    log_weights = model.log_weights(x, _encoded(model, memory), 100, tf.constant([6, 6])).log_weights
    spread = float(tf.math.reduce_std(log_weights, axis=0).numpy().mean())
    if spread > 0.3:
        assert nll[0] > nll[1] > nll[2], nll
    else:
        np.testing.assert_allclose(nll, nll[0], atol=3 * spread + 1e-3)


def test_samples_are_reproducible_under_a_seed(model):
    encoded = _encoded(model, _images(M, 5))
    first = model.sample(encoded, 6, tf.constant([3, 4]))
    again = model.sample(encoded, 6, tf.constant([3, 4]))
    other = model.sample(encoded, 6, tf.constant([3, 5]))
    assert first["images"].shape == (6, S, S, 1)
    np.testing.assert_array_equal(first["images"].numpy(), again["images"].numpy())
    assert not np.array_equal(first["images"].numpy(), other["images"].numpy())
    if isinstance(model, AddressedMemory):
        addresses = first["addresses"].numpy()
        assert addresses.shape == (6,) and np.all((addresses >= 0) & (addresses < M))


def test_the_objective_follows_the_record(model):
    """VIMCO when the record has a score term; otherwise minus the mean K-sample bound, for any K."""
    x, memory = _images(B, 6), _images(M, 7)
    record = model.log_weights(x, _encoded(model, memory), K, tf.constant([1, 1]))
    loss, bound = objectives.bound_loss(record)
    np.testing.assert_allclose(bound.numpy(), objectives.multi_sample_bound(record.log_weights).numpy(), rtol=1e-6)
    if record.score_log_prob is None:
        np.testing.assert_allclose(loss.numpy(), -bound.numpy().mean(), rtol=1e-6)
        single = model.log_weights(x, _encoded(model, memory), 1, tf.constant([1, 1]))
        assert np.isfinite(objectives.bound_loss(single)[0].numpy())
    else:
        expected, _ = objectives.vimco_surrogate_loss(record.log_weights, record.score_log_prob)
        np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)
    assert REGISTRY[model.name].min_num_samples == (1 if record.score_log_prob is None else 2)


# Runs in a fresh interpreter outside the repository, with `import vma_tf` made impossible.
LOAD_WITHOUT_PACKAGE = textwrap.dedent("""
    import sys
    sys.modules["vma_tf"] = None
    import numpy as np, tensorflow as tf
    directory, inputs, outputs = sys.argv[1:]
    data = np.load(inputs)
    model = tf.saved_model.load(directory)
    memory = {"memory": tf.constant(data["memory"])} if "memory" in \\
        model.signatures["sample"].structured_input_signature[1] else {}
    results = {"signatures": np.array(sorted(model.signatures))}
    results["nll"] = model.signatures["log_likelihood"](
        x=tf.constant(data["x"]), num_samples=tf.constant(50), **memory)["nll_nats"].numpy()
    for seed in (1, 2):
        drawn = model.signatures["sample"](num_samples=tf.constant(9), seed=tf.constant(seed), **memory)
        results[f"images{seed}"] = drawn["images"].numpy()
    results["default"] = model.signatures["serving_default"](
        num_samples=tf.constant(9), seed=tf.constant(1), **memory)["images"].numpy()
    for name, output in (("address_posterior", "probs"), ("attention", "weights")):
        if name in model.signatures:
            results[name] = model.signatures[name](x=tf.constant(data["x"]), **memory)[output].numpy()
    if "encode_memory" in model.signatures:  # the same queries against a memory encoded once
        encoded = model.signatures["encode_memory"](**memory)
        results["encoded_nll"] = model.signatures["log_likelihood_encoded"](
            x=tf.constant(data["x"]), num_samples=tf.constant(50), **encoded)["nll_nats"].numpy()
        results["encoded_images1"] = model.signatures["sample_encoded"](
            num_samples=tf.constant(9), seed=tf.constant(1), **encoded)["images"].numpy()
        results["encoded_address_posterior"] = model.signatures["address_posterior_encoded"](
            x=tf.constant(data["x"]), **encoded)["probs"].numpy()
    # Every signature again through the TF1 loader, the path of saved_model_cli and TF Serving.
    feeds = {"x": data["x"], "memory": data["memory"], "num_samples": np.int32(7), "seed": np.int32(3)}
    if "encode_memory" in model.signatures:
        feeds.update({k: v.numpy() for k, v in model.signatures["encode_memory"](**memory).items()})
    expected = {name: {k: v.numpy() for k, v in function(**{
        arg: tf.constant(feeds[arg]) for arg in function.structured_input_signature[1]}).items()}
        for name, function in model.signatures.items()}
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], directory)
        for name in expected:
            signature = graph.signature_def[name]
            got = session.run({k: v.name for k, v in signature.outputs.items()},
                              {v.name: feeds[k] for k, v in signature.inputs.items()})
            for key, value in got.items():
                np.testing.assert_allclose(value, expected[name][key], rtol=1e-5, atol=1e-6, err_msg=name)
            results[f"tf1_checked_{name}"] = np.array(True)
    np.savez(outputs, **results)
    try:
        import vma_tf  # noqa: F401
        print("vma_tf importable")
    except ImportError:
        print("vma_tf blocked")
""")


def test_the_export_round_trips_through_plain_tensorflow(model, tmp_path):
    x, memory = _images(B, 8).numpy(), _images(M, 9).numpy()
    export_saved_model(model, S, str(tmp_path / "saved_model"))
    np.savez(tmp_path / "inputs.npz", x=x, memory=memory)
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_PACKAGE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "saved_model"), str(tmp_path / "inputs.npz"),
         str(tmp_path / "out.npz")],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vma_tf blocked" in result.stdout
    loaded = np.load(tmp_path / "out.npz")

    expected_signatures = {"sample", "serving_default", "log_likelihood"}
    encoded = _encoded(model, tf.constant(memory))
    if isinstance(model, AddressedMemory):
        expected_signatures.add("address_posterior")
        probs = model.address_posterior(tf.constant(x), encoded).probs_parameter().numpy()
        np.testing.assert_allclose(loaded["address_posterior"], probs, atol=1e-5)
        expected_signatures |= {"encode_memory", "sample_encoded", "log_likelihood_encoded",
                                "address_posterior_encoded"}
        np.testing.assert_allclose(loaded["encoded_address_posterior"], probs, atol=1e-5)
        np.testing.assert_allclose(loaded["encoded_nll"], loaded["nll"], rtol=1e-5)
        np.testing.assert_array_equal(loaded["encoded_images1"], loaded["images1"])
    if isinstance(model, AttendingMemory):
        expected_signatures.add("attention")
        np.testing.assert_allclose(loaded["attention"], model.attention(tf.constant(x), encoded).numpy(), atol=1e-5)
    assert set(loaded["signatures"]) == expected_signatures
    assert {key.removeprefix("tf1_checked_") for key in loaded if key.startswith("tf1_checked_")} == expected_signatures
    nll = BoundEvaluator(model)(tf.constant(x), tf.constant(memory), 50, tf.constant(LOG_LIKELIHOOD_SEED)).nll
    np.testing.assert_allclose(loaded["nll"], nll, rtol=1e-5)
    assert loaded["images1"].shape == (9, S, S, 1)
    np.testing.assert_array_equal(loaded["images1"], loaded["default"])
    assert not np.array_equal(loaded["images1"], loaded["images2"])


# -- VMA -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def vma(request):
    return build_model(ModelConfig(**SMALL, tie_embeddings=request.param), S)


def test_vma_addressing_distributions_and_reads(vma):
    x, memory = _images(B, 1), _images(M, 2)
    x_top, query, encoded = vma.features(x, memory)
    assert query.shape == (B, 16) and encoded.embeddings.shape == (M, 16)
    q_a, p_a = vma.address_posterior(x, encoded), vma.address_prior(encoded)
    assert q_a.batch_shape == (B,) and q_a.event_shape == () and p_a.batch_shape == ()
    assert p_a.probs_parameter().shape == (M,)

    addresses = tf.constant(np.random.default_rng(0).integers(0, M, (K, B)), tf.int32)
    entries = vma.read(encoded, addresses)
    np.testing.assert_array_equal(entries.top.numpy(), encoded.top.numpy()[addresses.numpy()])
    q_z, p_z = vma.z_posterior(x_top, entries), vma.z_prior(entries)
    assert q_z.batch_shape == (K, B) and q_z.event_shape == (Z,)
    assert p_z.batch_shape == (K, B) and p_z.event_shape == (Z,)
    likelihood = vma.likelihood(q_z.sample(seed=[1, 2]), entries)
    assert likelihood.batch_shape == (K, B) and likelihood.event_shape == (S, S, 1)


def test_vma_diagnostics_match_an_independent_computation(vma):
    x, memory = _images(B, 3), _images(M, 4)
    encoded = vma.encode_context(memory)
    record = vma.log_weights(x, encoded, K, tf.constant([0, 1]))
    q = vma.address_posterior(x, encoded).probs_parameter().numpy().astype(np.float64)
    p = vma.address_prior(encoded).probs_parameter().numpy().astype(np.float64)
    kl = (q * (np.log(q) - np.log(p))).sum(-1)
    entropy = -(q * np.log(q)).sum(-1)
    np.testing.assert_allclose(record.diagnostics["kl_a"].numpy(), np.broadcast_to(kl, (K, B)), atol=1e-4)
    np.testing.assert_allclose(record.diagnostics["entropy_a"].numpy(), np.broadcast_to(entropy, (K, B)), atol=1e-4)
    aggregate = q.mean(0)
    information = -(aggregate * np.log(aggregate)).sum() - entropy.mean()
    np.testing.assert_allclose(record.diagnostics["address_information"].numpy(), np.full((K, B), information),
                               atol=1e-4)
    np.testing.assert_allclose(record.score_log_prob.numpy(), np.log(q[np.arange(B), record.reads.numpy()]),
                               atol=1e-4)


def test_the_training_path_equals_encoding_first(vma):
    """log_weights_in_context shares the conv passes of targets and memory, and changes nothing."""
    x, memory = _images(B, 5), _images(M, 6)
    joint = vma.log_weights_in_context(x, memory, K, tf.constant([2, 3]))
    apart = vma.log_weights(x, vma.encode_context(memory), K, tf.constant([2, 3]))
    np.testing.assert_allclose(joint.log_weights.numpy(), apart.log_weights.numpy(), rtol=1e-4, atol=1e-3)


def test_a_compact_memory_reads_what_the_full_encoding_holds(vma):
    """encode_context keeps only embeddings (computed chunk by chunk) and computes a read's decoder
    features from the drawn entries: the same values the full encoding gathers."""
    memory = _images(M, 7)
    full, compact = vma.encode(memory), vma.encode_context(memory)
    assert set(compact._fields) == {"embeddings", "entries"}
    chunked = nets.map_chunks(vma.embed_memory, memory, chunk_size=3)  # chunks of 3, 3 and 1
    np.testing.assert_allclose(chunked.numpy(), full.embeddings.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compact.embeddings.numpy(), full.embeddings.numpy(), rtol=1e-5, atol=1e-5)
    addresses = tf.constant([[6, 0, 6], [2, 2, 5]], tf.int32)
    lazy = vma.read(compact, addresses)._replace(embeddings=())
    gathered = vma.read(full, addresses)._replace(embeddings=())
    for got, expected in zip(tf.nest.flatten(lazy), tf.nest.flatten(gathered)):
        assert got.shape == expected.shape and got.shape[:2] == (2, 3)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_untied_model_has_a_second_embedding_net():
    def count(tie):
        return sum(v.numpy().size for v in build_model(ModelConfig(**SMALL, tie_embeddings=tie), S).trainable_variables)

    assert count(False) > count(True)


def test_a_z_head_whose_units_are_all_below_zero_still_learns():
    """Issue 16: Adam pushed every hidden unit of the ReLU heads of q(z|x, m_a) and p(z|m_a) below
    zero on the nonnegative conv features (255 of 256 dead by step 800), after which no gradient
    reaches them and z stays unused. Here every unit is switched off; the head must still pass
    gradient to its hidden weights and its inputs, and its output must still depend on them."""
    head = nets.GaussianHead(hidden_units=8, latent_dim=3)
    features = tf.constant(np.random.default_rng(0).uniform(0.1, 1.0, size=(5, 6)), tf.float32)
    head(features)
    head.hidden.kernel.assign(-tf.abs(head.hidden.kernel) - 0.1)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        loss = tf.reduce_sum(tf.square(head(features)))
    hidden_grad = tape.gradient(loss, head.hidden.kernel).numpy()
    assert np.all(np.any(hidden_grad != 0.0, axis=0)), "a hidden unit gets no gradient"
    assert np.all(np.abs(tape.gradient(loss, features).numpy()) > 0)
    outputs = head(features).numpy()
    assert np.ptp(outputs, axis=0).min() > 0, "the head's output no longer depends on its input"


# -- soft attention ------------------------------------------------------------------------------


def test_soft_attention_reads_the_attention_weighted_mean_of_the_entries():
    model = build_model(ModelConfig(name="soft_attention", **SMALL), S)
    memory = _images(M, 10)
    encoded = model.encode_context(memory)
    z = tf.random.stateless_normal([4, Z], [1, 2])
    weights = model.attention_weights(z, encoded).numpy()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    # With all of an entry's copies in memory the read is that entry's: the likelihood equals the
    # one given a memory of that entry alone.
    single = model.encode_context(tf.repeat(memory[:1], 3, axis=0))
    alone = model.encode_context(memory[:1])
    np.testing.assert_allclose(model.likelihood(z, single)[0].distribution.logits.numpy(),
                               model.likelihood(z, alone)[0].distribution.logits.numpy(), rtol=1e-4, atol=1e-4)
    record = model.log_weights(_images(B, 11), encoded, K, tf.constant([0, 0]))
    assert record.reads.shape == (K, B, M)
    entropy = -(record.reads.numpy() * np.log(record.reads.numpy())).sum(-1)
    np.testing.assert_allclose(record.diagnostics["entropy_attention"].numpy(), entropy, rtol=1e-4)


def test_each_model_class_checks_the_settings_it_reads():
    """Validation by capability (issue 29): the registry checks names, K and tasks; each class its own
    settings, before anything is built, in one UserInputError."""
    with pytest.raises(UserInputError, match="--gmn_attention must be one of"):
        models.validate(ModelConfig(name="gmn", gmn_attention="max"), 26, "sequence", num_samples=1)
    with pytest.raises(UserInputError, match="--gmn_hops and --gmn_prior_hops must be at least 1"):
        build_model(ModelConfig(name="gmn", gmn_hops=0), 26)
    with pytest.raises(UserInputError, match=r"--model_arch=resnet \(GMN's nets\) takes 28x28 images"):
        build_model(ModelConfig(name="gmn", model_arch="resnet"), 26)
    with pytest.raises(UserInputError, match=r"--prior must be one of \('learned', 'flat'\), got 'uniform'"):
        models.validate(ModelConfig(prior="uniform"), 26, "few_shot", num_samples=4)
    with pytest.raises(UserInputError, match="--memory_dim .* needs --model_arch=mlp"):
        models.validate(ModelConfig(learned_memory_size=16, memory_dim=8), 26, "learned", num_samples=4)
    with pytest.raises(UserInputError, match=r"--task=recall but --model=gmn trains with \('sequence',\)"):
        models.validate(ModelConfig(name="gmn"), 26, "recall", num_samples=1)
    with pytest.raises(UserInputError, match=r"--num_samples must be at least 2 for --model=vma \(VIMCO\)"):
        models.validate(ModelConfig(), 26, "few_shot", num_samples=1)
    models.validate(ModelConfig(name="vae", prior="uniform", gmn_hops=0), 26, "none", num_samples=1)  # not its own


def test_an_export_brings_drawings_to_its_size_as_its_training_drawings_were(tmp_path):
    """The export records its drawing_downscale, and both vma_tf.load and sample.py bring a user's
    drawing to the model's size that way."""
    from PIL import Image

    import vma_tf
    from vma_tf.data.drawings import preprocess

    model = build_model(ModelConfig(**SMALL), S)
    stroke = np.full((105, 105), 255, np.uint8)
    for offset in range(-3, 4):  # a 7-pixel-wide diagonal, dark on white
        stroke[np.arange(10, 95), np.arange(10, 95) + offset] = 0
    Image.fromarray(stroke).save(tmp_path / "stroke.png")
    for downscale in ("area", "max_pool"):
        export_saved_model(model, S, str(tmp_path / downscale), drawing_downscale=downscale)
    inputs = {downscale: preprocess(stroke, S, downscale=downscale)[np.newaxis] for downscale in ("area", "max_pool")}
    assert inputs["area"].sum() < inputs["max_pool"].sum()
    for downscale, image in inputs.items():
        loaded = vma_tf.load(tmp_path / downscale)
        assert loaded.drawing_downscale == downscale
        np.testing.assert_array_equal(loaded.log_likelihood([stroke], [stroke], num_samples=3),
                                      loaded.log_likelihood(image, image, num_samples=3))
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "sample.py"),
             f"--saved_model={tmp_path / downscale}", f"--memory={tmp_path / 'stroke.png'}", "--samples_per_image=1",
             "--zoom=1", f"--output={tmp_path / downscale}.png"],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        memory_cell = np.asarray(Image.open(tmp_path / f"{downscale}.png"))[1 : S + 1, 1 : S + 1]
        np.testing.assert_array_equal(memory_cell < 128, image[0, ..., 0] > 0)
