"""SavedModel export: a trained model that plain TensorFlow can load, sample and score.

Signatures are chosen by what the model can do (names and argument names are the contract; any
batch and memory size). `memory` float32[M,H,W,1] is an input of each signature of a model that
reads a memory, and absent for one that does not (a VAE, or VMA with a learned memory). For GMN
the memory is the conditioning set X; it may be empty ([0,H,W,1]) when the model has a
pseudo-input, and a conditional GMN refuses an empty one with InvalidArgumentError.
    sample([memory,] num_samples int32[], seed int32[])
        -> images float32[num_samples,H,W,1] (Bernoulli means); an addressed model (VMA) also
           returns addresses int32[num_samples], the memory entry of each sample
    log_likelihood(x float32[B,H,W,1], [memory,] num_samples int32[])
        -> nll_nats float32[B]: minus the K-sample bound, drawn with the fixed seed LOG_LIKELIHOOD_SEED
    address_posterior(x, [memory]) -> probs float32[B,M]      (addressed models: q(a|x))
    attention(x, memory) -> weights float32[B,M]               (soft attention and GMN, at the mean of q(z|x))
    serving_default = sample
An addressed model that reads a memory (VMA) also exports its compact encoding, so that a service
encodes a large memory once and queries it many times (memory and time per query linear in M):
    encode_memory(memory) -> embeddings float32[M,E], entries float32[M,H,W,1]
    sample_encoded(embeddings, entries, num_samples, seed), log_likelihood_encoded(x, embeddings,
    entries, num_samples), address_posterior_encoded(x, embeddings, entries): as above, given
    encode_memory's outputs instead of the memory's images.
    min_memory_size: an int32 variable, the fewest memory images the signatures accept (0: GMN with
    a pseudo-input samples and scores without any).
    drawing_downscale: a string variable, how the training drawings were brought to H x W
    ("max_pool" or "area", vma_tf/data/drawings.py), so that a client brings a user's drawing to
    the model's size the same way.
Images are in [0, 1] with ink = 1, H = W = the model's image size. Every signature refuses
images with NaN, inf or pixels outside [0, 1], a negative num_samples, and a memory smaller than
min_memory_size, with an InvalidArgumentError naming the input. An empty batch x ([0,H,W,1]) or
num_samples = 0 gives empty outputs, and more than MAX_SAMPLES is refused. `sample` draws in
chunks of SAMPLE_CHUNK, so its memory beyond the output itself does not grow with num_samples.
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf

from vma_tf import checkpoints, files
from vma_tf.config import EvalConfig
from vma_tf.data import drawings
from vma_tf.errors import StorageError
from vma_tf.models import AddressedMemory, AttendingMemory, CompactMemory, GenerativeModel
from vma_tf.objectives import streamed_sums

SAVED_MODEL_DIR = "saved_model"
LOG_LIKELIHOOD_SEED = (0, 0)
SAMPLE_CHUNK = 4096  # samples decoded at once by `sample`; more are drawn chunk by chunk
# At most this many samples per `sample` call (4 GB of 28 x 28 images): a bound a server can rely on,
# and far from the int32 overflow of the chunk count.
MAX_SAMPLES = 2**20
STALE_EXPORT_SEC = 3600.0


def _scalar_spec(name: str) -> tf.TensorSpec:
    return tf.TensorSpec([], tf.int32, name=name)


def _after(check: tf.Operation, values: tf.Tensor) -> tf.Tensor:
    """`values`, computed only once `check` has passed: without the edge a layer may reach the bad
    input first and fail with its own message (a conv given an empty batch did)."""
    with tf.control_dependencies([check]):
        return tf.identity(values)


class _Untracked:
    """Holds an object where a tf.Module does not track it."""

    def __init__(self, value):
        self.value = value


class ServingModule(tf.Module):
    """The exported functions of one model; their input signatures fix H = W = image_size.

    The module tracks the TensorFlow variables its functions read, each once, and not the model:
    Keras 3 layers tracked by a tf.Module are saved with two handles per variable
    (keras-team/keras#20095), and the TF1-style loader of `saved_model_cli` and TensorFlow Serving
    restores one set while the functions read the other. keras.export.ExportArchive tracks the
    variables its endpoints capture the same way.
    """

    def __init__(self, model: GenerativeModel, image_size: int, drawing_downscale: str,
                 pairs_per_call: int = EvalConfig.pairs_per_call):
        super().__init__(name="vma_serving")
        self._model = _Untracked(model)
        self.pairs_per_call = pairs_per_call
        self.min_memory_size = tf.Variable(model.min_context_size, trainable=False, name="min_memory_size")
        self.drawing_downscale = tf.Variable(drawing_downscale, trainable=False, name="drawing_downscale")
        self.image_shape = images = [None, image_size, image_size, 1]
        x = tf.TensorSpec(images, tf.float32, name="x")
        num_samples, seed = _scalar_spec("num_samples"), _scalar_spec("seed")
        # How each family of signatures gets the model's encoding of the memory: from images, from
        # a CompactMemory that encode_memory returned (suffix "_encoded"), or from nothing.
        memory_inputs = {"": ([], lambda: model.encode_context(None))}
        if model.reads_context:
            memory_inputs[""] = (
                [tf.TensorSpec(images, tf.float32, name="memory")],
                lambda memory: model.encode_context(self._checked_memory(memory, "memory")),
            )
        if model.reads_context and isinstance(model, AddressedMemory):
            embed_dim = model.encode_context(tf.zeros([1, image_size, image_size, 1])).embeddings.shape[-1]
            self.embeddings_shape = [None, embed_dim]
            memory_inputs["_encoded"] = (
                [tf.TensorSpec(self.embeddings_shape, tf.float32, name="embeddings"),
                 tf.TensorSpec(images, tf.float32, name="entries")],
                self._compact_memory,
            )

        exported = {}
        for suffix, (memory, to_encoded) in memory_inputs.items():
            exported.update({
                f"sample{suffix}": self._function(self._sample, [], memory, [num_samples, seed], to_encoded),
                f"log_likelihood{suffix}": self._function(self._log_likelihood, [x], memory, [num_samples], to_encoded),
            })
            if isinstance(model, AddressedMemory):
                exported[f"address_posterior{suffix}"] = self._function(
                    self._address_posterior, [x], memory, [], to_encoded
                )
            if isinstance(model, AttendingMemory):
                exported[f"attention{suffix}"] = self._function(self._attention, [x], memory, [], to_encoded)
        if "_encoded" in memory_inputs:
            exported["encode_memory"] = tf.function(self._encode_memory, input_signature=memory_inputs[""][0])
        for name, function in exported.items():
            setattr(self, name, function)
        self.signature_names = tuple(exported)
        captured = {id(v): v for f in exported.values() for v in f.get_concrete_function().variables}
        self.captured_variables = list(captured.values())

    @property
    def model(self) -> GenerativeModel:
        return self._model.value

    @staticmethod
    def _function(method, before: list[tf.TensorSpec], memory: list[tf.TensorSpec], after: list[tf.TensorSpec],
                  to_encoded):
        """A tf.function of method(*before, encoded, *after), encoded = to_encoded(*memory inputs)."""
        count, memory_count = len(before), len(memory)

        def call(*args):
            encoded = to_encoded(*args[count : count + memory_count])
            return method(*args[:count], encoded, *args[count + memory_count :])

        return tf.function(call, input_signature=[*before, *memory, *after])

    def _checked(self, images: tf.Tensor, name: str = "x") -> tf.Tensor:
        """`images` after checks that turn what no layer should see into InvalidArgumentError naming
        the input: a wrong rank or size (signatures check dtypes only), NaN, inf, or pixels outside [0, 1]."""
        images = tf.ensure_shape(images, self.image_shape)
        in_range = tf.reduce_all((images >= 0.0) & (images <= 1.0))  # false for NaN too
        return _after(tf.debugging.Assert(in_range, [f"{name} must hold pixels in [0, 1], without NaN or inf"]), images)

    def _checked_memory(self, images: tf.Tensor, name: str) -> tf.Tensor:
        images = self._checked(images, name)
        enough = tf.debugging.Assert(
            tf.shape(images)[0] >= self.min_memory_size,
            [f"{name} must hold at least min_memory_size images for this model:", self.min_memory_size],
        )
        return _after(enough, images)

    def _compact_memory(self, embeddings: tf.Tensor, entries: tf.Tensor) -> CompactMemory:
        embeddings = tf.ensure_shape(embeddings, self.embeddings_shape)
        entries = self._checked_memory(entries, "entries")
        embeddings = tf.debugging.assert_all_finite(embeddings, "embeddings must be finite")
        rows_match = tf.debugging.assert_equal(tf.shape(embeddings)[0], tf.shape(entries)[0],
                                               message="embeddings and entries must have one row per memory entry")
        return CompactMemory(_after(rows_match, embeddings), entries)

    def _encode_memory(self, memory):
        encoded = self.model.encode_context(self._checked_memory(memory, "memory"))
        return {"embeddings": encoded.embeddings, "entries": encoded.entries}

    def _sample(self, encoded, num_samples, seed):
        tf.debugging.assert_non_negative(num_samples, message="num_samples must not be negative")
        tf.debugging.assert_less_equal(num_samples, MAX_SAMPLES, message=f"num_samples must be at most {MAX_SAMPLES}")
        seed = tf.stack([seed, 0])
        chunks = tf.maximum(1, (num_samples + SAMPLE_CHUNK - 1) // SAMPLE_CHUNK)

        def draw(index):  # one chunk's samples; chunk i of several draws with fold_in(seed, i)
            count = tf.minimum(SAMPLE_CHUNK, num_samples - index * SAMPLE_CHUNK)
            chunk_seed = tf.where(chunks > 1, tf.random.experimental.stateless_fold_in(seed, index), seed)
            drawn = _at_least_one(lambda n: self.model.sample(encoded, n, chunk_seed), count)
            return {name: tf.cast(value, tf.int32 if value.dtype.is_integer else tf.float32)
                    for name, value in drawn.items()}

        first = draw(0)
        arrays = {name: tf.TensorArray(value.dtype, size=chunks, infer_shape=False).write(0, value)
                  for name, value in first.items()}

        def body(index, arrays):
            return index + 1, {name: arrays[name].write(index, value) for name, value in draw(index).items()}

        _, arrays = tf.while_loop(lambda index, _: index < chunks, body, (tf.constant(1), arrays))
        # The concatenation loses the rank; the signature promises [N, H, W, 1] and [N].
        return {name: tf.ensure_shape(array.concat(), first[name].shape) for name, array in arrays.items()}

    def _log_likelihood(self, x, encoded, num_samples):
        seed = tf.constant(LOG_LIKELIHOOD_SEED, tf.int32)

        def nll(x):
            sums = streamed_sums(self.model, x, encoded, num_samples, self.pairs_per_call, seed)
            return {"nll_nats": -(sums["log_sum_w"] - tf.math.log(tf.cast(num_samples, tf.float32)))}

        return _per_target(nll, self._checked(x))

    def _address_posterior(self, x, encoded):
        return _per_target(lambda x: {"probs": self.model.address_posterior(x, encoded).probs_parameter()},
                           self._checked(x))

    def _attention(self, x, encoded):
        return _per_target(lambda x: {"weights": self.model.attention(x, encoded)}, self._checked(x))


def _at_least_one(draw, count: tf.Tensor) -> dict[str, tf.Tensor]:
    """draw(count), where draw(0) is not defined for every model: then draw(1) cut to 0 rows
    (one traced call either way)."""
    return tf.nest.map_structure(lambda t: t[:count], draw(tf.maximum(count, 1)))


def _per_target(compute, x: tf.Tensor) -> dict[str, tf.Tensor]:
    """compute(x) for targets x [B, H, W, 1], rows per target; for B = 0, empty outputs of the same
    trailing shape (compute of one blank image, cut to 0 rows; one traced call either way)."""
    batch = tf.shape(x)[0]
    targets = tf.cond(batch > 0, lambda: x, lambda: tf.zeros([1, *x.shape[1:]]))
    return tf.nest.map_structure(lambda t: t[:batch], compute(targets))


def export_saved_model(model, image_size: int, directory: str, drawing_downscale: str = "max_pool") -> str:
    """Writes the SavedModel to `directory`, replacing any previous one only once it is complete.
    `drawing_downscale`: how the model's training drawings were brought to image_size.

    It is written to a fresh `<directory>.<random>.tmp` and renamed into place (the previous
    export moves aside for the instant in between), so `directory` never holds a half-written
    SavedModel; a failed write (a full disk) removes its partial files and raises StorageError.
    Returns `directory`.
    """
    module = ServingModule(model, image_size, drawing_downscale)
    directory = os.path.abspath(directory)
    # A killed export leaves its staging folder: one older than any export takes is a killed one's.
    files.remove_stale_temporaries(os.path.dirname(directory), (os.path.basename(directory),),
                                   older_than_sec=STALE_EXPORT_SEC)
    try:
        staging = files.temporary_folder_beside(directory)
    except OSError as e:
        raise StorageError(f"cannot write the export beside {directory}: {e.strerror or e}") from None
    try:
        tf.saved_model.save(module, staging, signatures={
            **{name: getattr(module, name) for name in module.signature_names}, "serving_default": module.sample
        })
        retired = files.temporary_folder_beside(directory)
        if os.path.exists(directory):
            os.rename(directory, retired)
        os.rename(staging, directory)
        shutil.rmtree(retired, ignore_errors=True)
    except (OSError, tf.errors.OpError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise StorageError(f"could not write the export {directory} ({cause}); removed the partial files") from None
    return directory


def export_run(logdir: str) -> str:
    """Exports the latest checkpoint of the run in `logdir` to `logdir/saved_model`, in float32.

    Only reads the checkpoints. Returns the SavedModel's path.
    """
    config, model, _ = checkpoints.restore_model(logdir)
    return export_saved_model(model, config.data.image_size, os.path.join(logdir, SAVED_MODEL_DIR),
                              drawings.downscale_of(config.data.dataset))
