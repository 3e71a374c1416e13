"""Training, handed its parts: the loop (loop.py: validation, the run's folder, signals, metrics
and console) builds a Trainer (trainer.py: the compiled step under a tf.distribute strategy, its
checkpoints and summaries) from a model, an optimizer, a strategy (distribute.py) and the task,
once memory.py has checked that a step fits in the host's memory."""

from vma_tf.training.distribute import is_chief, make_strategy, replica_share
from vma_tf.training.loop import PRECISIONS, TrainingResult, train, validate
from vma_tf.training.memory import largest_tensor, least_weight_bytes, require_fits_in_memory
from vma_tf.training.trainer import Trainer, build_optimizer, build_trainer, weight_decay_variables

__all__ = [
    "PRECISIONS", "Trainer", "TrainingResult", "build_optimizer", "build_trainer", "is_chief", "largest_tensor",
    "least_weight_bytes", "make_strategy", "replica_share", "require_fits_in_memory", "train", "validate",
    "weight_decay_variables",
]
