"""eval.py end to end on a model trained by smoke.flags: every mode, determinism, read-only
checkpoints, bad input; and the test split's classes are unseen in training."""

import dataclasses
import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, checkpoint_digest
from markdown_it import MarkdownIt
from PIL import Image

import vma_tf
from vma_tf import checkpoints
from vma_tf.config import DataConfig, EpisodeConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from vma_tf.data import omniglot
from vma_tf.data.omniglot import CharacterSet
from vma_tf.errors import StorageError, UserInputError
from vma_tf.evaluation import few_shot, modes, reports, runner
from vma_tf.evaluation.progress import KeptPieces, progress_bar
from vma_tf.models import REGISTRY, AddressedMemory, MemoryReader

# Every mode shrunk to seconds; the defaults are the papers' protocols.
SMALL = [
    "--num_importance_samples=20", "--num_episodes=2", "--num_sequences=2", "--classes=1,4", "--shots=1,5,19",
    "--sweep_classes=1,4,144", "--sweep_shots=1,19", "--sweep_memories=1", "--sweep_targets=4",
    "--classification_episodes=4", "--iw_samples=4", "--sample_rows=3", "--samples_per_row=4",
]

# The same, for calls in this process (an eval.py run spends ~10 s starting TensorFlow).
SMALL_CONFIG = EvalConfig(
    num_importance_samples=20, num_episodes=2, num_sequences=2, classes=(1, 4), shots=(1, 5, 19),
    sweep_classes=(1, 4, 144), sweep_shots=(1, 19), sweep_tiled_sizes=(6000,), sweep_memories=1, sweep_targets=4,
    classification_episodes=4, iw_samples=4, sample_rows=3, samples_per_row=4, probe_episodes=2,
)


