"""The SavedModel: loads and runs without vma_tf, matches the in-process model, rejects bad
inputs, and sample.py turns a user's images into a grid of new samples."""

import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, checkpoint_digest
from PIL import Image

from vma_tf import checkpoints
from vma_tf.evaluation.bounds import BoundEvaluator
from vma_tf.export import LOG_LIKELIHOOD_SEED, SAVED_MODEL_DIR, SIGNATURES

S = 26

# Runs in a fresh interpreter outside the repository, with `import vma_tf` made impossible.
LOAD_WITHOUT_PACKAGE = textwrap.dedent("""
    import sys
    sys.modules["vma_tf"] = None
    import numpy as np, tensorflow as tf
    directory, inputs, outputs = sys.argv[1:]
    data = np.load(inputs)
    model = tf.saved_model.load(directory)
    probs = model.signatures["address_posterior"](x=tf.constant(data["x"]), memory=tf.constant(data["memory"]))
    nll = model.signatures["log_likelihood"](
        x=tf.constant(data["x"]), memory=tf.constant(data["memory"]), num_samples=tf.constant(50))
    draw = lambda seed: model.signatures["sample"](
        memory=tf.constant(data["memory"]), num_samples=tf.constant(9), seed=tf.constant(seed))
    first, again, other = draw(1), draw(1), draw(2)
    default = model.signatures["serving_default"](
        memory=tf.constant(data["memory"]), num_samples=tf.constant(9), seed=tf.constant(1))
    np.savez(outputs, probs=probs["probs"].numpy(), nll=nll["nll_nats"].numpy(),
             images=first["images"].numpy(), addresses=first["addresses"].numpy(),
             again=again["images"].numpy(), other=other["images"].numpy(), default=default["images"].numpy())
    try:
        import vma_tf  # noqa: F401
        print("vma_tf importable")
    except ImportError:
        print("vma_tf blocked")
""")


def _images(count, seed):
    return (np.random.default_rng(seed).random((count, S, S, 1)) < 0.15).astype(np.float32)


@pytest.fixture(scope="module")
def saved_model(smoke_run):
    path = os.path.join(smoke_run, SAVED_MODEL_DIR)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))  # train.py exported it at the end
    return path


@pytest.mark.slow
def test_loads_without_the_package_and_matches_the_model(saved_model, smoke_run, tmp_path):
    x, memory = _images(5, 0), _images(7, 1)
    np.savez(tmp_path / "inputs.npz", x=x, memory=memory)
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_PACKAGE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(script), saved_model, str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vma_tf blocked" in result.stdout
    loaded = np.load(tmp_path / "out.npz")

    _, model, _ = checkpoints.restore_model(smoke_run)
    probs = model.address_posterior(tf.constant(x), model.encode_memory(tf.constant(memory))).probs_parameter()
    np.testing.assert_allclose(loaded["probs"], probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(loaded["probs"].sum(-1), 1.0, atol=1e-5)
    nll = BoundEvaluator(model)(tf.constant(x), tf.constant(memory), 50, tf.constant(LOG_LIKELIHOOD_SEED)).nll
    np.testing.assert_allclose(loaded["nll"], nll, rtol=1e-5)

    assert loaded["images"].shape == (9, S, S, 1) and loaded["addresses"].shape == (9,)
    assert loaded["images"].min() >= 0 and loaded["images"].max() <= 1
    assert set(loaded["addresses"]) <= set(range(7))
    np.testing.assert_array_equal(loaded["images"], loaded["again"])
    np.testing.assert_array_equal(loaded["images"], loaded["default"])
    assert not np.array_equal(loaded["images"], loaded["other"])


@pytest.mark.slow
def test_wrong_shapes_and_dtypes_are_rejected(saved_model):
    model = tf.saved_model.load(saved_model)
    memory = tf.constant(_images(3, 2))
    posterior = model.signatures["address_posterior"]
    for bad_x in (tf.zeros([2, S, S]), tf.zeros([2, S + 2, S + 2, 1])):
        with pytest.raises(tf.errors.InvalidArgumentError, match="Shape of tensor x .* is not compatible"):
            posterior(x=bad_x, memory=memory)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor but is a double"):
        posterior(x=tf.zeros([2, S, S, 1], tf.float64), memory=memory)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a int32 tensor but is a float"):
        model.signatures["sample"](memory=memory, num_samples=tf.constant(2.0), seed=tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="number of importance samples must be positive"):
        model.signatures["log_likelihood"](x=memory, memory=memory, num_samples=tf.constant(0))


@pytest.mark.slow
def test_eval_export_replaces_the_saved_model_and_lists_its_signatures(smoke_run, tmp_path):
    before = checkpoint_digest(smoke_run)
    command = [sys.executable, os.path.join(REPO, "eval.py"), f"--logdir={smoke_run}", "--mode=export"]
    for _ in range(2):  # the second export replaces the first
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    siblings = sorted(name for name in os.listdir(smoke_run) if name.startswith(SAVED_MODEL_DIR))
    assert siblings == [SAVED_MODEL_DIR]  # no .tmp or .old left behind
    assert checkpoint_digest(smoke_run) == before  # export only reads the checkpoints
    shown = subprocess.run(
        ["saved_model_cli", "show", "--dir", os.path.join(smoke_run, SAVED_MODEL_DIR), "--all"],
        capture_output=True, text=True, timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in shown.stdout


@pytest.mark.slow
def test_sample_py_draws_a_grid_from_a_users_images(saved_model, data_dir, tmp_path):
    with zipfile.ZipFile(os.path.join(data_dir, "omniglot", "images_evaluation.zip")) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png") and "/Tengwar/" in n)[:2]
        for name in names:
            (tmp_path / os.path.basename(name)).write_bytes(archive.read(name))
    # A user's own drawing: a different size, JPEG, with dark ink on a light background.
    Image.open(tmp_path / os.path.basename(names[0])).convert("L").resize((300, 240)).save(tmp_path / "mine.jpg")
    output = tmp_path / "grid.png"
    sample = [sys.executable, os.path.join(REPO, "sample.py"), f"--saved_model={saved_model}"]
    result = subprocess.run(
        [*sample, f"--memory={tmp_path}/*.png,{tmp_path}/mine.jpg", "--num_samples=12", "--zoom=2",
         f"--output={output}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(output) as grid:
        assert grid.format == "PNG"
        width, height = grid.size
    assert height == 3 * (S + 2) * 2  # one row per memory image
    assert width % ((S + 2) * 2) == 0 and width >= 2 * (S + 2) * 2

    (tmp_path / "notes.png").write_text("not an image")
    result = subprocess.run([*sample, f"--memory={tmp_path}/notes.png", f"--output={output}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"sample.py: error: {tmp_path}/notes.png is not")
