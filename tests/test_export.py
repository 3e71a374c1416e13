"""The SavedModel of a trained run: rejects bad inputs, is replaced atomically, and sample.py turns
a user's images into a grid of new samples with every model. (That an export of every model runs
without vma_tf and matches the model is part of the contract test, test_models.py.)"""

import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, checkpoint_digest
from PIL import Image

from vma_tf.export import MAX_SAMPLES, SAMPLE_CHUNK, SAVED_MODEL_DIR

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
    # Near 2**31 the chunk count overflowed int32 and 4,096 images came back.
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"num_samples must be at most {MAX_SAMPLES}"):
        signatures["sample"](memory=memory, num_samples=tf.constant(2**31 - 1), seed=tf.constant(0))
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
@pytest.mark.parametrize("name", ["vma", "gmn", "soft_attention", "vae"])
def test_saved_model_cli_runs_every_signature_as_tf_saved_model_load_does(name, saved_model, baseline_runs, tmp_path):
    """saved_model_cli loads through the TF1 loader, as TensorFlow Serving does."""
    path = saved_model if name == "vma" else os.path.join(baseline_runs[name], SAVED_MODEL_DIR)
    model = tf.saved_model.load(path)
    arrays = {"x": _images(2, 4), "memory": _images(3, 5)}
    if "encode_memory" in model.signatures:
        arrays.update({k: v.numpy() for k, v in model.signatures["encode_memory"](memory=arrays["memory"]).items()})
    for array_name, array in arrays.items():
        np.save(tmp_path / f"{array_name}.npy", array)
    scalars = {"num_samples": 4, "seed": 1}
    for signature, function in model.signatures.items():
        arguments = function.structured_input_signature[1]
        outdir = tmp_path / signature
        command = [
            "saved_model_cli", "run", "--dir", path, "--tag_set", "serve", "--signature_def", signature,
            "--outdir", str(outdir),
        ]
        if any(arg in arrays for arg in arguments):
            command += ["--inputs", ";".join(f"{arg}={tmp_path / arg}.npy" for arg in arguments if arg in arrays)]
        if any(arg in scalars for arg in arguments):
            command += ["--input_exprs", ";".join(f"{arg}={scalars[arg]}" for arg in arguments if arg in scalars)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{signature}: {result.stderr[-2000:]}"
        expected = function(**{arg: tf.constant(arrays[arg] if arg in arrays else scalars[arg]) for arg in arguments})
        for key, value in expected.items():
            np.testing.assert_allclose(np.load(outdir / f"{key}.npy"), value.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{signature}/{key}")


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
    # A drawing on a transparent background used to read as blank; a blank one is refused, and the
    # grid left as it was.
    Image.new("RGBA", (64, 64)).save(tmp_path / "blank.png")
    before = output.read_bytes()
    for name, error in (("notes.png", "is not a readable image"), ("blank.png", "has no ink")):
        result = subprocess.run([*sample, f"--memory={tmp_path}/{name}", f"--output={output}"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith(f"sample.py: error: {tmp_path}/{name} {error}")
    assert output.read_bytes() == before


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--output={tmp}"], "--output={tmp} is a folder"),
        (["--memory={tmp}/huge.png"], "{tmp}/huge.png is too large to be a drawing"),
        (["--num_samples=100000000"], "the grid would hold up to .* pixels, over pillow's"),
        (["--zoom=100000"], "the grid would hold up to"),
        (["--seed=2147483647", "--samples_per_image=2"], r"--seed must lie in 0\.\.2\*\*31-1-1"),
        (["--seed=-1"], "--seed must lie in"),
        (["--saved_model={tmp}/junk"], "{tmp}/junk is not a readable SavedModel"),
    ],
)
def test_sample_py_refuses_in_one_line_before_sampling(arguments, message, saved_model, tmp_path):
    """Issue 30's sample.py cases: each ended in a traceback (or sampled for minutes first)."""
    Image.new("L", (20000, 9000), 255).save(tmp_path / "huge.png")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "saved_model.pb").write_text("junk")
    given = {argument.split("=")[0] for argument in arguments}
    defaults = {"--memory": os.path.join(REPO, "pretrained", "vma-omniglot", "example.png"),
                "--saved_model": saved_model, "--output": tmp_path / "g.png"}
    arguments = [argument.format(tmp=tmp_path) for argument in arguments]
    arguments += [f"{flag}={value}" for flag, value in defaults.items() if flag not in given]
    result = subprocess.run([sys.executable, os.path.join(REPO, "sample.py"), *arguments],
                            capture_output=True, text=True, timeout=300)
    # The last line: TensorFlow's own lines show here, since conftest sets TF_CPP_MIN_LOG_LEVEL.
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and re.match(f"sample.py: error: {message.format(tmp=tmp_path)}", last), last
    assert not os.path.exists(tmp_path / "g.png")


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


def _omniglot_pngs(data_dir, count):
    """The first `count` characters' first drawings, as the archive holds them (105x105 PNGs)."""
    with zipfile.ZipFile(os.path.join(data_dir, "omniglot", "images_background.zip")) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        firsts = list({os.path.dirname(n): n for n in reversed(names)}.values())[::-1][:count]
        return [archive.read(name) for name in firsts]


@pytest.mark.slow
def test_the_readmes_python_example_runs_as_written(saved_model, data_dir, tmp_path):
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    example = readme.split("### From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    os.makedirs(tmp_path / "runs" / "smoke")
    os.symlink(saved_model, tmp_path / "runs" / "smoke" / "saved_model")
    os.makedirs(tmp_path / "drawings")
    for name, png in zip(("a", "b"), _omniglot_pngs(data_dir, 2)):
        (tmp_path / "drawings" / f"{name}.png").write_bytes(png)
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(8, 26, 26, 1)" in result.stdout


@pytest.mark.slow
def test_a_loaded_export_takes_drawings_and_arrays_and_refuses_bad_input_in_one_line(
    saved_model, baseline_runs, data_dir, tmp_path
):
    import vma_tf

    model = vma_tf.load(saved_model)
    paths = []
    for index, png in enumerate(_omniglot_pngs(data_dir, 3)):
        paths.append(tmp_path / f"{index}.png")
        paths[-1].write_bytes(png)
    as_arrays = np.stack([vma_tf.preprocess(path, S) for path in paths])
    probs = model.address_posterior(paths, paths)
    np.testing.assert_array_equal(probs, model.address_posterior(as_arrays, as_arrays))
    assert probs.shape == (3, 3) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    drawn = model.sample(paths, num_samples=5, seed=2)
    assert drawn["images"].shape == (5, S, S, 1) and set(drawn["addresses"]) <= {0, 1, 2}
    for call, message in [
        (lambda: model.sample(as_arrays[:, :20]), r"memory has shape \(3, 20, 26, 1\)"),
        (lambda: model.sample(as_arrays * 2), r"memory holds values outside \[0, 1\]"),
        (lambda: model.sample([]), "memory holds 0 images; this model needs at least 1"),
        (lambda: model.sample(paths, num_samples=-1), "num_samples must be an integer >= 0"),
        (lambda: model.attention(paths, paths), "this export has no attention"),
        (lambda: model.sample([np.ones((30, 30), np.uint8) * 255]), r"memory\[0\] has no ink"),
    ]:
        with pytest.raises(vma_tf.UserInputError, match=message) as refused:
            call()
        assert "\n" not in str(refused.value)
    vae = vma_tf.load(os.path.join(baseline_runs["vae"], SAVED_MODEL_DIR))
    with pytest.raises(vma_tf.UserInputError, match="this model takes no memory"):
        vae.sample(paths)
    assert vae.sample(num_samples=2)["images"].shape == (2, S, S, 1)
