"""One evaluation end to end: restore the run, load its test split, run a mode, write the reports.

Outputs (default `LOGDIR/eval/<mode>.json`): the JSON result, a Markdown table beside it
(`.md`) and, for modes with figures, PNGs with the same stem; the headline numbers and figures
also go to TensorBoard, in LOGDIR/eval's events. The checkpoints are only read. A long mode
(modes.RESUMABLE_MODES) keeps its finished pieces in `<stem>.partial.json` until the outputs are
written, so the same command rerun after an interruption resumes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

from vma_tf import checkpoints, files, summaries, tasks
from vma_tf.config import SEQUENCE_SAMPLINGS, EvalConfig
from vma_tf.errors import UserInputError, require_positive
from vma_tf.evaluation import modes, reports
from vma_tf.evaluation.progress import KeptPieces

logger = logging.getLogger(__name__)


MAX_FIGURE_CELLS = 100  # rows or columns of a samples figure: more cannot be read at its 100 dpi


def validate(config: EvalConfig) -> None:
    """Raises UserInputError for settings that cannot work, before any model or data is loaded."""
    if not 0 <= config.seed < 2**31:
        raise UserInputError(f"--seed must lie in 0..2**31-1 (stateless seeds are int32), got {config.seed}")
    if config.recall_memory_size < 0:
        raise UserInputError(
            f"--recall_memory_size must be positive (or 0: the run's), got {config.recall_memory_size}"
        )
    require_positive({
        "--num_importance_samples": config.num_importance_samples,
        "--pairs_per_call": config.pairs_per_call,
        "--num_episodes": config.num_episodes,
        "--num_sequences": config.num_sequences,
        "--sweep_fixed_shots": config.sweep_fixed_shots,
        "--sweep_memories": config.sweep_memories,
        "--sweep_targets": config.sweep_targets,
        "--classification_episodes": config.classification_episodes,
        "--queries_per_class": config.queries_per_class,
        "--iw_samples": config.iw_samples,
        "--sample_rows": config.sample_rows,
        "--samples_per_row": config.samples_per_row,
    })
    if config.sample_rows > MAX_FIGURE_CELLS or config.samples_per_row > MAX_FIGURE_CELLS:
        raise UserInputError(f"--sample_rows and --samples_per_row must be at most {MAX_FIGURE_CELLS} (a figure's rows "
                             f"and columns), got {config.sample_rows} and {config.samples_per_row}")
    for name in ("classes", "sweep_classes", "sweep_shots"):
        values = getattr(config, name)
        if not values or min(values) < 1:
            raise UserInputError(f"--{name} must be a list of positive integers, got {list(values)}")
    if config.sequence_sampling not in ("", *SEQUENCE_SAMPLINGS):
        raise UserInputError(
            f"--sequence_sampling must be one of {SEQUENCE_SAMPLINGS} or empty, got {config.sequence_sampling!r}"
        )
    if not config.shots or min(config.shots) < 0:
        raise UserInputError(f"--shots must be a list of non-negative integers, got {list(config.shots)}")


def default_output(logdir: str, mode: str) -> str:
    return os.path.join(logdir, "eval", f"{mode}.json")


def run_evaluation(
    logdir: str,
    mode: str,
    config: EvalConfig,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    output_json: str | None = None,
) -> dict:
    """Evaluates the latest checkpoint in `logdir` in `mode`; returns the JSON result.

    data_dir and cache_dir replace the run's own when given (the run may have been trained
    elsewhere); the split and image size are always the run's.
    """
    if mode not in modes.MODES:
        raise UserInputError(f"--mode must be one of {sorted(modes.MODES)}, got {mode!r}")
    validate(config)
    checkpoints.read_run_config(logdir)  # a missing run is named before any folder is made
    output_json = output_json or default_output(logdir, mode)
    _refuse_run_state(logdir, output_json)
    files.require_writable(os.path.dirname(os.path.abspath(output_json)))
    logger.info("restoring the newest checkpoint of %s", logdir)
    run, model, step = checkpoints.restore_model(logdir)
    reason = modes.unserved_reason(mode, model, run)
    if reason:
        served = [name for name in modes.MODES if not modes.unserved_reason(name, model, run)]
        raise UserInputError(f"{reason} (its modes: {', '.join([*served, 'export'])})")
    data = run.data
    if data_dir is not None:
        data = dataclasses.replace(data, data_dir=data_dir)
    if cache_dir is not None:
        data = dataclasses.replace(data, cache_dir=cache_dir)
    logger.info("reading the test split of %s (step %d's %s)", data.dataset, step, run.model.name)
    test = tasks.load_test_split(data)

    folder, name = os.path.split(output_json)
    stem = os.path.splitext(name)[0]
    resumable = {}
    if mode in modes.RESUMABLE_MODES:
        # What the pieces are a function of: the restored checkpoint (the run and its step, as
        # restore_model reports it; no second look at the files, which a training run may rotate)
        # and every setting of the evaluation.
        identity = {"logdir": os.path.abspath(logdir), "checkpoint_step": step, "mode": mode,
                    "data": dataclasses.asdict(data), "eval_config": dataclasses.asdict(config)}
        resumable["kept"] = KeptPieces(os.path.join(folder, f"{stem}.partial.json"), identity)
    started = time.perf_counter()
    result = modes.MODES[mode](model, test, run, config, **resumable)
    images = result.pop("images", None)
    result["meta"] = {
        "mode": mode,
        "logdir": logdir,
        "checkpoint_step": step,
        "model": run.model.name,
        "dataset": data.dataset,
        "split": data.split,
        "image_size": data.image_size,
        "seed": config.seed,
        "runtime_sec": time.perf_counter() - started,
        "eval_config": dataclasses.asdict(config),
    }

    with files.output_set(os.path.abspath(folder) if folder else os.getcwd()) as staging:
        staged = []
        if mode in reports.FIGURES:
            staged.append(os.path.join(staging, f"{stem}.png"))
            reports.FIGURES[mode](result, staged[0])
        if images is not None:
            staged += reports.samples_figures(result, images, os.path.join(staging, stem))
        result["meta"]["figures"] = [os.path.join(folder, os.path.basename(path)) for path in staged]
        outputs = [output_json, os.path.join(folder, f"{stem}.md"), *result["meta"]["figures"]]
        with open(os.path.join(staging, name), "w") as f:
            f.write(json.dumps(result, indent=2))
        with open(os.path.join(staging, f"{stem}.md"), "w") as f:
            f.write(reports.MARKDOWN[mode](result))
    if resumable:
        resumable["kept"].discard()
    events = summaries.write_evaluation(logdir, mode, result)
    logger.info("wrote %s; TensorBoard: %s", ", ".join(outputs), events)
    return result


def _refuse_run_state(logdir: str, output_json: str) -> None:
    """UserInputError when an output (the JSON, or the .md and .png beside it) would replace one of
    the run's own files."""
    stem = os.path.splitext(output_json)[0]
    for path in (output_json, f"{stem}.md", f"{stem}.png"):
        if checkpoints.holds_run_state(logdir, path):
            raise UserInputError(f"--output_json={output_json} would write {path}, one of the run's own files; "
                                 f"write elsewhere (default: {default_output(logdir, '<mode>')})")


