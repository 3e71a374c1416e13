"""Scores an export with its own reader of the test data, independent of vma_tf:

    python bench/check_pretrained.py --saved_model=pretrained/vma-omniglot/saved_model \
        --data_dir=../shared/data [--output=bench/results/pretrained_vma-omniglot.json]
    python bench/check_pretrained.py --saved_model=pretrained/vae-omniglot/saved_model \
        --data_dir=../shared/data --max_nll=93
    python bench/check_pretrained.py --protocol=sequences --saved_model=../runs/omniglot_gmn/saved_model \
        --data_dir=../shared/data --classes=1 [--max_nll_at=n:nats,...]

`import vma_tf` is made impossible before anything else. The script reads the 45/5 split's five
test alphabets (Rezende et al. 2016, the VMA paper's section 4.2) straight from Omniglot's
archive, preprocesses them as the paper says (the top-left 104x104 of each 105x105 drawing, ink
= grey < 128, 4x4 max-pooled to 26x26), and calls the SavedModel's signatures alone:

- NLL: episodes of 8 test characters, 4 target drawings and 4 other drawings of each in memory
  (omniglot.flags' test batches), `log_likelihood` with K importance samples; the mean over all
  targets in nats, with its standard error. A model without a memory input (the VAE) scores
  the same targets alone.
- N-way 1-shot classification, for exports with `address_posterior` (VMA): one drawing of each
  of N characters in memory, one other drawing of each as the query; the predicted class is the
  argmax of `address_posterior`.

It exits 1 when a number misses the bar given by --max_nll, --min_5way1shot, --min_20way1shot
(VMA: the paper's 68.8 nats, 0.91 and 0.77, with room for noise; the paper's VAE: 90.8 nats).

--protocol=sequences scores a model trained on the GMN authors' 28x28 arrays by both papers'
Table 1 (Bartunov & Vetrov 2017, section 3), as the authors' code samples it: it reads
`<data_dir>/omniglot_gmn/test_small.npz` itself (one uint8 [20, 784] array per character, ink =
0), and each sequence draws --classes characters, then each of its 20 positions' character among
them and its drawing among the character's 20, all with replacement. --sampling=distinct draws
the characters without replacement and never repeats a drawing (with one character, the VMA
paper's way: each drawing given n other drawings of its character). The NLL of the drawing at
position n given the n before it (`log_likelihood` with memory = those n) is averaged over the
sequences for n in TABLE1_POSITIONS from the export's min_memory_size on, with its standard error.
It exits 1 when a mean misses its --max_nll_at bar.
"""

import argparse
import io
import json
import os
import sys
import zipfile

sys.modules["vma_tf"] = None  # the reader must not lean on the package it checks

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

TEST_ALPHABETS = ("Tengwar", "Sylheti", "Tibetan", "Syriac_(Serto)", "ULOG")
TABLE1_POSITIONS = (0, 1, 2, 3, 4, 5, 10, 19)  # the columns of both papers' Table 1
SEQUENCE_LENGTH = 20


def test_characters(data_dir: str) -> np.ndarray:
    """float32 [C, 20, 26, 26, 1]: the 45/5 test characters' drawings, ink = 1."""
    characters = {}
    for archive_name in ("images_background.zip", "images_evaluation.zip"):
        with zipfile.ZipFile(os.path.join(data_dir, "omniglot", archive_name)) as archive:
            for name in sorted(archive.namelist()):
                parts = name.split("/")
                if not name.endswith(".png") or parts[1] not in TEST_ALPHABETS:
                    continue
                grey = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("L"))
                ink = grey[:104, :104] < 128
                pooled = ink.reshape(26, 4, 26, 4).max(axis=(1, 3))
                characters.setdefault(f"{parts[1]}/{parts[2]}", []).append(pooled)
    return np.asarray([drawings for _, drawings in sorted(characters.items())], np.float32)[..., np.newaxis]


def _reads_memory(model) -> bool:
    return "memory" in model.signatures["log_likelihood"].structured_input_signature[1]


