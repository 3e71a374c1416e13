"""Plain configuration records. Entry points fill them from flags; library code reads only these."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are shaped.

    data_dir: a dataset root laid out like `shared/data` (`omniglot/`, `binarized_mnist/`),
      or None to read through TensorFlow Datasets.
    split: "45_5" (Rezende et al. 2016, the VMA paper) or "lake" (background/evaluation).
    image_size: 26 (104 crop, 4x4 max-pool, the paper) or 28 (112 pad, 4x4 max-pool).
    cache_dir: where preprocessed arrays are kept between runs.
    """

    data_dir: str | None = None
    split: str = "45_5"
    image_size: int = 26
    cache_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """One training step's batch: targets and a memory of other images of the same classes.

    The batch holds classes_per_batch * targets_per_class targets; the memory holds
    (classes_per_batch + confounding_classes) * memory_per_class images.
    """

    classes_per_batch: int = 8
    targets_per_class: int = 4
    memory_per_class: int = 4
    confounding_classes: int = 0

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.targets_per_class

    @property
    def memory_size(self) -> int:
        return (self.classes_per_batch + self.confounding_classes) * self.memory_per_class


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the VMA model (paper section 4.2).

    conv_channels: feature maps of every 3x3 conv layer (the paper: 48 or 64).
    hidden_units: width of the one hidden layer of each MLP head.
    prior: "learned" (p(a) from a learned query e_p) or "flat" (1/|M|).
    tie_embeddings: use one embedding net for memory and query (h_q = h).
    """

    image_size: int = 26
    latent_dim: int = 64
    embed_dim: int = 128
    conv_channels: int = 48
    hidden_units: int = 256
    prior: str = "learned"
    tie_embeddings: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation and bookkeeping of one run; `logdir` holds all of its state."""

    logdir: str
    steps: int = 100_000
    seed: int = 0
    num_samples: int = 4
    vimco_baseline: str = "geometric"
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    checkpoint_every: int = 1000
    max_checkpoints: int = 3
    log_every: int = 100
    image_summary_every: int = 1000
    mixed_precision: str = "float32"
    jit_compile: bool = False