def training_curves(logdir: str, output_json: str | None = None) -> str:
    """Draws LOGDIR/metrics.jsonl (the loss, reconstruction and diagnostics against the step) to
    `<stem of output_json>.png`, default LOGDIR/eval/curves.png; returns its path. Needs no
    checkpoint and no data: it works while the run trains."""
    path = os.path.join(logdir, checkpoints.METRICS_FILE)
    if not os.path.isfile(path):
        raise UserInputError(f"no training metrics in {logdir}: {path} is missing")
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines):  # only the last row can be torn by a crash mid-write
                raise UserInputError(f"{path}: line {number} is not JSON") from None
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise UserInputError(f"{path}: line {number} is not a metrics row (an object with an integer \"step\")")
        rows.append(row)
    if not rows:
        raise UserInputError(f"{path} holds no rows yet")
    has_config = os.path.isfile(os.path.join(logdir, checkpoints.CONFIG_FILE))
    model = checkpoints.read_run_config(logdir).model.name if has_config else "unknown model"
    output_json = output_json or default_output(logdir, "curves")
    _refuse_run_state(logdir, output_json)
    folder, name = os.path.split(os.path.splitext(output_json)[0] + ".png")
    with files.output_set(os.path.abspath(folder) if folder else os.getcwd()) as staging:
        title = f"{logdir} ({model}), steps {rows[0]['step']}..{rows[-1]['step']}"
        reports.curves_figure(rows, os.path.join(staging, name), title)
    figure = os.path.join(folder, name)
    logger.info("wrote %s", figure)
    return figure