def run_eval(*args, check=True):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "eval.py"), *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _assert_png(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


def rendered_tables(markdown: str) -> list[list[list[str]]]:
    """Every table of `markdown` as a GitHub-style renderer sees it: rows of cell texts, header first.
    Asserts that each table keeps its header's column count and loses no number of its source."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    tables, row = [], None
    for token in tokens:
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            tables[-1].append(row)
            row = None
        elif token.type == "inline" and row is not None:  # a cell of the row being read
            row.append(token.content)
    delimiter_rows = [line for line in markdown.splitlines() if re.fullmatch(r"\|(---\|)+", line)]
    assert len(tables) == len(delimiter_rows), "a table does not render"
    source_numbers = re.findall(r"\d+\.\d+", "\n".join(
        line for line in markdown.splitlines() if line.startswith("|")))
    rendered_numbers = [n for table in tables for r in table for cell in r for n in re.findall(r"\d+\.\d+", cell)]
    assert rendered_numbers == source_numbers, "a cell's value is lost"
    for table in tables:
        assert all(len(r) == len(table[0]) for r in table)
    return tables


def test_markdown_tables_escape_bars_in_cells():
    result = {
        "meta": {"mode": "classification", "logdir": "runs/x|y", "checkpoint_step": 1, "split": "45_5",
                 "image_size": 26, "seed": 0, "runtime_sec": 1.0},
        "tasks": {"5way1shot": {"accuracy": 0.9, "ci95": 0.01, "accuracy_iw": 0.92, "ci95_iw": 0.02}},
        "episodes": 4, "queries_per_class": 1, "iw_samples": 4,
    }
    [table] = rendered_tables(reports.classification_markdown(result))
    assert table[0] == ["task", "p(c|x) from the entry posterior", "importance-weighted", "paper, q(a|x)"]
    assert table[1] == ["5way1shot", "0.900 ± 0.010", "0.920 ± 0.020", "0.91"]


def _trained(name, smoke_run, baseline_runs):
    return smoke_run if name == "vma" else baseline_runs[name]


def _evaluate(mode, name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path):
    """Runs `mode` on model `name`'s smoke run and checks what every mode writes; returns (the
    result, the report's tables, the model as evaluated, whose capabilities the checks ask for)."""
    logdir = _trained(name, smoke_run, baseline_runs)
    before = checkpoint_digest(logdir)
    output = str(tmp_path / f"{mode}.json")
    runner.run_evaluation(logdir, mode, SMALL_CONFIG, data_dir, cache_dir, output)
    assert not glob.glob(str(tmp_path / "*.partial.json"))  # the kept pieces go once the outputs are written
    with open(output) as f:
        result = json.load(f)
    with open(str(tmp_path / f"{mode}.md")) as f:
        report = f.read()
    assert report.startswith(f"# eval.py --mode={mode}")
    assert result["meta"]["split"] == "45_5" and result["meta"]["model"] == name
    assert result["meta"]["checkpoint_step"] == (150 if name == "vma" else 40)
    assert checkpoint_digest(logdir) == before  # evaluation only reads the checkpoints
    return result, rendered_tables(report), _evaluated_model(logdir)


@functools.cache
def _evaluated_model(logdir):
    """The model of the run in `logdir` as evaluation restores it (once per run)."""
    return checkpoints.restore_model(logdir)[1]


SMOKE_MODELS = pytest.mark.parametrize("name", sorted(REGISTRY))


@pytest.mark.slow
@SMOKE_MODELS
def test_the_nll_mode_bounds_every_scored_target(name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path):
    result, tables, model = _evaluate("nll", name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path)
    assert tables
    # Two test batches: of 32 targets, or of 4 sequences of 20 scored from x_2 on (smoke_gmn.flags).
    assert result["num_importance_samples"] == 20 and result["num_examples"] == (
        2 * 4 * 19 if REGISTRY[name].tasks == ("sequence",) else 2 * 32)
    # The same samples give log mean w >= mean log w for every target, hence on average.
    assert result["nll_nats"] <= result["elbo_nats"]
    assert set(result["diagnostics"]) == set(model.DIAGNOSTICS)
    assert all(diagnostic in result for diagnostic in result["diagnostics"])


@pytest.mark.slow
@SMOKE_MODELS
def test_the_conditional_mode_fills_both_papers_tables(name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path):
    result, tables, model = _evaluate("conditional", name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path)
    _assert_png(str(tmp_path / "conditional.png"))
    assert set(result["table"]) == {"1", "4"}
    assert all(set(row) == {"1", "5", "19"} for row in result["table"].values())
    assert all(np.isfinite(v) and v > 0 for row in result["table"].values() for v in row.values())
    # The VMA paper's way and the probes need a model that reads its context.
    assert ("per_class" in result) == model.reads_context and ("probes" in result) == model.reads_context
    if model.reads_context:
        assert all(np.isfinite(v) and v > 0 for row in result["per_class"]["table"].values() for v in row.values())
        assert set(result["probes"]["copy"]["shots"]) == {"1", "5"}
        mass = result["probes"]["same_class_mass"]["4"]  # C = 1 has no other class to tell apart
        assert 0 <= mass["mass"] <= 1 and 0 < mass["chance"] < 1 and mass["num_positions"] > 0
        assert len(tables) == 4  # both ways, the copy probe and the same-class mass


@pytest.mark.slow
@SMOKE_MODELS
def test_the_memory_sweep_grows_the_memory_past_the_test_split_for_a_compact_one(
    name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path
):
    result, tables, model = _evaluate("memory_sweep", name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path)
    assert tables
    sizes = [p["memory_size"] for p in result["by_classes"]] + [p["memory_size"] for p in result["by_shots"]]
    assert sizes == [4, 16, 576, 144, 144 * 19]  # |M| = 2736 at the last point
    first = result["by_classes"][0]["nll_nats"]
    assert result["by_classes"][1]["optimal_reference_nats"] == pytest.approx(first + np.log(4))
    if not model.reads_context:  # every point scores the same targets alike
        assert result["by_classes"][0]["nll_nats"] == pytest.approx(result["by_classes"][2]["nll_nats"])
    # Past the test split (2,736 images) only a compact memory goes: an addressed one.
    tiled = result["by_tiled_size"]
    assert [p["memory_size"] for p in tiled] == ([6000] if isinstance(model, AddressedMemory) else [])
    assert all(np.isfinite(p["nll_nats"]) and p["num_targets"] == 4 for p in tiled)
    _assert_png(str(tmp_path / "memory_sweep.png"))


@pytest.mark.slow
@SMOKE_MODELS
def test_classification_needs_a_memory_of_labelled_entries(name, smoke_run, baseline_runs, data_dir, cache_dir,
                                                            tmp_path):
    logdir = _trained(name, smoke_run, baseline_runs)
    model = _evaluated_model(logdir)
    if not (model.reads_context and isinstance(model, MemoryReader)):
        output = str(tmp_path / "classification.json")
        with pytest.raises(UserInputError) as refused:
            runner.run_evaluation(logdir, "classification", SMALL_CONFIG, data_dir, cache_dir, output)
        assert str(refused.value) == (
            f"--mode=classification needs a model with a memory of labelled entries; {name} has none "
            "(its modes: nll, conditional, memory_sweep, samples, export)"
        )
        assert not os.path.exists(output)
        return
    result, tables, _ = _evaluate("classification", name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path)
    assert tables
    _assert_png(str(tmp_path / "classification.png"))
    assert set(result["tasks"]) == {"5way1shot", "5way5shot", "20way1shot", "20way5shot"}
    for task in result["tasks"].values():
        # 4 episodes of `ways` queries: accuracies are whole counts of right answers.
        for key in ("accuracy", "accuracy_iw"):
            correct = task[key] * 4 * task["ways"]
            assert correct == pytest.approx(round(correct), abs=1e-6)


@pytest.mark.slow
@SMOKE_MODELS
def test_the_samples_mode_draws_what_the_model_can_be_given(name, smoke_run, baseline_runs, data_dir, cache_dir,
                                                             tmp_path):
    result, tables, model = _evaluate("samples", name, smoke_run, baseline_runs, data_dir, cache_dir, tmp_path)
    figures = {os.path.basename(path) for path in result["meta"]["figures"]}
    if model.reads_context:
        assert figures == {"samples_one_shot.png", "samples_addressing.png", "samples_sequence.png"} and tables
        assert len(result["top5_probabilities"]) == 3
        assert all(p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-3 for p in result["top5_probabilities"])
    else:  # unconditional samples have a figure only
        assert figures == {"samples_unconditional.png"} and not tables
    for figure in figures:
        _assert_png(str(tmp_path / figure))


def _events(folder):
    """{tag: [(step, value or None)]} of every event file directly in `folder`."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                found.setdefault(value.tag, []).append((event.step, number))
    return found


@pytest.mark.slow
def test_tensorboard_holds_the_config_the_learning_rate_and_every_evaluation(
    smoke_run, data_dir, cache_dir, tmp_path
):
    training = _events(smoke_run)
    assert "_hparams_/session_start_info" in training  # the hparams plugin's table row
    (step, text), = training["config"]
    assert step == 0 and b'"model": {' in text.item()
    assert [rate for _, rate in training["train/learning_rate"]][-1] == pytest.approx(3e-4)
    result = vma_tf.evaluate(smoke_run, "nll", data_dir=data_dir, output_json=str(tmp_path / "nll.json"),
                             **dataclasses.asdict(SMALL_CONFIG))
    evaluation = _events(os.path.join(smoke_run, "eval"))
    assert evaluation["eval/nll/nll_nats"][-1] == (150, pytest.approx(result["nll_nats"]))
    assert "eval/nll/nll_stderr" not in evaluation and "eval/nll/num_examples" not in evaluation
    runner.run_evaluation(smoke_run, "conditional", SMALL_CONFIG, data_dir, cache_dir, str(tmp_path / "c.json"))
    evaluation = _events(os.path.join(smoke_run, "eval"))
    assert {"eval/conditional/table/4/19", "eval/conditional/per_class/table/4/19",
            "eval/conditional/probes/copy/shots/1/gain_nats"} <= set(evaluation)
    assert evaluation["eval/conditional/c"][-1][0] == 150  # the figure, as an image


@pytest.mark.slow
def test_curves_draw_the_training_metrics(smoke_run, tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    shutil.copy(os.path.join(smoke_run, "config.json"), logdir)
    with open(os.path.join(smoke_run, "metrics.jsonl")) as f:
        rows = f.read()
    (logdir / "metrics.jsonl").write_text(rows + '{"step": 151, "loss_n')  # torn by a crash mid-write
    assert runner.training_curves(str(logdir)) == str(logdir / "eval" / "curves.png")
    _assert_png(str(logdir / "eval" / "curves.png"))
    (logdir / "metrics.jsonl").write_text('{"step": 1, "loss_n\n' + rows)
    with pytest.raises(UserInputError, match="metrics.jsonl: line 1 is not JSON"):
        runner.training_curves(str(logdir))
    (logdir / "metrics.jsonl").write_text(rows + '{"loss_nats": 1.0}\n' + rows)
    with pytest.raises(UserInputError, match=r"metrics.jsonl: line \d+ is not a metrics row"):
        runner.training_curves(str(logdir))
    with pytest.raises(UserInputError, match=f"no training metrics in {tmp_path}: .* is missing"):
        runner.training_curves(str(tmp_path))


@pytest.mark.slow
def test_same_seed_same_numbers(smoke_run, data_dir, cache_dir, tmp_path):
    def nll(seed, name):
        config = dataclasses.replace(SMALL_CONFIG, seed=seed)
        return runner.run_evaluation(smoke_run, "nll", config, data_dir, cache_dir, str(tmp_path / name))["nll_nats"]

    first, again, other = nll(3, "a.json"), nll(3, "b.json"), nll(4, "c.json")
    assert first == again and first != other


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_importance_samples=0"], "--num_importance_samples must be positive, got 0"),
        (["--mode=conditional", "--classes=1,200"], "--classes=200 needs 200 classes but the test split has 144"),
        (["--mode=classification", "--classification_tasks=5way"], "named like 5way1shot"),
        (["--mode=conditional", "--shots=20"], r"--shots must lie in 0\.\.19"),
        (["--seed=-1"], r"--seed must lie in 0\.\.2\*\*31-1"),
        (["--seed=4294967296"], r"--seed must lie in 0\.\.2\*\*31-1"),
        (["--mode=samples", "--samples_per_row=100000"], "--sample_rows and --samples_per_row must be at most 100"),
    ],
)
def test_bad_input_ends_with_one_line_error(flags, message, smoke_run, data_dir, cache_dir):
    result = run_eval(f"--logdir={smoke_run}", f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", *flags,
                      check=False)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and last.startswith("eval.py: error: ") and re.search(message, last), last


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "checkpoints/checkpoint.json"])
def test_an_output_that_would_replace_the_runs_own_files_is_refused(name, smoke_run, data_dir, cache_dir):
    """--output_json naming one of the run's files (or a file among its checkpoints) is refused in one
    line before any work, and nothing of the run changes."""
    def state():
        return {path: os.path.getmtime(path) for path in glob.glob(os.path.join(smoke_run, "**"), recursive=True)}

    before = state()
    result = run_eval(f"--logdir={smoke_run}", f"--data_dir={data_dir}", f"--cache_dir={cache_dir}",
                      f"--output_json={os.path.join(smoke_run, name)}", check=False)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and last.startswith("eval.py: error: --output_json=") and \
        "one of the run's own files" in last, last
    assert state() == before


def test_an_unwritable_output_is_named_before_any_work(smoke_run, data_dir, cache_dir):
    with pytest.raises(StorageError, match=r"cannot write in /proc/vma_eval \("):
        runner.run_evaluation(smoke_run, "nll", SMALL_CONFIG, data_dir, cache_dir, "/proc/vma_eval/nll.json")


def test_missing_run_is_named(tmp_path):
    result = run_eval(f"--logdir={tmp_path}", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"eval.py: error: no trained run in {tmp_path}: " \
        f"{tmp_path}/config.json is missing"


def test_classification_episodes_use_only_unseen_alphabets(data_dir, cache_dir):
    splits = omniglot.load_splits(DataConfig(data_dir=data_dir, cache_dir=cache_dir))
    train_alphabets = set(splits["train"].alphabets)
    test = splits["test"]
    assert not train_alphabets & set(test.alphabets)
    images = tf.constant(test.images)
    for index in range(20):
        episode, _, _ = few_shot.labelled_episode(images, 20, 5, 1, tf.constant([index, 0]))
        used = {test.alphabets[c] for c in np.concatenate([episode.memory_labels, episode.target_labels])}
        assert used <= set(omniglot.TEST_ALPHABETS_45_5)


class _RecordingEvaluator:
    """Stands in for BoundEvaluator: records each call's targets, context and visibility, and scores
    a target by how many visible entries equal it exactly, so the copy rows are told apart."""

    model = None

    def __init__(self):
        self.calls = []

    def __call__(self, x, memory, num_samples, seed, visible=None):
        x, memory, visible = x.numpy(), memory.numpy(), visible.numpy()
        self.calls.append((x, memory, visible))
        copies = np.array([
            sum(np.array_equal(x[b], memory[m]) for m in np.flatnonzero(visible[b])) for b in range(len(x))
        ], np.float64)
        return modes.BoundEstimate(nll=100.0 - copies, elbo=copies, recon=copies, diagnostics={})


def _characters(classes=6, per_class=20, size=4):
    """Every drawing distinct and labelled by its pixels: class c, drawing d has the value 20c + d."""
    images = np.arange(classes * per_class, dtype=np.uint8).reshape(classes, per_class, 1, 1)
    return CharacterSet(images=np.broadcast_to(images, (classes, per_class, size, size)).copy(),
                        character_ids=np.arange(classes, dtype=np.int32), alphabets=("a",) * classes)


def test_the_per_class_table_shows_each_target_n_other_drawings_of_every_class():
    """VMA paper's way: target (n, c) is a drawing of class c, and it reads n drawings of each of
    the C classes, never itself."""
    test, evaluator = _characters(), _RecordingEvaluator()
    scored = [1, 3, 19]
    nll = modes._per_class_draw(evaluator, test, EvalConfig(), scored, 4, index=0)
    (targets, context, visible), = evaluator.calls
    assert set(nll) == set(scored) and all(v == 100.0 for v in nll.values())  # the target is never visible
    values_of = lambda images: images[:, 0, 0, 0].astype(int)  # noqa: E731
    target_classes, context_classes = values_of(targets) // 20, values_of(context) // 20
    assert len(set(target_classes[:4])) == 4 and np.array_equal(target_classes, np.tile(target_classes[:4], 3))
    for row, (n, c) in enumerate((n, c) for n in scored for c in target_classes[:4]):
        assert target_classes[row] == c
        seen = context_classes[visible[row]]
        assert sorted(seen) == sorted(np.repeat(target_classes[:4], n))  # n of each of the C classes
        assert values_of(targets)[row] not in values_of(context)[visible[row]]


def test_the_copy_probe_puts_the_target_itself_in_the_copy_rows_only():
    test, evaluator = _characters(), _RecordingEvaluator()
    probe = modes._copy_probe(evaluator, test, EvalConfig(probe_episodes=3), bar=progress_bar(0, "test"))
    for n in modes.COPY_PROBE_SHOTS:
        cell = probe["shots"][str(n)]
        # The stand-in scores one nat per visible copy: exactly one in the copy rows, none in the fresh.
        assert (cell["copy_nats"], cell["fresh_nats"], cell["gain_nats"]) == (99.0, 100.0, 1.0)
    for targets, context, visible in evaluator.calls:
        assert np.all(targets == context[0])  # the target is the context's first drawing
        assert len(set(context[:, 0, 0, 0] // 20)) == 1  # one character
        assert visible.sum(axis=1).tolist() == [n for n in modes.COPY_PROBE_SHOTS for _ in range(2)]


def test_the_same_class_mass_of_a_uniform_posterior_is_chance():
    class Uniform(MemoryReader):
        def encode_context(self, context):
            return context

        def entry_posterior(self, x, encoded):
            return tf.fill([tf.shape(x)[0], tf.shape(encoded)[0]], 1.0 / tf.cast(tf.shape(encoded)[0], tf.float32))

    config = EvalConfig(classes=(1, 2, 4), probe_episodes=3)
    result = modes._same_class_mass(Uniform(), tf.constant(_characters().images), config,
                                    modes.SequenceLayout("distinct", classes_first=False))
    assert set(result) == {"2", "4"}
    for cell in result.values():
        assert cell["num_positions"] > 0
        assert cell["mass"] == pytest.approx(cell["chance"], abs=1e-6) and 0 < cell["chance"] < 1


@pytest.mark.parametrize("sampling", ["with_replacement", "distinct"])
def test_a_run_with_the_classes_first_is_scored_from_x_c_plus_1(sampling, monkeypatch):
    """The GMN authors' conditional layout: each draw of C classes opens with one drawing of each,
    so the n < C cells stay empty and a scored target always sees all C classes."""
    class Conditional:
        min_context_size, reads_context = 1, True

    evaluator = _RecordingEvaluator()
    monkeypatch.setattr(modes, "BoundEvaluator", lambda model, pairs_per_call: evaluator)
    run = RunConfig(DataConfig(), EpisodeConfig(sequence_classes_first=True), ModelConfig(name="gmn"),
                    TrainConfig(logdir="unused"))
    config = EvalConfig(num_sequences=3, classes=(1, 4), shots=(0, 1, 2, 4, 5, 19), per_class=False,
                        probe_episodes=0, sequence_sampling=sampling)
    result = modes.conditional(Conditional(), _characters(), run, config)
    scored = {c: [n for n, nll in cells.items() if nll is not None] for c, cells in result["table"].items()}
    assert scored == {"1": ["1", "2", "4", "5", "19"], "4": ["4", "5", "19"]}
    assert result["sequence_classes_first"] and result["sequence_sampling"] == sampling
    for _, context, visible in evaluator.calls[3:]:  # the draws of C = 4
        classes = context[:, 0, 0, 0].astype(int) // 20
        assert set(classes[:4]) == set(classes)
        if sampling == "distinct":
            assert len(set(classes[:4])) == 4
        assert visible.sum(axis=1).tolist() == [4, 5, 19]


def test_an_interrupted_conditional_evaluation_resumes_from_its_kept_pieces(tmp_path, monkeypatch):
    """Every C of each table is kept as it is done: a rerun computes only the rest and returns what an
    uninterrupted evaluation returns; pieces kept for another checkpoint or settings are not used."""
    class Reader:
        min_context_size, reads_context = 0, True

    def evaluate(evaluator, kept=None):
        monkeypatch.setattr(modes, "BoundEvaluator", lambda model, pairs_per_call: evaluator)
        return modes.conditional(Reader(), _characters(), run, config, kept)

    class StoppedError(Exception):
        pass

    def interrupted_at_call(count):
        evaluator = _RecordingEvaluator()

        def call(*args):
            if len(evaluator.calls) == count:
                raise StoppedError
            return evaluator(*args)
        return call

    run = RunConfig(DataConfig(), EpisodeConfig(), ModelConfig(name="gmn"), TrainConfig(logdir="unused"))
    config = EvalConfig(num_sequences=3, classes=(1, 2, 4), shots=(0, 1, 5), probe_episodes=2)
    uninterrupted = _RecordingEvaluator()
    reference = evaluate(uninterrupted)
    path = str(tmp_path / "conditional.partial.json")
    identity = {"checkpoint": "ckpt-7", "eval_config": dataclasses.asdict(config)}

    with pytest.raises(StoppedError):  # during C = 4 of the sequence table: one call per draw
        evaluate(interrupted_at_call(2 * config.num_sequences), KeptPieces(path, identity))
    with open(path) as f:
        assert set(json.load(f)["pieces"]) == {"sequence/1", "sequence/2"}
    resumed = _RecordingEvaluator()
    assert evaluate(resumed, KeptPieces(path, identity)) == reference
    assert len(resumed.calls) == len(uninterrupted.calls) - 2 * config.num_sequences

    elsewhere = _RecordingEvaluator()
    evaluate(elsewhere, KeptPieces(path, {**identity, "checkpoint": "ckpt-8"}))
    assert len(elsewhere.calls) == len(uninterrupted.calls)
    for damaged in ("{not json", "[1, 2]", '{"identity": null}'):
        with open(path, "w") as f:
            f.write(damaged)
        assert KeptPieces(path, identity).pieces == {}