def nll(model, characters: np.ndarray, episodes: int, samples: int, rng: np.random.Generator) -> dict:
    log_likelihood = model.signatures["log_likelihood"]
    reads_memory = _reads_memory(model)
    values = []
    for _ in range(episodes):
        chosen = rng.choice(len(characters), 8, replace=False)
        drawings = np.stack([characters[c][rng.permutation(characters.shape[1])[:8]] for c in chosen])
        targets, memory = drawings[:, :4].reshape(-1, 26, 26, 1), drawings[:, 4:].reshape(-1, 26, 26, 1)
        inputs = dict(x=tf.constant(targets), num_samples=tf.constant(samples),
                      **({"memory": tf.constant(memory)} if reads_memory else {}))
        values.append(log_likelihood(**inputs)["nll_nats"].numpy())
    values = np.concatenate(values).astype(np.float64)
    return {"nll_nats": float(values.mean()), "nll_stderr": float(values.std(ddof=1) / np.sqrt(len(values))),
            "num_targets": len(values), "num_importance_samples": samples}


def one_shot_accuracy(model, characters: np.ndarray, ways: int, episodes: int, rng: np.random.Generator) -> float:
    correct = 0
    for _ in range(episodes):
        chosen = rng.choice(len(characters), ways, replace=False)
        pairs = np.stack([characters[c][rng.permutation(characters.shape[1])[:2]] for c in chosen])
        probs = model.signatures["address_posterior"](x=tf.constant(pairs[:, 1]), memory=tf.constant(pairs[:, 0]))
        correct += int((probs["probs"].numpy().argmax(axis=1) == np.arange(ways)).sum())
    return correct / (ways * episodes)


def gmn_test_characters(data_dir: str) -> np.ndarray:
    """float32 [C, 20, 28, 28, 1]: the GMN authors' test characters, ink = 1."""
    with np.load(os.path.join(data_dir, "omniglot_gmn", "test_small.npz")) as arrays:
        drawings = [arrays[key] for key in sorted(arrays.files)]
    return (np.asarray(drawings) == 0).astype(np.float32).reshape(len(drawings), 20, 28, 28, 1)


def draw_sequence(characters: np.ndarray, classes: int, with_replacement: bool, rng: np.random.Generator) -> np.ndarray:
    """One sequence [SEQUENCE_LENGTH, 28, 28, 1] from `classes` of the characters [C, 20, 28, 28, 1]."""
    if with_replacement:  # the authors' put_new_data
        chosen = rng.integers(len(characters), size=classes)[rng.integers(classes, size=SEQUENCE_LENGTH)]
        return characters[chosen, rng.integers(characters.shape[1], size=SEQUENCE_LENGTH)]
    slots = rng.integers(classes, size=SEQUENCE_LENGTH)
    chosen = rng.choice(len(characters), classes, replace=False)
    orders = [rng.permutation(characters.shape[1]) for _ in range(classes)]
    # The j-th position of a character in the sequence holds its j-th drawing in its order.
    drawings = [orders[slot][np.sum(slots[:position] == slot)] for position, slot in enumerate(slots)]
    return characters[chosen[slots], drawings]


def scored_positions(model) -> list[int]:
    """The TABLE1_POSITIONS n the export can score: those with at least min_memory_size drawings before."""
    held = getattr(model, "min_memory_size", None)
    least = int(held.numpy()) if held is not None else int(_reads_memory(model))
    return [n for n in TABLE1_POSITIONS if n >= least]


def sequence_nll(model, characters: np.ndarray, classes: int, with_replacement: bool, sequences: int,
                 samples: int, rng: np.random.Generator) -> dict:
    """{n: (mean NLL of position n given positions 0..n-1, its standard error)} in nats."""
    log_likelihood = model.signatures["log_likelihood"]
    reads_memory = _reads_memory(model)
    values = {n: [] for n in scored_positions(model)}
    for _ in range(sequences):
        sequence = draw_sequence(characters, classes, with_replacement, rng)
        for n in values:
            memory = {"memory": tf.constant(sequence[:n])} if reads_memory else {}
            result = log_likelihood(x=tf.constant(sequence[n : n + 1]), num_samples=tf.constant(samples), **memory)
            values[n].append(float(result["nll_nats"].numpy()[0]))
    return {n: (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v)))) for n, v in values.items()}


