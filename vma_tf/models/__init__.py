"""Generative models behind one interface (`base.py`), and the registry that names them.

Consumers build models with `build_model` and ask what a model can do (base.py's capability
mixins), never which model it is; the registry below is the one place that knows the names.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from vma_tf.config import ModelConfig
from vma_tf.errors import UserInputError
from vma_tf.models.base import (
    AddressedMemory,
    AttendingMemory,
    CompactMemory,
    GenerativeModel,
    LogWeights,
    MemoryReader,
    context_for,
    read_weights,
)
from vma_tf.models.conv import ConvVMA
from vma_tf.models.gmn import ConvGMN, ResidualGMN
from vma_tf.models.mlp import MlpVMA
from vma_tf.models.soft_attention import SoftAttentionVAE
from vma_tf.models.vae import ConvVAE

__all__ = [
    "REGISTRY",
    "AddressedMemory",
    "AttendingMemory",
    "CompactMemory",
    "GenerativeModel",
    "LogWeights",
    "MemoryReader",
    "ModelEntry",
    "build_model",
    "context_for",
    "read_weights",
    "validate",
]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """How to build one registered model and what it can be trained with.

    architectures: the model_arch values it has nets for, each mapped to its class.
    tasks: the tasks (RunConfig.task) it trains with.
    min_num_samples: the least K its objective works with (VIMCO's leave-one-out needs 2).
    """

    architectures: dict[str, type[GenerativeModel]]
    tasks: tuple[str, ...]
    min_num_samples: int


REGISTRY: dict[str, ModelEntry] = {
    "vma": ModelEntry(
        {"conv": ConvVMA, "mlp": MlpVMA}, ("few_shot", "recall", "learned", "sequence"), min_num_samples=2
    ),
    "vae": ModelEntry({"conv": ConvVAE}, ("few_shot", "none", "sequence"), min_num_samples=1),
    "soft_attention": ModelEntry({"conv": SoftAttentionVAE}, ("few_shot", "recall", "sequence"), min_num_samples=1),
    "gmn": ModelEntry({"resnet": ResidualGMN, "conv": ConvGMN}, ("sequence",), min_num_samples=1),
}


def validate(config: ModelConfig, image_size: int, task: str, num_samples: int) -> None:
    """Raises UserInputError unless the registry has `config`'s model and architecture, trains it
    with `task` and with K = num_samples samples, and its class takes the settings for images of
    image_size x image_size (`GenerativeModel.check_config`); builds nothing."""
    if config.name not in REGISTRY:
        raise UserInputError(f"--model must be one of {tuple(REGISTRY)}, got {config.name!r}")
    entry = REGISTRY[config.name]
    if config.model_arch not in entry.architectures:
        raise UserInputError(
            f"--model_arch={config.model_arch} but --model={config.name} has nets for {tuple(entry.architectures)}"
        )
    if task not in entry.tasks:
        raise UserInputError(f"--task={task} but --model={config.name} trains with {entry.tasks}")
    if num_samples < entry.min_num_samples:
        raise UserInputError(
            f"--num_samples must be at least {entry.min_num_samples} for --model={config.name}"
            + (" (VIMCO)" if entry.min_num_samples > 1 else "") + f", got {num_samples}"
        )
    entry.architectures[config.model_arch].check_config(config, image_size)


def build_model(config: ModelConfig, image_size: int) -> GenerativeModel:
    """The model a ModelConfig describes, for images float32 [B, image_size, image_size, 1], with
    every variable created, so that a checkpoint restores into all of them at once;
    UserInputError for settings its class cannot take."""
    model_class = REGISTRY[config.name].architectures[config.model_arch]
    model_class.check_config(config, image_size)
    model = model_class(config, image_size)
    image = tf.zeros([1, image_size, image_size, 1])
    model.log_weights_in_context(image, context_for(model, image), 2, tf.constant([0, 0], tf.int32))
    return model
