"""An exported model from Python, with NumPy in and out: what `vma_tf.load` returns.

It runs the SavedModel's signatures (vma_tf/export.py) and nothing else of the package, so it
works on any export, of any model, however old. Drawings go through `vma_tf.preprocess` first.
"""

from __future__ import annotations

import os

import numpy as np

from vma_tf.data.drawings import Drawing, preprocess
from vma_tf.errors import UserInputError

Images = np.ndarray | list[Drawing] | tuple[Drawing, ...]


class ExportedModel:
    """A SavedModel written by train.py or `eval.py --mode=export`.

    Images go in as a list of drawings (files, PIL images or arrays of any size: each is
    preprocessed, brought to S x S as the training drawings were) or as one float array
    [N, S, S, 1] in [0, 1] that is already the model's input.
    Attributes: image_size S; reads_memory (whether `memory` is an input); min_memory_size;
    drawing_downscale (data/drawings.py); signatures (the names the export holds)."""

    def __init__(self, path: str | os.PathLike):
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise UserInputError(f"no SavedModel in {path} (expected {os.path.join(path, 'saved_model.pb')})")
        import tensorflow as tf

        self._tf = tf
        try:
            self._module = tf.saved_model.load(path)
        except (OSError, ValueError) as e:
            raise UserInputError(f"{path} is not a readable SavedModel ({str(e).splitlines()[0][:200]})") from None
        signatures = self._module.signatures
        self.signatures = tuple(sorted(signatures))
        self.image_size = int(signatures["log_likelihood"].structured_input_signature[1]["x"].shape[1])
        self.reads_memory = "memory" in signatures["sample"].structured_input_signature[1]
        self.min_memory_size, self.drawing_downscale = export_description(self._module, self.reads_memory)

    def sample(self, memory: Images | None = None, num_samples: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
        """Draws from p(x | memory): {"images": float32 [num_samples, S, S, 1] (Bernoulli means)}, and
        for an addressed model (VMA) "addresses" int32 [num_samples], each sample's memory entry."""
        self._check_count(num_samples, "num_samples", minimum=0)
        return self._call("sample", self._memory(memory), num_samples=np.int32(num_samples), seed=np.int32(seed))

    def log_likelihood(self, x: Images, memory: Images | None = None, num_samples: int = 1000) -> np.ndarray:
        """-log p(x | memory) bounded with num_samples importance samples: float32 [B], nats."""
        self._check_count(num_samples, "num_samples", minimum=1)
        inputs = {"x": self._images(x, "x"), **self._memory(memory), "num_samples": np.int32(num_samples)}
        return self._call("log_likelihood", inputs)["nll_nats"]

    def address_posterior(self, x: Images, memory: Images | None = None) -> np.ndarray:
        """q(a | x, memory) of an addressed model (VMA): float32 [B, M], rows summing to one."""
        return self._call("address_posterior", {"x": self._images(x, "x"), **self._memory(memory)})["probs"]

    def attention(self, x: Images, memory: Images) -> np.ndarray:
        """The attention weights over the memory at the mean of q(z | x) (soft attention, GMN):
        float32 [B, M]."""
        return self._call("attention", {"x": self._images(x, "x"), **self._memory(memory)})["weights"]

    def _call(self, signature: str, inputs: dict, **scalars) -> dict[str, np.ndarray]:
        if signature not in self.signatures:
            raise UserInputError(f"this export has no {signature} (it has: {', '.join(self.signatures)})")
        tf = self._tf
        try:
            outputs = self._module.signatures[signature](
                **{name: tf.constant(value) for name, value in {**inputs, **scalars}.items()}
            )
        except tf.errors.InvalidArgumentError as e:
            raise UserInputError(f"{signature}: {e.message.splitlines()[0]}") from None
        return {name: value.numpy() for name, value in outputs.items()}

    def _memory(self, memory: Images | None) -> dict[str, np.ndarray]:
        if not self.reads_memory:
            if memory is not None:
                raise UserInputError("this model takes no memory (it reads its own learned memory, or none)")
            return {}
        images = self._images([] if memory is None else memory, "memory")
        if len(images) < self.min_memory_size:
            raise UserInputError(f"memory holds {len(images)} images; this model needs at least {self.min_memory_size}")
        return {"memory": images}

    def _images(self, images: Images, what: str) -> np.ndarray:
        """float32 [N, S, S, 1] from a list of drawings or an array that is already the input."""
        size = self.image_size
        if isinstance(images, (list, tuple)):
            if not images:
                return np.zeros([0, size, size, 1], np.float32)
            return np.stack([preprocess(drawing, size, name=_name(drawing, what, index),
                                        downscale=self.drawing_downscale)
                             for index, drawing in enumerate(images)])
        array = np.asarray(images)
        if array.ndim != 4 or array.shape[1:] != (size, size, 1):
            raise UserInputError(
                f"{what} has shape {array.shape}: pass a list of drawings, or an array [N, {size}, {size}, 1]"
            )
        if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
            raise UserInputError(f"{what} has dtype {array.dtype}: expected numbers in [0, 1]")
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)) or array.min(initial=0) < 0 or array.max(initial=0) > 1:
            raise UserInputError(f"{what} holds values outside [0, 1] (or NaN)")
        return array

    @staticmethod
    def _check_count(value: int, name: str, minimum: int) -> None:
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise UserInputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def export_description(module, reads_memory: bool) -> tuple[int, str]:
    """(min_memory_size, drawing_downscale) of a loaded SavedModel `module`, as its variables say.
    Older exports lack them: those read at least one memory image (if any), and were all trained on
    max-pooled drawings."""
    held = getattr(module, "min_memory_size", None)
    min_memory_size = int(held.numpy()) if held is not None else int(reads_memory)
    held = getattr(module, "drawing_downscale", None)
    return min_memory_size, held.numpy().decode() if held is not None else "max_pool"


def _name(drawing: Drawing, what: str, index: int) -> str:
    return os.fspath(drawing) if isinstance(drawing, (str, os.PathLike)) else f"{what}[{index}]"


# The package's pretrained models: pretrained/<name>/saved_model beside the package, in a clone.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")


def pretrained_names() -> list[str]:
    """The names of the pretrained models this clone holds (`pretrained/<name>/saved_model`)."""
    if not os.path.isdir(PRETRAINED_DIR):
        return []
    return sorted(name for name in os.listdir(PRETRAINED_DIR)
                  if os.path.isfile(os.path.join(PRETRAINED_DIR, name, "saved_model", "saved_model.pb")))


def export_path(name_or_path: str | os.PathLike) -> str:
    """The export folder a pretrained model's name or a path names; UserInputError if neither."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if path in pretrained_names():
        return os.path.join(PRETRAINED_DIR, path, "saved_model")
    known = ", ".join(pretrained_names()) or "none in this clone"
    raise UserInputError(f"{path} is neither an export folder nor a pretrained model (pretrained: {known})")


def load(name_or_path: str | os.PathLike) -> ExportedModel:
    """A pretrained model by name ("vma-omniglot"), or the export in folder `name_or_path` (a logdir's
    saved_model, or any export of this package)."""
    return ExportedModel(export_path(name_or_path))
