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
    min_memory_size: an int32 variable, the fewest memory images the signatures accept (0: GMN with
    a pseudo-input samples and scores without any).
Images are in [0, 1] with ink = 1, H = W = the model's image size.
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf

from vma_tf import checkpoints
from vma_tf.evaluation.bounds import DEFAULT_PAIRS_PER_CALL, streamed_sums
from vma_tf.models import AddressedMemory, AttendingMemory, GenerativeModel

SAVED_MODEL_DIR = "saved_model"
LOG_LIKELIHOOD_SEED = (0, 0)


def _scalar_spec(name: str) -> tf.TensorSpec:
    return tf.TensorSpec([], tf.int32, name=name)


class ServingModule(tf.Module):
    """The exported functions of one model; their input signatures fix H = W = image_size."""

    def __init__(self, model: GenerativeModel, image_size: int, pairs_per_call: int = DEFAULT_PAIRS_PER_CALL):
        super().__init__(name="vma_serving")
        self.model = model
        self.pairs_per_call = pairs_per_call
        self.min_memory_size = tf.Variable(model.min_context_size, trainable=False, name="min_memory_size")
        self.image_shape = images = [None, image_size, image_size, 1]
        x = tf.TensorSpec(images, tf.float32, name="x")
        num_samples, seed = _scalar_spec("num_samples"), _scalar_spec("seed")
        # A model without a memory input gets the same functions with memory=None bound in.
        memory = [tf.TensorSpec(images, tf.float32, name="memory")] if model.reads_context else []

        exported = {
            "sample": self._function(self._sample, [], memory, [num_samples, seed]),
            "log_likelihood": self._function(self._log_likelihood, [x], memory, [num_samples]),
        }
        if isinstance(model, AddressedMemory):
            exported["address_posterior"] = self._function(self._address_posterior, [x], memory, [])
        if isinstance(model, AttendingMemory):
            exported["attention"] = self._function(self._attention, [x], memory, [])
        for name, function in exported.items():
            setattr(self, name, function)
        self.signature_names = tuple(exported)

    @staticmethod
    def _function(method, before: list[tf.TensorSpec], memory: list[tf.TensorSpec], after: list[tf.TensorSpec]):
        """A tf.function of method(*before, memory, *after), memory being None when the model takes none."""
        if memory:
            return tf.function(method, input_signature=[*before, *memory, *after])
        count = len(before)
        return tf.function(lambda *args: method(*args[:count], None, *args[count:]), input_signature=[*before, *after])

    def _checked(self, images: tf.Tensor | None) -> tf.Tensor | None:
        # Signatures called through `model.signatures[...]` check dtypes but not shapes; this
        # turns a wrong rank or size into InvalidArgumentError before any layer sees the input.
        return None if images is None else tf.ensure_shape(images, self.image_shape)

    def _encoded(self, memory: tf.Tensor | None):
        return self.model.encode_context(self._checked(memory))

    def _sample(self, memory, num_samples, seed):
        drawn = self.model.sample(self._encoded(memory), num_samples, tf.stack([seed, 0]))
        return {name: tf.cast(value, tf.int32 if value.dtype.is_integer else tf.float32)
                for name, value in drawn.items()}

    def _log_likelihood(self, x, memory, num_samples):
        seed = tf.constant(LOG_LIKELIHOOD_SEED, tf.int32)
        sums = streamed_sums(self.model, self._checked(x), self._encoded(memory), num_samples, self.pairs_per_call,
                             seed)
        return {"nll_nats": -(sums["log_sum_w"] - tf.math.log(tf.cast(num_samples, tf.float32)))}

    def _address_posterior(self, x, memory):
        return {"probs": self.model.address_posterior(self._checked(x), self._encoded(memory)).probs_parameter()}

    def _attention(self, x, memory):
        return {"weights": self.model.attention(self._checked(x), self._encoded(memory))}


def export_saved_model(model, image_size: int, directory: str) -> str:
    """Writes the SavedModel to `directory`, replacing any previous one only once it is complete.

    It is written to `<directory>.tmp` and renamed into place (the previous export moves to
    `<directory>.old` for the instant in between), so `directory` never holds a half-written
    SavedModel. Returns `directory`.
    """
    module = ServingModule(model, image_size)
    directory = os.path.abspath(directory)
    staging, retired = f"{directory}.tmp", f"{directory}.old"
    for leftover in (staging, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    tf.saved_model.save(module, staging, signatures={
        **{name: getattr(module, name) for name in module.signature_names}, "serving_default": module.sample
    })
    if os.path.exists(directory):
        os.rename(directory, retired)
    os.rename(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)
    return directory


def export_run(logdir: str) -> str:
    """Exports the latest checkpoint of the run in `logdir` to `logdir/saved_model`, in float32.

    Only reads the checkpoints. Returns the SavedModel's path.
    """
    config, model, _ = checkpoints.restore_model(logdir)
    return export_saved_model(model, config.model.image_size, os.path.join(logdir, SAVED_MODEL_DIR))
