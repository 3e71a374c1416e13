"""SavedModel export: a trained model that plain TensorFlow can load, sample and score.

Signatures (names and argument names are the contract; any batch and memory size):
    sample(memory float32[M,H,W,1], num_samples int32[], seed int32[])
        -> images float32[num_samples,H,W,1] (Bernoulli means), addresses int32[num_samples]
    address_posterior(x float32[B,H,W,1], memory float32[M,H,W,1]) -> probs float32[B,M]
    log_likelihood(x float32[B,H,W,1], memory float32[M,H,W,1], num_samples int32[])
        -> nll_nats float32[B]: minus the K-sample bound, drawn with the fixed seed LOG_LIKELIHOOD_SEED
    serving_default = sample
Images are in [0, 1] with ink = 1, H = W = the model's image size.

A model with a learned memory reads only its own memory, so its signatures have no `memory`
argument (passing one is an error): sample(num_samples, seed), address_posterior(x) -> probs
float32[B, |M|], log_likelihood(x, num_samples).
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf

from vma_tf import checkpoints
from vma_tf.evaluation.bounds import DEFAULT_PAIRS_PER_CALL, streamed_sums

SAVED_MODEL_DIR = "saved_model"
SIGNATURES = ("sample", "address_posterior", "log_likelihood", "serving_default")
LOG_LIKELIHOOD_SEED = (0, 0)


def _scalar_spec(name: str) -> tf.TensorSpec:
    return tf.TensorSpec([], tf.int32, name=name)


class ServingModule(tf.Module):
    """The exported functions of one model; their input signatures fix H = W = image_size."""

    def __init__(self, model, image_size: int, pairs_per_call: int = DEFAULT_PAIRS_PER_CALL):
        super().__init__(name="vma_serving")
        self.model = model
        self.pairs_per_call = pairs_per_call
        self.image_shape = images = [None, image_size, image_size, 1]
        x_spec = tf.TensorSpec(images, tf.float32, name="x")
        num_samples, seed = _scalar_spec("num_samples"), _scalar_spec("seed")
        if model.learned_memory is not None:
            self.sample = tf.function(lambda n, s: self._sample(None, n, s), input_signature=[num_samples, seed])
            self.address_posterior = tf.function(lambda x: self._address_posterior(x, None), input_signature=[x_spec])
            self.log_likelihood = tf.function(
                lambda x, n: self._log_likelihood(x, None, n), input_signature=[x_spec, num_samples]
            )
            return
        memory_spec = tf.TensorSpec(images, tf.float32, name="memory")
        self.sample = tf.function(self._sample, input_signature=[memory_spec, num_samples, seed])
        self.address_posterior = tf.function(self._address_posterior, input_signature=[x_spec, memory_spec])
        self.log_likelihood = tf.function(self._log_likelihood, input_signature=[x_spec, memory_spec, num_samples])

    def _checked(self, images: tf.Tensor | None) -> tf.Tensor | None:
        # Signatures called through `model.signatures[...]` check dtypes but not shapes; this
        # turns a wrong rank or size into InvalidArgumentError before any layer sees the input.
        return None if images is None else tf.ensure_shape(images, self.image_shape)

    def _sample(self, memory, num_samples, seed):
        images, addresses = self.model.sample(self._checked(memory), num_samples, tf.stack([seed, 0]))
        return {"images": tf.cast(images, tf.float32), "addresses": tf.cast(addresses, tf.int32)}

    def _address_posterior(self, x, memory):
        q_a = self.model.address_posterior(self._checked(x), self.model.encode_memory(self._checked(memory)))
        return {"probs": q_a.probs_parameter()}

    def _log_likelihood(self, x, memory, num_samples):
        x, encoding = self._checked(x), self.model.encode_memory(self._checked(memory))
        seed = tf.constant(LOG_LIKELIHOOD_SEED, tf.int32)
        sums = streamed_sums(self.model, x, encoding, num_samples, self.pairs_per_call, seed)
        return {"nll_nats": -(sums["log_sum_w"] - tf.math.log(tf.cast(num_samples, tf.float32)))}


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
    signatures = {name: getattr(module, name) for name in ("sample", "address_posterior", "log_likelihood")}
    tf.saved_model.save(module, staging, signatures={**signatures, "serving_default": module.sample})
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
