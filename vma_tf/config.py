"""Plain configuration records. Entry points fill them from flags; library code reads only these."""

from __future__ import annotations

import dataclasses
import json

from vma_tf.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are shaped.

    dataset: "omniglot", "omniglot_gmn" (the GMN authors' 28x28 arrays, Lake split; data_dir only)
      or "mnist" (Larochelle's binarized MNIST, 28x28).
    data_dir: a dataset root laid out like `shared/data` (`omniglot/`, `binarized_mnist/`),
      or None to read through TensorFlow Datasets.
    split: Omniglot only. "45_5" (Rezende et al. 2016, the VMA paper), "lake"
      (background/evaluation) or "drawings" (every character in both: its first 15 drawings
      train, the last 5 test; for density estimation with a learned memory).
    image_size: Omniglot: 26 (104 crop, 4x4 max-pool, the paper) or 28 (112 pad, 4x4
      max-pool). MNIST: 28.
    cache_dir: where preprocessed arrays are kept between runs.
    """

    dataset: str = "omniglot"
    data_dir: str | None = None
    split: str = "45_5"
    image_size: int = 26
    cache_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """One training step's batch.

    few_shot: targets and a memory of other images of the same classes. The batch holds
    classes_per_batch * targets_per_class targets; the memory holds
    (classes_per_batch + confounding_classes) * memory_per_class images.
    recall, learned, none: images_per_batch targets; recall_memory_size random training images
    in each recall memory, the targets drawn from them.
    sequence: sequences_per_batch sequences of sequence_length images, each from
    sequence_classes classes (the GMN paper's C_train); x_t reads x_<t. sequence_sampling:
    "distinct" (distinct classes, and no drawing twice in a sequence) or "with_replacement" (the
    GMN authors' sampler: the classes and each position's drawing drawn with replacement, so a
    sequence may hold one drawing more than once). sequence_classes_first: the first
    sequence_classes positions hold one drawing of each of the sequence's classes and are not
    scored, as the GMN authors trained and tested their conditional models (no pseudo-input).
    """

    classes_per_batch: int = 8
    targets_per_class: int = 4
    memory_per_class: int = 4
    confounding_classes: int = 0
    sequence_length: int = 20
    sequences_per_batch: int = 20
    sequence_classes: int = 2
    sequence_sampling: str = "distinct"
    sequence_classes_first: bool = False
    images_per_batch: int = 32
    recall_memory_size: int = 256

    @property
    def few_shot_batch_size(self) -> int:
        return self.classes_per_batch * self.targets_per_class

    @property
    def few_shot_memory_size(self) -> int:
        return (self.classes_per_batch + self.confounding_classes) * self.memory_per_class


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model (a name in `vma_tf.models.REGISTRY`) and its nets; the images they take are
    DataConfig.image_size, and the task (RunConfig.task) says where a read memory comes from.

    name: "vma" (Variational Memory Addressing), "vae" (no memory), "soft_attention" (a memory
      read by attention on z) or "gmn" (Generative Matching Networks). The baselines share VMA's
      conv nets: they read model_arch (conv only), latent_dim, embed_dim (soft_attention),
      conv_channels and hidden_units. GMN reads latent_dim, embed_dim (its matching space),
      hidden_units (its controllers' state and heads), conv_channels (model_arch conv) and the
      gmn_ fields. The other fields are VMA's.
    model_arch: "conv" (VMA paper section 4.2), "mlp" (section 4.1) or "resnet" (GMN's appendix C).
    conv_channels: feature maps of every 3x3 conv layer (the paper: 48 or 64).
    hidden_units: width of the one hidden layer of each conv model's MLP head.
    mlp_units: the hidden layers of every net of the MLP model (the paper: 256, 128).
    prior: "learned" (p(a) from a learned query e_p) or "flat" (1/|M|).
    tie_embeddings: use one embedding net for memory and query (h_q = h); needs memory entries
      shaped like images.
    learned_memory_size: |M| of the model's own trainable memory (no weight decay), which it
      reads in place of a memory from the data (task "learned"); 0: none.
    memory_dim: learned memory only: 0 for entries shaped like images, or the size of vector
      entries (the MLP model only; the paper's MNIST runs: 256).
    memory_init: learned memory only: how a fresh run's entries start. "data": random
      training images; vector entries a fixed random projection of them, standardised (issue 31:
      entries that differ as the data do let q(a|x) specialise whatever the seed or the CPU).
      "random": random blobs (images) or N(0, 0.1^2) (vectors), which leave the memory unused or
      sent to a single entry depending on the seed and the CPU's rounding.
    gmn_pseudo_input: GMN reads a learned pseudo-input besides its context (False: the paper's
      "conditional" GMN, which needs at least one context image).
    gmn_attention: "full" (attention) or "avg" (the unweighted mean of the prototypes).
    gmn_hops, gmn_prior_hops: attention passes of the shared controller and of the prior's.
    gmn_matching: "paper" (appendix C: dot products of PReLU-affine f and g in embed_dim) or
      "authors_code" (sbos/gmn: a strength beta(h) times the cosine of f and psi, one pseudo-input
      per controller); see `vma_tf.models.gmn`.
    """

    name: str = "vma"
    model_arch: str = "conv"
    latent_dim: int = 64
    embed_dim: int = 128
    conv_channels: int = 48
    hidden_units: int = 256
    mlp_units: tuple[int, ...] = (256, 128)
    prior: str = "learned"
    tie_embeddings: bool = True
    learned_memory_size: int = 0
    memory_dim: int = 0
    memory_init: str = "data"
    gmn_pseudo_input: bool = True
    gmn_attention: str = "full"
    gmn_hops: int = 4
    gmn_prior_hops: int = 1
    gmn_matching: str = "paper"


STRATEGIES = ("default", "mirrored", "multi_worker")
SEQUENCE_SAMPLINGS = ("distinct", "with_replacement")
MEMORY_INITS = ("data", "random")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation and bookkeeping of one run; `logdir` holds all of its state.

    clip_global_norm: clip the gradient to this global norm (0: off). A step whose loss or
    gradient is not finite is skipped; max_nonfinite_steps in a row stop the run (0: never).
    weight_decay: L2 coefficient on every trainable variable but a learned memory.
    strategy: "default" (one device), "mirrored" (every local GPU, or CPU device, one replica
      each) or "multi_worker" (hosts described by TF_CONFIG); each batch's targets are split
      across the replicas and every replica reads the whole memory.
    steps_per_call: training steps per compiled call (one host dispatch each); calls end at
      every step that logs, saves or writes images, so the run's rows and checkpoints do not
      depend on it.
    learning_rate_boundaries, learning_rate_values: a piecewise-constant schedule: the rate is
      learning_rate up to step boundaries[0], then values[0] up to boundaries[1], and so on (it
      counts applied updates: a skipped non-finite step does not advance it).
    adam_beta_2, adam_epsilon: Adam's (Keras's defaults; the GMN authors used 0.99 and 1e-8).
    """

    logdir: str = "runs/vma"
    steps: int = 100_000
    seed: int = 0
    num_samples: int = 4
    vimco_baseline: str = "geometric"
    learning_rate: float = 3e-4
    learning_rate_boundaries: tuple[int, ...] = ()
    learning_rate_values: tuple[float, ...] = ()
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-7
    weight_decay: float = 0.0
    checkpoint_every: int = 1000
    max_checkpoints: int = 3
    log_every: int = 100
    image_summary_every: int = 1000
    mixed_precision: str = "float32"
    jit_compile: bool = False
    strategy: str = "default"
    steps_per_call: int = 1
    export: bool = True
    clip_global_norm: float = 0.0
    max_nonfinite_steps: int = 10


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What eval.py measures on the test split; every draw is a function of `seed`.

    num_importance_samples: K of every likelihood bound. pairs_per_call: sample-target pairs
    per model call: it sets the peak memory (~0.5 GB at 26x26 with 48 maps) whatever K and the
    number of targets are; exports use it too. num_episodes: `nll` test batches, shaped like the training
    batches; recall_memory_size: with a "recall" run, the test images in each of their memories
    (0: the run's). classes, shots, num_sequences: the `conditional` table (C, n, and sequences of
    20 images per C). sweep_classes, sweep_fixed_shots: `memory_sweep` A; sweep_shots: B, with
    every test class in memory; sweep_memories draws of sweep_targets targets per point (A:
    drawings of one class per draw; B: one drawing of each of that many classes);
    sweep_tiled_sizes: B's points past the test split, memories of the test images tiled to that
    size (`data.flat_images.tiled_images`), for models whose memory encodes compactly.
    sequence_sampling: the `conditional` table's sequences: "distinct" or "with_replacement"
    (EpisodeConfig), or "" for the run's own. per_class: the `conditional` table the VMA paper's way
    too (n drawings of each of C classes); probe_episodes: draws of the copy and same-class
    probes (0: none). classification_tasks: "<N>way<k>shot" names;
    classification_episodes, queries_per_class, iw_samples (K of the importance-weighted
    p(c|x)). sample_rows, samples_per_row: `samples`.
    """

    seed: int = 0
    num_importance_samples: int = 1000
    pairs_per_call: int = 4000
    num_episodes: int = 32
    recall_memory_size: int = 0
    classes: tuple[int, ...] = (1, 2, 4, 16)
    shots: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 10, 19)
    num_sequences: int = 100
    sequence_sampling: str = ""
    per_class: bool = True
    probe_episodes: int = 200
    sweep_classes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 144)
    sweep_fixed_shots: int = 4
    sweep_shots: tuple[int, ...] = (1, 2, 4, 8, 16, 19)
    sweep_memories: int = 32
    sweep_targets: int = 4
    sweep_tiled_sizes: tuple[int, ...] = (10_000, 30_000, 100_000)
    classification_tasks: tuple[str, ...] = ("5way1shot", "5way5shot", "20way1shot", "20way5shot")
    classification_episodes: int = 1000
    queries_per_class: int = 1
    iw_samples: int = 32
    sample_rows: int = 8
    samples_per_row: int = 10


