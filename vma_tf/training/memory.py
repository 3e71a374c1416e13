"""The memory a training step needs at the least, known before any allocation, against the
host's: a run that cannot fit is refused in one line instead of failing at its first allocation
(or being killed by the system)."""

from __future__ import annotations

import contextlib
import math
import os
import re

import tensorflow as tf

from vma_tf.config import ModelConfig
from vma_tf.errors import UserInputError
from vma_tf.models import build_model


def least_weight_bytes(model_config: ModelConfig, image_size: int) -> int:
    """The bytes training holds for the model's variables at the least: each with its gradient and
    Adam's two slots. Built in a graph of its own, where nothing is allocated."""
    with tf.Graph().as_default():
        model = build_model(model_config, image_size)
    return 4 * sum(math.prod(variable.shape) * tf.as_dtype(variable.dtype).size for variable in model.variables)


def least_output_bytes(num_samples: int, targets: tf.TensorSpec) -> int:
    """The bytes of the Bernoulli logits a bound holds at once, float32 [K, B, H, W, 1] for K =
    num_samples draws for each of a batch's targets [B, H, W, 1]. Known before the step is traced,
    which matters: a step whose shapes overflow int32 cannot even be traced."""
    return 4 * num_samples * targets.shape.num_elements()


def largest_tensor(graph: tf.Graph) -> tuple[int, str]:
    """(the bytes of the largest tensor a traced graph computes, where: "in LAYER" for the layer
    computing it, or "from a TYPE op outside the nets"); the graph's reads of variables are not
    counted."""
    largest, where = 0, ""
    for op in graph.get_operations():
        if op.type == "ReadVariableOp":
            continue
        for output in op.outputs:
            if output.dtype != tf.resource and output.shape.is_fully_defined():
                size = output.shape.num_elements() * output.dtype.size
                if size > largest:
                    largest, where = size, _origin(op)
    return largest, where


def _origin(op: tf.Operation) -> str:
    """Where an op of a traced step comes from, for a person: its layer without Keras's uniquifying
    suffixes ("decoder_3/conv2d_1_2/Conv2D" -> "in decoder/conv2d"), or its type when no layer
    scopes it (the bound's own ops, e.g. gathering the addressed entries)."""
    scopes = op.name.split("/")[:-1]
    if not scopes:
        return f"from a {op.type} op outside the nets"
    return "in " + "/".join(re.sub(r"(_\d+)+$", "", part) for part in scopes[:2])


def host_memory_bytes() -> int:
    """The memory this process may use: the host's RAM, or its cgroup's limit when that is lower."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError), open("/sys/fs/cgroup/memory.max") as f:
        limit = min(limit, int(f.read()))  # "max" (no limit) is not an int
    return limit


def require_fits_in_memory(weight_bytes: int, tensor_bytes: int = 0, tensor_origin: str = "") -> None:
    """Raises UserInputError when training needs more than this host's memory: the variables with
    their gradients and Adam's slots (least_weight_bytes), and the step's largest tensor. Both
    are known before any work; a run would otherwise fail at an allocation, or be killed by the
    system. tensor_origin says where the tensor comes from (largest_tensor)."""
    available = host_memory_bytes()
    if weight_bytes + tensor_bytes > available:
        gib = 2**30
        tensor = f", and a {tensor_bytes / gib:,.1f} GiB tensor {tensor_origin}" if tensor_bytes else ""
        raise UserInputError(
            f"training needs at least {(weight_bytes + tensor_bytes) / gib:,.1f} GiB ({weight_bytes / gib:,.1f} GiB "
            f"of weights with their gradients and Adam's slots{tensor}) but this host has {available / gib:,.1f} GiB; "
            "lower --num_samples, the batch, the memory or the nets' sizes"
        )
