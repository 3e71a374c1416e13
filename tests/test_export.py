"""The SavedModel of a trained run: rejects bad inputs, is replaced atomically, and sample.py turns
a user's images into a grid of new samples with every model. (That an export of every model runs
without vma_tf and matches the model is part of the contract test, test_models.py.)"""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, checkpoint_digest
from PIL import Image

from vma_tf.export import SAMPLE_CHUNK, SAVED_MODEL_DIR

S = 26

def _images(count, seed):
    return (np.random.default_rng(seed).random((count, S, S, 1)) < 0.15).astype(np.float32)


@pytest.fixture(scope="module")
def saved_model(smoke_run):
    path = os.path.join(smoke_run, SAVED_MODEL_DIR)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))  # train.py exported it at the end
    return path


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
def test_bad_pixels_empty_inputs_and_counts_are_defined(saved_model):
    model = tf.saved_model.load(saved_model)
    memory, x = tf.constant(_images(3, 2)), tf.constant(_images(2, 3))
    signatures = model.signatures
    for value in (float("nan"), float("inf"), -1.0, 1.5):
        bad = tf.tensor_scatter_nd_update(x, [[0, 5, 5, 0]], [value])
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must hold pixels in \[0, 1\], without NaN or inf"):
            signatures["log_likelihood"](x=bad, memory=memory, num_samples=tf.constant(4))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"memory must hold pixels in \[0, 1\]"):
            signatures["sample"](memory=tf.concat([memory, bad], 0), num_samples=tf.constant(2), seed=tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"embeddings must be finite"):
        encoded = signatures["encode_memory"](memory=memory)
        signatures["sample_encoded"](embeddings=encoded["embeddings"] * np.nan, entries=encoded["entries"],
                                     num_samples=tf.constant(2), seed=tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="memory must hold at least min_memory_size images"):
        signatures["sample"](memory=memory[:0], num_samples=tf.constant(2), seed=tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must not be negative"):
        signatures["sample"](memory=memory, num_samples=tf.constant(-1), seed=tf.constant(0))
    # Empty batches and counts give empty outputs.
    assert signatures["log_likelihood"](x=x[:0], memory=memory, num_samples=tf.constant(4))["nll_nats"].shape == [0]
    assert signatures["address_posterior"](x=x[:0], memory=memory)["probs"].shape == [0, 3]
    none = signatures["sample"](memory=memory, num_samples=tf.constant(0), seed=tf.constant(0))
    assert none["images"].shape == [0, S, S, 1] and none["addresses"].shape == [0]
    # Past one chunk, samples come chunk by chunk, as many as asked for, every address in the memory.
    many = signatures["sample"](memory=memory, num_samples=tf.constant(SAMPLE_CHUNK + 3), seed=tf.constant(0))
    assert many["images"].shape == [SAMPLE_CHUNK + 3, S, S, 1]
    assert set(np.unique(many["addresses"].numpy())) <= {0, 1, 2}
    few = signatures["sample"](memory=memory, num_samples=tf.constant(5), seed=tf.constant(0))
    again = signatures["sample"](memory=memory, num_samples=tf.constant(5), seed=tf.constant(0))
    np.testing.assert_array_equal(few["images"].numpy(), again["images"].numpy())


@pytest.mark.slow
def test_eval_export_replaces_the_saved_model_and_lists_its_signatures(smoke_run, tmp_path):
    before = checkpoint_digest(smoke_run)
    # The smoke run exported itself when its training ended; the command replaces that export.
    command = [sys.executable, os.path.join(REPO, "eval.py"), f"--logdir={smoke_run}", "--mode=export"]
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
    for name in ("sample", "address_posterior", "log_likelihood", "serving_default"):
        assert f"signature_def['{name}']" in shown.stdout


@pytest.mark.slow
def test_saved_model_cli_runs_every_signature_as_tf_saved_model_load_does(saved_model, tmp_path):
    """saved_model_cli loads through the TF1 loader, as TensorFlow Serving does. (test_models.py runs
    that loader in-process on every model's export; this is the command a user types.)"""
    model = tf.saved_model.load(saved_model)
    arrays = {"x": _images(2, 4), "memory": _images(3, 5)}
    arrays.update({k: v.numpy() for k, v in model.signatures["encode_memory"](memory=arrays["memory"]).items()})
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    scalars = {"num_samples": 4, "seed": 1}
    for name, function in model.signatures.items():
        arguments = function.structured_input_signature[1]
        outdir = tmp_path / name
        command = [
            "saved_model_cli", "run", "--dir", saved_model, "--tag_set", "serve", "--signature_def", name,
            "--outdir", str(outdir),
            "--inputs", ";".join(f"{arg}={tmp_path / arg}.npy" for arg in arguments if arg in arrays),
        ]
        if any(arg in scalars for arg in arguments):
            command += ["--input_exprs", ";".join(f"{arg}={scalars[arg]}" for arg in arguments if arg in scalars)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        expected = function(**{arg: tf.constant(arrays[arg] if arg in arrays else scalars[arg]) for arg in arguments})
        for key, value in expected.items():
            np.testing.assert_allclose(np.load(outdir / f"{key}.npy"), value.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}/{key}")


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
    # Each image alone as the memory, rows of equal length; the output's folder is made.
    output = tmp_path / "new" / "folder" / "grid.png"
    result = subprocess.run(
        [*sample, "--memory=" + ",".join([*(str(tmp_path / os.path.basename(n)) for n in names),
                                          str(tmp_path / "mine.jpg")]),
         "--samples_per_image=5", "--zoom=2", f"--output={output}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(output) as grid:
        assert grid.size == (6 * (S + 2) * 2, 3 * (S + 2) * 2)

    (tmp_path / "notes.png").write_text("not an image")
    result = subprocess.run([*sample, f"--memory={tmp_path}/notes.png", f"--output={output}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"sample.py: error: {tmp_path}/notes.png is not")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae", "soft_attention", "gmn"])
def test_sample_py_draws_from_the_baselines(name, baseline_runs, tmp_path):
    saved_model = os.path.join(baseline_runs[name], SAVED_MODEL_DIR)
    drawing = tmp_path / "drawing.png"
    pixels = np.full((105, 105), 255, np.uint8)
    pixels[20:80, 50:55] = 0
    Image.fromarray(pixels).save(drawing)
    output = tmp_path / "grid.png"
    memory = [f"--memory={drawing},{drawing}"] if name != "vae" else []
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "sample.py"), f"--saved_model={saved_model}", *memory,
         "--num_samples=16", "--zoom=1", f"--output={output}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(output) as grid:
        width, height = grid.size
    # Rows of 8 samples, below a row holding the memory images (a model reading them as a whole).
    rows = 2 + (name != "vae")
    assert (width, height) == (8 * (S + 2), rows * (S + 2))
    if name == "gmn":  # its pseudo-input lets it sample from an empty memory
        unconditional = subprocess.run(
            [sys.executable, os.path.join(REPO, "sample.py"), f"--saved_model={saved_model}", "--num_samples=8",
             "--zoom=1", f"--output={output}"], capture_output=True, text=True, timeout=300,
        )
        assert unconditional.returncode == 0, unconditional.stderr[-3000:]
        with Image.open(output) as grid:
            assert grid.size == (8 * (S + 2), S + 2)
    if name == "vae":
        refused = subprocess.run(
            [sys.executable, os.path.join(REPO, "sample.py"), f"--saved_model={saved_model}", f"--memory={drawing}",
             f"--output={output}"], capture_output=True, text=True, timeout=300,
        )
        assert refused.returncode != 0 and "takes no memory" in refused.stderr.strip().splitlines()[-1]