TASKS = ("few_shot", "recall", "learned", "none", "sequence")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; stored as `logdir/config.json`.

    task: where the memory comes from, one of TASKS (each a class in `vma_tf.tasks`):
      "few_shot" (other images of the targets' classes, drawn every step), "recall" (random
      training images every step; the targets are drawn from them), "learned" (the model's own
      trainable memory), "none" (batches of images without a memory) or "sequence" (sequences
      whose every image reads the ones before it).
    """

    data: DataConfig
    episodes: EpisodeConfig
    model: ModelConfig
    train: TrainConfig
    task: str = "few_shot"

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """The inverse of `dataclasses.asdict`, for reading `config.json`. A missing field takes its
        default and a field of earlier versions is read into its current place
        (`upgraded_run_fields`); a field of the wrong type or an unknown one raises ValueError
        naming it."""
        sections = {"data": DataConfig, "episodes": EpisodeConfig, "model": ModelConfig, "train": TrainConfig}
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        values = upgraded_run_fields(values)
        task = values.get("task", cls.task)
        if not isinstance(task, str):
            raise ValueError(f'"task" is {json_name(task)}, expected str')
        unknown = sorted(set(values) - {*sections, "task"})
        if unknown:
            raise ValueError(f'unknown field "{unknown[0]}"')
        return cls(task=task, **{name: _section(name, section, values.get(name))
                                 for name, section in sections.items()})


# The JSON values each annotated field type of the config dataclasses accepts (bool is not an int here).
_JSON_TYPES = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "tuple[int, ...]": lambda v: isinstance(v, list) and all(_JSON_TYPES["int"](x) for x in v),
    "tuple[float, ...]": lambda v: isinstance(v, list) and all(_JSON_TYPES["float"](x) for x in v),
    "tuple[str, ...]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


# Fields of the config.json files of earlier versions, as (section, field): each is moved to its
# current (section, field), or dropped where the target is None. Applied by `upgraded_run_fields`.
_MOVED_FIELDS = {
    ("train", "poison_steps"): None,  # a test hook until 2026-11-30; tests now wrap the dataset
    # Up to main cf7e054 (2026-11-30) the model config held the task, its image size and one |M|
    # for both the recall task and a learned memory, and the train config the size of the recall
    # and image batches. tests/test_legacy_runs.py reads logdirs that main wrote.
    ("model", "memory"): (None, "task"),
    ("model", "image_size"): None,  # DataConfig.image_size, which it always equalled
    ("model", "memory_size"): ("episodes", "recall_memory_size"),
    ("train", "batch_size"): ("episodes", "images_per_batch"),
}


def upgraded_run_fields(values: dict) -> dict:
    """A copy of a config.json object (or of one of its sections: then pass {name: section})
    with the fields of earlier versions moved to their current places (`_MOVED_FIELDS`), and the
    learned-memory size that an earlier "memory": "learned" model held in "memory_size"."""
    upgraded = {name: dict(section) if isinstance(section, dict) else section for name, section in values.items()}
    model = values.get("model")
    if isinstance(model, dict) and model.get("memory") == "learned":
        upgraded["model"]["learned_memory_size"] = model.get("memory_size", EpisodeConfig.recall_memory_size)
    for (section, name), target in _MOVED_FIELDS.items():
        if not isinstance(upgraded.get(section), dict) or name not in upgraded[section]:
            continue
        value = upgraded[section].pop(name)
        if target is None:
            continue
        into, field = target
        if into is None:
            upgraded.setdefault(field, value)
        elif into in upgraded:
            upgraded[into].setdefault(field, value)
    return upgraded


def _section(name: str, section: type, raw: object):
    """The config dataclass `section` from its JSON object `raw`, checked field by field."""
    if not isinstance(raw, dict):
        raise ValueError(f'"{name}" is {json_name(raw)}, not an object')
    fields = {field.name: field for field in dataclasses.fields(section)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ValueError(f'unknown field "{name}.{key}"')
        if not _JSON_TYPES[fields[key].type](value):
            raise ValueError(f'"{name}.{key}" is {json_name(value)}, expected {fields[key].type}')
        values[key] = tuple(value) if isinstance(value, list) else value  # JSON stores tuples as lists
    return section(**values)


def json_name(value: object) -> str:
    """How a JSON value is named in messages: its type and the value, e.g. 'the string "16"'."""
    kinds = {bool: "the boolean", int: "the number", float: "the number", str: "the string", list: "a list",
             dict: "an object", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    return kind if isinstance(value, (list, dict)) or value is None else f"{kind} {json.dumps(value)}"


def from_flag_values(config_class: type, values: object, **overrides):
    """A config dataclass whose every field but those in `overrides` is read from the attribute of
    the same name of `values` (the entry points pass absl's FLAGS); lists become tuples."""
    fields = dict(overrides)
    for field in dataclasses.fields(config_class):
        if field.name in overrides:
            continue
        value = getattr(values, field.name)
        fields[field.name] = tuple(value) if isinstance(value, list) else value
    return config_class(**fields)


def integer_lists(values: object, names: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """{name: the attribute `name` of `values`, a list of strings, as integers}; UserInputError
    names the flag whose list is not made of integers."""
    lists = {}
    for name in names:
        try:
            lists[name] = tuple(int(value) for value in getattr(values, name))
        except ValueError as e:
            raise UserInputError(f"--{name} takes comma-separated integers ({e})") from e
    return lists
