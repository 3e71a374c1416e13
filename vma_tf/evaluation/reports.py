"""Published numbers, and each mode's result as a Markdown table and PNG figures."""

from __future__ import annotations

import math
import os
import platform
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Table 1 of both papers: conditional NLL in nats, by classes C and conditioning images n, on the
# GMN authors' data (Lake split, 28x28). The GMN paper's (Bartunov & Vetrov 2017; C_train = 2 unless
# named, and a VAE's NLL) score x_(n+1) of a sequence given x_1..x_n: n images in all from C classes.
# The VMA paper's (K = 1000) score a drawing given n drawings of *each* of C classes, its own among
# them (the "per_class" table).
_GMN_VAE = {0: 89.1}
PUBLISHED_PER_CLASS = {
    "VMA": {
        1: {1: 86.5, 2: 83.0, 3: 79.6, 4: 79.0, 5: 76.5, 10: 76.2, 19: 73.9},
        2: {1: 87.2, 2: 83.3, 3: 80.9, 4: 79.3, 5: 79.1, 10: 77.0, 19: 75.0},
        4: {1: 87.5, 2: 83.3, 3: 81.2, 4: 80.7, 5: 79.5, 10: 78.6, 19: 76.7},
        16: {1: 89.6, 2: 85.1, 3: 81.5, 4: 81.9, 5: 81.3, 10: 79.8, 19: 77.0},
    },
}
PUBLISHED_CONDITIONAL = {
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
# The published row drawn beside a model's own in conditional.png, by model and table.
PUBLISHED_OF_MODEL = {
    ("gmn", "table"): PUBLISHED_CONDITIONAL["GMN"],
    ("vae", "table"): PUBLISHED_CONDITIONAL["VAE (GMN paper)"],
    ("vma", "per_class"): PUBLISHED_PER_CLASS["VMA"],
}
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


def _published_rows(published: dict[str, dict], classes: str, shots: list[str]) -> list[list[str]]:
    return [
        [f"paper: {paper_name}", classes] + [_nats(by_classes[int(classes)].get(int(n))) for n in shots]
        for paper_name, by_classes in published.items()
        if int(classes) in by_classes
    ]


def conditional_rows(cells: dict, name: str, published: dict[str, dict]) -> list[list[str]]:
    """The Markdown rows of one table of a conditional result ({"table", "stderr"}), labelled
    `name`, with the published rows of each C under them."""
    shots = list(next(iter(cells["table"].values())).keys())
    rows = []
    for classes, row in cells["table"].items():
        errors = cells["stderr"][classes]
        rows.append([name, classes] + [_cell(row[n], errors[n]) for n in shots])
        rows.extend(_published_rows(published, classes, shots))
    return rows


def conditional_header(cells: dict) -> list[str]:
    return ["model", "C"] + [f"n = {n}" for n in next(iter(cells["table"].values()))]


# How each table of a conditional result is described, and the published rows it is set beside.
_TABLES = {
    "table": ("the GMN paper's way: NLL of x_(n+1) given x_1..x_n of a sequence of 20 from C test classes",
              PUBLISHED_CONDITIONAL),
    "per_class": ("the VMA paper's way: NLL of a drawing given n other drawings of each of C test classes, "
                  "its own among them", PUBLISHED_PER_CLASS),
}


def _tables_of(result: dict) -> dict[str, dict]:
    """{table key: {"table", "stderr"}} of the tables a conditional result holds."""
    return {key: result if key == "table" else result[key] for key in _TABLES if key in result}


def table1_markdown(results: dict[str, dict]) -> str:
    """Table 1 of both papers from several runs' `conditional` results {run name: result} that share
    their columns and sampler: for each way, by C, every run's row, then the papers' rows; then the
    probes."""
    first = next(iter(results.values()))
    shots = list(next(iter(first["table"].values())))
    sections = []
    for key, (description, published) in _TABLES.items():
        runs = {name: _tables_of(result)[key] for name, result in results.items() if key in _tables_of(result)}
        if not runs:
            continue
        classes = sorted({int(c) for cells in runs.values() for c in cells["table"]})
        rows = []
        for c in classes:
            for name, cells in runs.items():
                if str(c) in cells["table"]:
                    row, errors = cells["table"][str(c)], cells["stderr"][str(c)]
                    rows.append([name, str(c)] + [_cell(row.get(n), errors.get(n)) for n in shots])
            rows.extend(_published_rows(published, str(c), shots))
        sections.append(f"## {description[0].upper()}{description[1:]}\n\n"
                        + _table(["model", "C"] + [f"n = {n}" for n in shots], rows))
    return (
        "# Table 1 of both papers: conditional NLL (nats)\n\n"
        f"K = {first['num_importance_samples']}, {first['num_sequences']} draws per cell, the same draws for every "
        f"model of a layout; ± one standard error{_NOT_SCORED}. Sequences"
        f"{_SAMPLINGS[first.get('sequence_sampling', 'distinct')]}. The test split of each run's dataset; the "
        "papers' rows are as published.\n\n"
        + "\n".join(sections)
        + "\n" + probes_markdown(results)
    )


def probes_markdown(results: dict[str, dict]) -> str:
    """The copy probe and the same-class mass of every run that has them, as two tables."""
    copy_rows, mass_rows = [], []
    for name, result in results.items():
        probes = result.get("probes", {})
        if "copy" in probes:
            for n, cell in probes["copy"]["shots"].items():
                copy_rows.append([name, n, _nats(cell["copy_nats"]), _nats(cell["fresh_nats"]),
                                  _cell(cell["gain_nats"], cell["gain_stderr"])])
        for classes, cell in probes.get("same_class_mass", {}).items():
            if cell["mass"] is not None:
                mass_rows.append([name, classes, f"{cell['mass']:.3f}", f"{cell['chance']:.3f}",
                                  f"{cell['excess_stderr']:.3f}", str(cell["num_positions"])])
    text = ""
    if copy_rows:
        text += ("## Copy probe\n\nNLL (nats) of a test drawing with itself and n - 1 other drawings of its character "
                 "in the context (copy), and with n other drawings (fresh); gain = fresh - copy, ± one standard "
                 "error.\n\n" + _table(["model", "n", "copy", "fresh", "gain"], copy_rows) + "\n")
    if mass_rows:
        text += ("## Same-class mass\n\nThe mass of the model's entry posterior (attention, or q(a|x)) on the "
                 "context's entries of the target's class, and chance (their share of the context), over sequence "
                 "positions whose context holds entries of both kinds.\n\n"
                 + _table(["model", "C", "mass", "chance", "s.e. of mass - chance", "positions"], mass_rows))
    return text


# What an empty cell means.
_NOT_SCORED = (" (— : not scored: the model cannot read so few images, or the run's sequences put one drawing of "
               "each class first, as the GMN authors' conditional models, and score from x_(C+1) on)")

# How each sampler's sequences are described in the conditional table's header.
_SAMPLINGS = {
    "distinct": " (distinct classes, no drawing twice)",
    "with_replacement": " (classes and drawings drawn with replacement, as the GMN authors' sampler)",
}


def conditional_markdown(result: dict) -> str:
    sections = []
    for key, cells in _tables_of(result).items():
        description, published = _TABLES[key]
        sections.append(f"## {description[0].upper()}{description[1:]}\n\n"
                        + _table(conditional_header(cells), conditional_rows(cells, _this_run(result), published)))
    return (
        _header(result)
        + f"Sequences{_SAMPLINGS[result.get('sequence_sampling', 'distinct')]}; "
        f"K = {result['num_importance_samples']}, {result['num_sequences']} draws per cell, "
        f"± one standard error{_NOT_SCORED}. The papers' rows are for "
        "models trained on the Lake split at 28x28.\n\n"
        + "\n".join(sections) + "\n" + probes_markdown({_this_run(result): result})
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


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def classification_markdown(result: dict) -> str:
    rows = [
        [name, f"{r['accuracy']:.3f} ± {r['ci95']:.3f}", f"{r['accuracy_iw']:.3f} ± {r['ci95_iw']:.3f}",
         _nats(None) if name not in PUBLISHED_ACCURACY else f"{PUBLISHED_ACCURACY[name]:.2f}"]
        for name, r in result["tasks"].items()
    ]
    queries = _count(result["queries_per_class"], "query", "queries")
    return (
        _header(result)
        + f"{result['episodes']} episodes per task, {queries} per class; "
        f"± 95% interval. Importance-weighted: K = {result['iw_samples']}.\n\n"
        + _table(["task", "p(c|x) from the entry posterior", "importance-weighted", "paper, q(a|x)"], rows)
    )


SAMPLE_FIGURES = {
    "one_shot": "first column, the only image in memory; then samples from p(x|M)",
    "sequence": "first column, one test sequence x_1, x_2, ... top to bottom; row t (from 0), samples given "
                "x_1..x_t, the images above it (GMN paper, Figure 2); grey where the model cannot read t "
                "images (row 0 of every model without a pseudo-input: VMA, soft attention, conditional GMN)",
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
    """NLL against n, one panel per table of the result (the GMN paper's way, the VMA paper's), one
    line per C with ± one standard error; the paper's row for the same model, table and C dashed in
    the same colour."""
    tables = _tables_of(result)
    figure, all_axes = plt.subplots(1, len(tables), figsize=(6 * len(tables) + 2, 4), squeeze=False)
    for axes, (key, cells) in zip(all_axes[0], tables.items()):
        published = PUBLISHED_OF_MODEL.get((result["meta"].get("model"), key), {})
        for index, (classes, row) in enumerate(cells["table"].items()):
            color = f"C{index}"
            shots = [int(n) for n, value in row.items() if value is not None]
            axes.errorbar(shots, [row[str(n)] for n in shots], yerr=[cells["stderr"][classes][str(n)] for n in shots],
                          marker="o", color=color, label=f"C = {classes}, {_this_run(result)}")
            paper = published.get(int(classes), {})
            if paper:
                paper_shots = sorted(paper)
                axes.plot(paper_shots, [paper[n] for n in paper_shots], "--", color=color,
                          label=f"C = {classes}, paper")
        axes.set(xlabel="conditioning images n" + (" per class" if key == "per_class" else ""),
                 ylabel="NLL (nats)", title=f"{'per class' if key == 'per_class' else 'sequences'}, "
                 f"K = {result['num_importance_samples']}")
    all_axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def table1_figure(results: dict[str, dict[str, dict]], path: str) -> None:
    """Table 1 as a figure from {sampler: {run name: conditional result}}: NLL against n, one row of
    panels per sampler and one panel per C; every run's sequence table solid (a VMA-paper-way table
    too, labelled per class), the papers' rows dashed in grey."""
    samplings = list(results)
    classes = sorted({int(c) for runs in results.values() for result in runs.values() for c in result["table"]})
    figure, axes = plt.subplots(len(samplings), len(classes), figsize=(4 * len(classes) + 3, 3.5 * len(samplings)),
                                squeeze=False, sharey=True)
    for row, sampling in enumerate(samplings):
        for column, c in enumerate(classes):
            panel = axes[row][column]
            for index, (name, result) in enumerate(results[sampling].items()):
                for key, cells in _tables_of(result).items():
                    line = cells["table"].get(str(c), {})
                    shots = [int(n) for n, value in line.items() if value is not None]
                    if shots:
                        label = name + (", per class" if key == "per_class" else "")
                        panel.plot(shots, [line[str(n)] for n in shots], ":" if key == "per_class" else "-",
                                   marker="o", markersize=3, color=f"C{index}", label=label)
            published = {**PUBLISHED_CONDITIONAL, **{f"{k}, per class": v for k, v in PUBLISHED_PER_CLASS.items()}}
            for style, (paper_name, by_classes) in zip(("--", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))) * 3,
                                                       published.items()):
                if c in by_classes and len(by_classes[c]) > 1:
                    shots = sorted(by_classes[c])
                    panel.plot(shots, [by_classes[c][n] for n in shots], linestyle=style, color="0.5", linewidth=1,
                               label=f"paper: {paper_name}")
            panel.set(title=f"C = {c}, sequences {sampling.replace('_', ' ')}", xlabel="conditioning images n")
            if column == 0:
                panel.set_ylabel("NLL (nats)")
    handles = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    figure.legend(handles.values(), handles.keys(), fontsize=7, loc="center right")
    figure.tight_layout(rect=(0, 0, 0.78, 1))
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


def machine_description() -> str:
    """"<architecture>, <n> cores, <CPU model>": where a result was measured."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}"
