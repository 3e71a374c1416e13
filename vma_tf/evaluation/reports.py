"""Published numbers, and each mode's result as a Markdown table and PNG figures."""

from __future__ import annotations

import math
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Table 1 of both papers: conditional NLL in nats, by classes C and conditioning images n (x_{n+1}
# given x_1..x_n). The VMA paper's (K = 1000): VMA trained on the Lake split at 28x28, the data of
# the GMN paper (Bartunov & Vetrov 2017), whose Table 1 gives the GMN rows (C_train = 2 unless
# named) and a VAE's NLL.
_GMN_VAE = {0: 89.1}
PUBLISHED_CONDITIONAL = {
    "VMA": {
        1: {1: 86.5, 2: 83.0, 3: 79.6, 4: 79.0, 5: 76.5, 10: 76.2, 19: 73.9},
        2: {1: 87.2, 2: 83.3, 3: 80.9, 4: 79.3, 5: 79.1, 10: 77.0, 19: 75.0},
        4: {1: 87.5, 2: 83.3, 3: 81.2, 4: 80.7, 5: 79.5, 10: 78.6, 19: 76.7},
        16: {1: 89.6, 2: 85.1, 3: 81.5, 4: 81.9, 5: 81.3, 10: 79.8, 19: 77.0},
    },
    "GMN": {
        1: {0: 89.7, 1: 83.3, 2: 78.9, 3: 75.7, 4: 72.9, 5: 70.1, 10: 59.9, 19: 45.8},
        2: {0: 89.4, 1: 86.4, 2: 84.9, 3: 82.4, 4: 81.0, 5: 78.8, 10: 71.4, 19: 61.2},
        4: {0: 89.3, 1: 88.3, 2: 87.3, 3: 86.7, 4: 85.4, 5: 84.0, 10: 80.2, 19: 73.7},
    },
    "GMN, conditional": {
        1: {1: 93.5, 2: 82.2, 3: 78.6, 4: 76.8, 5: 75.0, 10: 69.7, 19: 64.3},
        2: {2: 86.1, 3: 83.7, 4: 82.8, 5: 81.0, 10: 76.5, 19: 71.4},
        4: {4: 86.8, 5: 85.7, 10: 82.5, 19: 78.0},
    },
    "GMN, C_train = 1, avg": {1: {0: 92.4, 1: 84.5, 2: 82.3, 3: 81.4, 4: 81.1, 5: 80.4, 10: 79.8, 19: 79.7}},
    "GMN, C_train = 2, avg": {2: {0: 88.2, 1: 86.6, 2: 86.4, 3: 85.7, 4: 85.3, 5: 84.5, 10: 83.7, 19: 83.4}},
    "GMN, C_train = 1, avg, conditional": {1: {1: 88.0, 2: 84.1, 3: 82.9, 4: 82.4, 5: 81.7, 10: 80.9, 19: 80.7}},
    "GMN, C_train = 2, avg, conditional": {2: {2: 85.7, 3: 85.0, 4: 85.3, 5: 84.6, 10: 84.5, 19: 83.7}},
    "VAE (GMN paper)": {1: _GMN_VAE, 2: _GMN_VAE, 4: _GMN_VAE},
}
# The published row drawn beside a model's own in conditional.png.
PUBLISHED_CONDITIONAL_OF_MODEL = {"vma": "VMA", "gmn": "GMN", "vae": "VAE (GMN paper)"}
# Test NLL in nats by (dataset, memory) of the run. Section 4.2 of the VMA paper: few-shot
# Omniglot (45/5 split, 26x26); 28x28 Omniglot (Burda et al.'s) with a learned memory of 256
# entries, K = 5000. Section 4.1 gives no MNIST number for a learned memory (KL_a ≈ 2.5 ± 0.3
# nats, NLL close to the same-architecture VAE) and, for recall, the optimum log |M|.
PUBLISHED_NLL = {
    ("omniglot", "few_shot"): {
        "VAE (no memory)": 90.8,
        "VMA (best)": 68.8,
        "soft attention (best: 16 examples of 1-2 classes in memory)": 73.4,
    },
    ("omniglot", "learned"): {"VMA, |M| = 256, K = 5000 (Burda's 28x28)": 103.6},
}
PUBLISHED_KL_A = {("mnist", "learned"): "2.5 ± 0.3"}
# Section 4.2: classification with q(a|x), no fine-tuning.
PUBLISHED_ACCURACY = {"5way1shot": 0.91, "5way5shot": 0.97, "20way1shot": 0.77, "20way5shot": 0.90}


# How each model diagnostic is shown.
DIAGNOSTIC_LABELS = {
    "kl_a": "KL(q(a|x) ‖ p(a))",
    "kl_z": "E KL(q(z) ‖ p(z))",
    "entropy_a": "entropy of q(a|x)",
    "address_information": "I(x; a) over a batch",
    "entropy_attention": "entropy of the attention weights",
}


def _header(result: dict) -> str:
    meta = result["meta"]
    return (
        f"# eval.py --mode={meta['mode']}\n\n"
        f"Run `{meta['logdir']}` ({meta.get('model', 'vma')}) at step {meta['checkpoint_step']}; "
        f"test split of {_data_name(meta)} "
        f"at {meta['image_size']}x{meta['image_size']}; seed {meta['seed']}; {meta['runtime_sec']:.0f} s.\n\n"
    )


def _this_run(result: dict) -> str:
    return f"{result['meta'].get('model', 'vma')} (this run)"


def _data_name(meta: dict) -> str:
    if meta.get("dataset") == "mnist":
        return "binarized MNIST"
    return f"Omniglot `{meta['split']}`"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; a `|` inside a cell (p(c|x)) is escaped, or it would split the cell."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)]) + "\n"


def _nats(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def nll_markdown(result: dict) -> str:
    rows = [
        ["NLL bound (K = {})".format(result["num_importance_samples"]),
         f"{result['nll_nats']:.2f} ± {result['nll_stderr']:.2f}"],
        ["negative ELBO (K = 1)", f"{result['elbo_nats']:.2f}"],
        ["reconstruction", f"{result['recon_nats']:.2f}"],
        *([DIAGNOSTIC_LABELS.get(name, name), f"{result[name]:.3f}"] for name in result["diagnostics"]),
    ]
    experiment = (result.get("dataset", "omniglot"), result.get("memory_source", "few_shot"))
    published = [[f"paper: {name}", _nats(value)] for name, value in PUBLISHED_NLL.get(experiment, {}).items()]
    if experiment in PUBLISHED_KL_A:
        published.append(["paper: KL(q(a|x) ‖ p(a))", PUBLISHED_KL_A[experiment]])
    if "optimal_nats" in result:
        published.append([f"optimal lookup table: log {result['memory_size']}", f"{result['optimal_nats']:.2f}"])
        rows.append(["argmax q(a|x) is the target's own entry", f"{result['top1_recall_rate']:.3f}"])
    return (
        _header(result)
        + f"{result['num_examples']} test targets; memory: {result['memory']}. Nats, ± one standard error.\n\n"
        + _table(["quantity", "value (nats)"], rows + published)
    )


def _cell(mean: float | None, stderr: float | None) -> str:
    return "—" if mean is None else f"{mean:.1f} ± {stderr:.1f}"


def conditional_rows(result: dict, name: str) -> list[list[str]]:
    """The Markdown rows of one conditional result, labelled `name`, with the published rows of
    each C under them."""
    shots = list(next(iter(result["table"].values())).keys())
    rows = []
    for classes, row in result["table"].items():
        errors = result["stderr"][classes]
        rows.append([name, classes] + [_cell(row[n], errors[n]) for n in shots])
        for paper_name, by_classes in PUBLISHED_CONDITIONAL.items():
            published = by_classes.get(int(classes))
            if published:
                rows.append([f"paper: {paper_name}", classes] + [_nats(published.get(int(n))) for n in shots])
    return rows


def conditional_header(result: dict) -> list[str]:
    return ["model", "C"] + [f"n = {n}" for n in next(iter(result["table"].values()))]


def table1_markdown(results: dict[str, dict]) -> str:
    """Table 1 of both papers from several runs' `conditional` results {run name: result} that share
    their columns: by C, every run's row, then the papers' rows."""
    first = next(iter(results.values()))
    shots = list(next(iter(first["table"].values())))
    classes = sorted({int(c) for result in results.values() for c in result["table"]})
    rows = []
    for c in classes:
        for name, result in results.items():
            if str(c) in result["table"]:
                row, errors = result["table"][str(c)], result["stderr"][str(c)]
                rows.append([name, str(c)] + [_cell(row.get(n), errors.get(n)) for n in shots])
        for paper_name, by_classes in PUBLISHED_CONDITIONAL.items():
            if c in by_classes:
                rows.append([f"paper: {paper_name}", str(c)] + [_nats(by_classes[c].get(int(n))) for n in shots])
    return (
        f"# Table 1: conditional NLL (nats) of x_(n+1) given x_1..x_n, sequences of 20 from C test classes\n\n"
        f"K = {first['num_importance_samples']}, {first['num_sequences']} sequences per cell, ± one standard error "
        "(— : the model cannot read so few images). Ours are measured on the Lake split's evaluation alphabets at "
        "28x28 derived from the 105x105 originals; the papers' rows are as published.\n\n"
        + _table(["model", "C"] + [f"n = {n}" for n in shots], rows)
    )


# How each sampler's sequences are described in the conditional table's header.
_SAMPLINGS = {
    "distinct": " (distinct classes, no drawing twice)",
    "with_replacement": " (classes and drawings drawn with replacement, as the GMN authors' sampler)",
}


def conditional_markdown(result: dict) -> str:
    return (
        _header(result)
        + f"NLL of the next image given the first n of a sequence of 20 from C test classes"
        f"{_SAMPLINGS[result.get('sequence_sampling', 'distinct')]}; "
        f"K = {result['num_importance_samples']}, {result['num_sequences']} sequences per cell, "
        "± one standard error (— : the model cannot read so few images). The papers' rows are for "
        "models trained on the Lake split at 28x28.\n\n"
        + _table(conditional_header(result), conditional_rows(result, _this_run(result)))
    )


def memory_sweep_markdown(result: dict) -> str:
    names = result["diagnostics"]
    by_classes = [
        [str(p["classes"]), str(p["memory_size"]), f"{p['nll_nats']:.1f} ± {p['nll_stderr']:.1f}",
         _nats(p["optimal_reference_nats"]), *(f"{p[name]:.2f}" for name in names)]
        for p in result["by_classes"]
    ]
    by_shots = [
        [str(p["shots"]), str(p["memory_size"]), f"{p['nll_nats']:.1f} ± {p['nll_stderr']:.1f}",
         *(f"{p[name]:.2f}" for name in names)]
        for p in result["by_shots"]
    ]
    by_tiled_size = [
        ["tiled", str(p["memory_size"]), f"{p['nll_nats']:.1f} ± {p['nll_stderr']:.1f}",
         *(f"{p[name]:.2f}" for name in names)]
        for p in result.get("by_tiled_size", [])
    ]
    labels = [DIAGNOSTIC_LABELS.get(name, name) for name in names]
    tiled_note = (
        "\nRows \"tiled\": the test images tiled to |M| (copies shifted by up to 2 pixels, 1% of pixels "
        "flipped); each target reads every entry but its own image's copies.\n" if by_tiled_size else ""
    )
    return (
        _header(result)
        + f"K = {result['num_importance_samples']}. Every point uses the same draws of targets and classes, so "
        "± (one standard error of the level, mostly the spread between characters) overstates the noise "
        "of the differences between points.\n\n"
        + f"## A: classes in memory, {result['fixed_shots']} images each\n\n"
        + _table(["classes", "|M|", "NLL (nats)", "optimal: NLL(C=1) + log C", *labels], by_classes)
        + f"\n## B: all {result['num_test_classes']} test classes in memory\n\n"
        + _table(["images per class", "|M|", "NLL (nats)", *labels], by_shots + by_tiled_size)
        + tiled_note
    )


def classification_markdown(result: dict) -> str:
    rows = [
        [name, f"{r['accuracy']:.3f} ± {r['ci95']:.3f}", f"{r['accuracy_iw']:.3f} ± {r['ci95_iw']:.3f}",
         _nats(None) if name not in PUBLISHED_ACCURACY else f"{PUBLISHED_ACCURACY[name]:.2f}"]
        for name, r in result["tasks"].items()
    ]
    return (
        _header(result)
        + f"{result['episodes']} episodes per task, {result['queries_per_class']} queries per class; "
        f"± 95% interval. Importance-weighted: K = {result['iw_samples']}.\n\n"
        + _table(["task", "p(c|x) from the entry posterior", "importance-weighted", "paper, q(a|x)"], rows)
    )


SAMPLE_FIGURES = {
    "one_shot": "first column, the only image in memory; then samples from p(x|M)",
    "sequence": "first column, one test sequence x_1, x_2, ... top to bottom; row t (from 0), samples given "
                "x_1..x_t, the images above it (GMN paper, Figure 2)",
    "addressing": "a target, then the 5 memory entries with the most posterior mass (q(a|x) for VMA, the "
                  "attention weights for soft attention)",
    "by_address": "each row shares one address a ~ p(a) of the learned memory",
    "unconditional": "samples from p(x)",
}


def samples_markdown(result: dict) -> str:
    captions = [
        f"`{os.path.basename(path)}` ({caption})"
        for path in result["meta"]["figures"]
        for name, caption in SAMPLE_FIGURES.items()
        if path.endswith(f"_{name}.png")
    ]
    text = _header(result) + "Figures: " + "; ".join(captions) + ".\n\n"
    if "row_addresses" in result:
        rows = [[str(a), f"{p:.4f}"] for a, p in zip(result["row_addresses"], result["row_prior_probabilities"])]
        return (
            text + f"Learned memory of {result['memory_size']} entries; entropy of p(a): "
            f"{result['prior_entropy_nats']:.2f} nats.\n\n" + _table(["address", "p(a)"], rows)
        )
    if "top5_probabilities" not in result:
        return text
    rows = [
        [str(i), " ".join(f"{p:.2f}{'*' if same else ''}" for p, same in zip(probs, same_class))]
        for i, (probs, same_class) in enumerate(zip(result["top5_probabilities"], result["top5_same_class"]))
    ]
    return (
        text + f"Memory of {result['memory_size']} entries. Top-1 entry of the target's class: "
        f"{result['top1_same_class_rate']:.2f}. Posterior mass of the top 5 entries per target (* = the target's "
        "class):\n\n" + _table(["target", "posterior mass of the top 5"], rows)
    )


MARKDOWN = {
    "nll": nll_markdown,
    "conditional": conditional_markdown,
    "memory_sweep": memory_sweep_markdown,
    "classification": classification_markdown,
    "samples": samples_markdown,
}


def conditional_figure(result: dict, path: str) -> None:
    """NLL of x_(n+1) against n, one line per C with ± one standard error; the paper's row for the
    same model and C dashed in the same colour."""
    figure, axes = plt.subplots(figsize=(8, 4))
    published = PUBLISHED_CONDITIONAL.get(PUBLISHED_CONDITIONAL_OF_MODEL.get(result["meta"].get("model"), ""), {})
    for index, (classes, row) in enumerate(result["table"].items()):
        color = f"C{index}"
        shots = [int(n) for n, value in row.items() if value is not None]
        axes.errorbar(shots, [row[str(n)] for n in shots], yerr=[result["stderr"][classes][str(n)] for n in shots],
                      marker="o", color=color, label=f"C = {classes}, {_this_run(result)}")
        paper = published.get(int(classes), {})
        if paper:
            paper_shots = sorted(paper)
            axes.plot(paper_shots, [paper[n] for n in paper_shots], "--", color=color,
                      label=f"C = {classes}, paper")
    axes.set(xlabel="conditioning images n", ylabel="NLL of x_(n+1) (nats)",
             title=f"Conditional NLL, K = {result['num_importance_samples']}")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def classification_figure(result: dict, path: str) -> None:
    """Accuracy of each task by q(a|x) and importance weighting, with 95% intervals; the paper's
    q(a|x) accuracy as a black tick."""
    names = list(result["tasks"])
    positions = np.arange(len(names))
    figure, axes = plt.subplots(figsize=(1.6 * len(names) + 4, 4))
    for offset, (key, label) in ((-0.2, ("accuracy", "p(c|x) from q(a|x)")),
                                 (0.2, ("accuracy_iw", f"importance-weighted, K = {result['iw_samples']}"))):
        interval = "ci95" if key == "accuracy" else "ci95_iw"
        axes.bar(positions + offset, [result["tasks"][n][key] for n in names], width=0.4, label=label,
                 yerr=[result["tasks"][n][interval] for n in names], capsize=3)
    paper = [(i, PUBLISHED_ACCURACY[n]) for i, n in enumerate(names) if n in PUBLISHED_ACCURACY]
    if paper:
        axes.scatter([i - 0.2 for i, _ in paper], [a for _, a in paper], marker="_", s=500, color="black",
                     label="paper, q(a|x)", zorder=3)
    axes.set(xticks=positions, xticklabels=names, ylim=(0, 1.05), ylabel="accuracy",
             title=f"Few-shot classification, {result['episodes']} episodes per task (95% intervals)")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def curves_figure(rows: list[dict], path: str, title: str) -> None:
    """metrics.jsonl rows as one panel per quantity (the loss, the reconstruction term and each
    model diagnostic present) against the training step."""
    names = [name for name in ("loss_nats", "recon_nats", *DIAGNOSTIC_LABELS) if name in rows[0]]
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    steps = [row["step"] for row in rows]
    for axis, name in zip(axes[0], names):
        axis.plot(steps, [row[name] for row in rows])
        axis.set(xlabel="step", title=CURVE_LABELS.get(name, DIAGNOSTIC_LABELS.get(name, name)))
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


CURVE_LABELS = {"loss_nats": "loss: negative bound (nats)", "recon_nats": "reconstruction (nats)"}


def memory_sweep_figure(result: dict, path: str) -> None:
    """Figure 5 A and B side by side."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    classes = [p["classes"] for p in result["by_classes"]]
    left.errorbar(classes, [p["nll_nats"] for p in result["by_classes"]],
                  yerr=[p["nll_stderr"] for p in result["by_classes"]], marker="o", label=_this_run(result))
    reference = [p["optimal_reference_nats"] for p in result["by_classes"]]
    if reference[0] is not None:
        left.plot(classes, reference, "k--", label="optimal: NLL(C=1) + log C")
    left.set(xscale="log", xlabel="classes in memory", ylabel="NLL (nats)",
             title=f"A: {result['fixed_shots']} images per class")
    left.legend()
    points = result["by_shots"] + result.get("by_tiled_size", [])
    right.errorbar([p["memory_size"] for p in points], [p["nll_nats"] for p in points],
                   yerr=[p["nll_stderr"] for p in points], marker="o")
    if result.get("by_tiled_size"):
        right.axvline(result["by_shots"][-1]["memory_size"], color="gray", linestyle=":", label="tiled beyond")
        right.legend()
    right.set(xscale="log", xlabel="|M| (images in memory)", ylabel="NLL (nats)",
              title=f"B: all {result['num_test_classes']} test classes in memory")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _image_rows(
    rows: np.ndarray, path: str, titles: list[list[str]] | None = None, title: str | None = None
) -> None:
    """rows [R, C, H, W] in [0, 1] as a grid of R x C images, ink dark; `titles` label cells row by
    row (a shorter list labels the first rows only), `title` the figure."""
    num_rows, num_columns = rows.shape[:2]
    title_lines = textwrap.wrap(title, width=16 * num_columns) if title else []
    title_height = 0.2 * len(title_lines) + 0.1 * bool(title_lines)  # inches
    height = num_rows * 1.0 + title_height
    figure, axes = plt.subplots(num_rows, num_columns, figsize=(num_columns * 0.9, height), squeeze=False)
    for r in range(num_rows):
        for c in range(num_columns):
            axes[r, c].imshow(1.0 - rows[r, c], cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_axis_off()
            if titles and r < len(titles):
                axes[r, c].set_title(titles[r][c], fontsize=7)
    if title_lines:
        figure.suptitle("\n".join(title_lines), fontsize=8)
    figure.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - title_height / height))
    figure.savefig(path, dpi=100)
    plt.close(figure)


# The first row's column labels of the figures whose first column is the conditioning image.
_COLUMN_TITLES = {
    "one_shot": lambda columns: [["memory"] + [f"sample {i}" for i in range(1, columns)]],
    "sequence": lambda columns: [["x_(t+1)"] + [f"sample {i}" for i in range(1, columns)]],
}


def samples_figures(result: dict, images: dict, stem: str) -> list[str]:
    """Writes `<stem>_<figure>.png` for each figure of `images`: one_shot, sequence and addressing (a
    model that reads a memory), by_address (a learned memory) or unconditional; returns their paths."""
    paths = []
    for name in ("by_address", "unconditional", "one_shot", "sequence"):
        if name in images:
            paths.append(f"{stem}_{name}.png")
            _image_rows(images[name], paths[-1], _COLUMN_TITLES.get(name, lambda _: None)(images[name].shape[1]),
                        SAMPLE_FIGURES[name][0].upper() + SAMPLE_FIGURES[name][1:])
    if "top_entries" not in images:
        return paths
    addressing = f"{stem}_addressing.png"
    grid = np.concatenate([images["targets"][:, None], images["top_entries"]], axis=1)
    titles = [
        ["target"] + [f"{p:.2f}{'*' if same else ''}" for p, same in zip(probs, same_class)]
        for probs, same_class in zip(result["top5_probabilities"], result["top5_same_class"])
    ]
    _image_rows(grid, addressing, titles)
    return [*paths, addressing]


# Each mode's figure beside its JSON (`<stem>.png`); samples writes its own set.
FIGURES = {
    "conditional": conditional_figure,
    "memory_sweep": memory_sweep_figure,
    "classification": classification_figure,
}