def check_sequences(model, args) -> tuple[dict, dict]:
    """The result and {bar: met} of --protocol=sequences."""
    bars_at = args.max_nll_at or {}
    missing = sorted(set(bars_at) - set(scored_positions(model)))
    if missing:
        sys.exit(f"check_pretrained.py: error: --max_nll_at names positions {missing} that are not scored "
                 f"({scored_positions(model)})")
    characters = gmn_test_characters(args.data_dir)
    if not 1 <= args.classes <= len(characters):
        sys.exit(f"check_pretrained.py: error: --classes must lie in 1..{len(characters)}, got {args.classes}")
    table = sequence_nll(model, characters, args.classes, args.sampling == "with_replacement", args.num_sequences,
                         args.num_importance_samples, np.random.default_rng(args.seed))
    result = {
        "saved_model": args.saved_model, "protocol": "sequences", "sampling": args.sampling,
        "classes": args.classes, "num_sequences": args.num_sequences,
        "num_importance_samples": args.num_importance_samples, "seed": args.seed,
        "nll_nats": {n: mean for n, (mean, _) in table.items()},
        "nll_stderr": {n: stderr for n, (_, stderr) in table.items()},
        "bars": {"max_nll_at": bars_at},
    }
    return result, {f"nll_at_{n}": table[n][0] <= nats for n, nats in bars_at.items()}


def check_few_shot(model, args) -> tuple[dict, dict]:
    """The result and {bar: met} of --protocol=few_shot."""
    characters = test_characters(args.data_dir)
    rng = np.random.default_rng(args.seed)
    result = {
        "saved_model": args.saved_model,
        "test_characters": len(characters),
        **nll(model, characters, args.nll_episodes, args.num_importance_samples, rng),
        "seed": args.seed,
    }
    bars = {"nll_nats": result["nll_nats"] <= args.max_nll}
    result["bars"] = {"max_nll": args.max_nll}
    if "address_posterior" in model.signatures:
        for ways, least in ((5, args.min_5way1shot), (20, args.min_20way1shot)):
            name = f"{ways}way1shot"
            result[name] = one_shot_accuracy(model, characters, ways, args.classification_episodes, rng)
            bars[name] = result[name] >= least
            result["bars"][f"min_{name}"] = least
        result["classification_episodes"] = args.classification_episodes
    return result, bars


def position_bars(text: str) -> dict[int, float]:
    """--max_nll_at's "n:nats,...", as {n: nats}."""
    try:
        return {int(n): float(nats) for n, nats in (item.split(":") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected n:nats,... (e.g. 1:86,19:50), got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=("few_shot", "sequences"), default="few_shot")
    parser.add_argument("--saved_model", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--output", default=None)
    parser.add_argument("--num_importance_samples", type=int, default=200)
    parser.add_argument("--nll_episodes", type=int, default=32)
    parser.add_argument("--classification_episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_nll", type=float, default=71.0)
    parser.add_argument("--min_5way1shot", type=float, default=0.88)
    parser.add_argument("--min_20way1shot", type=float, default=0.72)
    parser.add_argument("--classes", type=int, default=1, help="sequences: characters per sequence (C)")
    parser.add_argument("--num_sequences", type=int, default=100, help="sequences: how many")
    parser.add_argument("--sampling", choices=("with_replacement", "distinct"), default="with_replacement",
                        help="sequences: the GMN authors' sampler, or no repeated drawing")
    parser.add_argument("--max_nll_at", type=position_bars, default=None,
                        help="sequences: bars as n:nats,... (the mean NLL of position n given the n before it)")
    args = parser.parse_args()
    data_files = (["omniglot_gmn/test_small.npz"] if args.protocol == "sequences"
                  else ["omniglot/images_background.zip", "omniglot/images_evaluation.zip"])
    needed_files = [os.path.join(args.saved_model, "saved_model.pb")]
    needed_files += [os.path.join(args.data_dir, name) for name in data_files]
    for needed in needed_files:
        if not os.path.isfile(needed):
            sys.exit(f"check_pretrained.py: error: missing {needed}")
    if args.num_sequences < 2 or args.num_importance_samples < 1:
        sys.exit("check_pretrained.py: error: --num_sequences must be at least 2 (for a standard error) and "
                 "--num_importance_samples at least 1")

    model = tf.saved_model.load(args.saved_model)
    result, bars = (check_sequences if args.protocol == "sequences" else check_few_shot)(model, args)
    result["bars"]["met"] = bars
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    if not all(bars.values()):
        sys.exit(f"check_pretrained.py: missed: {', '.join(name for name, ok in bars.items() if not ok)}")


if __name__ == "__main__":
    main()
