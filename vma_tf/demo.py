"""The drawing demo (`python demo.py`): a Gradio app in which a person draws one to five examples of
a new character, or uploads them, and sees what each exported memory model draws from them.

What a model shows depends on what its export can do, not on its name:
- a model with an `address_posterior` signature (VMA) draws samples with every drawing in memory,
  and beside each sample shows q(a | sample, drawings) as one bar over each drawing, the bar of
  the entry the sample was drawn from in orange (`address_panel`);
- any other model that reads a memory (GMN, soft attention) draws samples given the first drawing,
  then the first two, and so on, one row per context, as Figure 2 of the GMN paper
  (`context_panel`).
A model without a memory input has nothing to read the drawings with, and is refused.

The panels are NumPy pictures, so `panel` is the whole answer and the app only wires it to widgets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from vma_tf.data.drawings import Drawing, preprocess
from vma_tf.errors import UserInputError
from vma_tf.serving import ExportedModel

MAX_DRAWINGS = 5
ZOOM = 3  # each model pixel becomes ZOOM x ZOOM screen pixels
GAP = 2  # model pixels between cells

_PAPER = np.array([1.0, 1.0, 1.0])
_BACKGROUND = np.array([0.85, 0.85, 0.85])
_BAR = np.array([0.27, 0.51, 0.71])
_DRAWN_FROM = np.array([0.95, 0.5, 0.1])
_WARM_UP_DRAWING = np.pad(np.eye(40, dtype=bool), 30)  # a diagonal stroke


def check_model(name: str, model: ExportedModel) -> None:
    """UserInputError unless the model reads a memory of drawings (the demo has nothing else to show)."""
    if not model.reads_memory:
        raise UserInputError(f"{name} takes no memory (a VAE, or a learned memory): the demo needs a model that "
                             "reads the drawings")


def drawings_from(sketches: Sequence[dict | np.ndarray | None], uploads: Sequence[str] | None) -> list[Drawing]:
    """The drawings given: each sketch with a stroke on it (a Gradio editor value, whose "composite" is
    the RGBA canvas [H, W, 4], or an array), then each uploaded file. UserInputError for none or more
    than MAX_DRAWINGS."""
    drawings: list[Drawing] = []
    for sketch in sketches:
        canvas = sketch.get("composite") if isinstance(sketch, dict) else sketch
        if canvas is not None and _has_strokes(np.asarray(canvas)):
            drawings.append(np.asarray(canvas))
    drawings += [os.fspath(path) for path in uploads or []]
    if not drawings:
        raise UserInputError("draw an example of a character (or upload one) first")
    if len(drawings) > MAX_DRAWINGS:
        raise UserInputError(f"{len(drawings)} drawings given: the demo reads at most {MAX_DRAWINGS}")
    return drawings


def _has_strokes(canvas: np.ndarray) -> bool:
    """An untouched sketchpad is one flat colour (transparent or white)."""
    return canvas.size > 0 and bool(np.any(canvas != canvas.reshape(-1, canvas.shape[-1])[0]))


def memory_of(drawings: Sequence[Drawing], model: ExportedModel) -> np.ndarray:
    """The drawings as the model's memory: float32 [n, S, S, 1], brought to its size as its
    training drawings were; each drawing named in any refusal."""
    return np.stack([preprocess(drawing, model.image_size, name=_name(drawing, index),
                                downscale=model.drawing_downscale) for index, drawing in enumerate(drawings)])


def _name(drawing: Drawing, index: int) -> str:
    return os.path.basename(drawing) if isinstance(drawing, (str, os.PathLike)) else f"drawing {index + 1}"


def panel(model: ExportedModel, drawings: Sequence[Drawing], num_samples: int, seed: int) -> np.ndarray:
    """What `model` draws from `drawings`: uint8 RGB [H, W, 3] (see the module docstring)."""
    memory = memory_of(drawings, model)
    if "address_posterior" in model.signatures:
        return address_panel(model, memory, num_samples, seed)
    return context_panel(model, memory, num_samples, seed)


def address_panel(model: ExportedModel, memory: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    """Row 0: a blank cell, then the n memory drawings. Row 1 + i: sample i, then over each drawing j a
    bar of height q(a = j | sample i, memory). Cells of S x S, GAP apart: uint8 [H, W, 3] with
    H = (1 + num_samples) (S + GAP) ZOOM and W = (1 + n) (S + GAP) ZOOM."""
    drawn = model.sample(memory, num_samples=num_samples, seed=seed)
    posterior = model.address_posterior(drawn["images"], memory)  # [num_samples, n]
    size, entries = model.image_size, len(memory)
    canvas = _canvas(1 + num_samples, 1 + entries, size)
    for entry, image in enumerate(memory):
        _put_image(canvas, 0, 1 + entry, image)
    for row, (image, probs, address) in enumerate(zip(drawn["images"], posterior, drawn["addresses"])):
        _put_image(canvas, 1 + row, 0, image)
        for entry, prob in enumerate(probs):
            _put_bar(canvas, 1 + row, 1 + entry, size, prob, _DRAWN_FROM if entry == address else _BAR)
    return _zoomed(canvas)


def context_panel(model: ExportedModel, memory: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    """Row k - 1, k = 1..n: the first k drawings (blank cells up to n), a blank cell, then num_samples
    samples given those k, all with the same seed. uint8 [H, W, 3] with H = n (S + GAP) ZOOM and
    W = (n + 1 + num_samples) (S + GAP) ZOOM."""
    size, entries = model.image_size, len(memory)
    canvas = _canvas(entries, entries + 1 + num_samples, size)
    for shown in range(1, entries + 1):
        row = shown - 1
        for column, image in enumerate(memory[:shown]):
            _put_image(canvas, row, column, image)
        samples = model.sample(memory[:shown], num_samples=num_samples, seed=seed)["images"]
        for column, image in enumerate(samples):
            _put_image(canvas, row, entries + 1 + column, image)
    return _zoomed(canvas)


def _canvas(rows: int, columns: int, size: int) -> np.ndarray:
    return np.broadcast_to(_BACKGROUND, (rows * (size + GAP), columns * (size + GAP), 3)).copy()


def _cell(canvas: np.ndarray, row: int, column: int, size: int) -> np.ndarray:
    """The view of one cell [S, S, 3]."""
    top, left = row * (size + GAP) + GAP // 2, column * (size + GAP) + GAP // 2
    return canvas[top : top + size, left : left + size]


def _put_image(canvas: np.ndarray, row: int, column: int, image: np.ndarray) -> None:
    """Dark ink on white: image [S, S, 1] holds ink probabilities."""
    _cell(canvas, row, column, image.shape[0])[:] = 1.0 - image


def _put_bar(canvas: np.ndarray, row: int, column: int, size: int, height: float, colour: np.ndarray) -> None:
    cell = _cell(canvas, row, column, size)
    cell[:] = _PAPER
    filled = int(round(float(height) * size))
    if filled:
        cell[size - filled :, size // 4 : size - size // 4] = colour


def _zoomed(canvas: np.ndarray) -> np.ndarray:
    return np.uint8(np.round(np.repeat(np.repeat(canvas, ZOOM, axis=0), ZOOM, axis=1) * 255))


def build_app(models: dict[str, ExportedModel], num_samples: int):
    """The Gradio Blocks of the demo, for `models` {name: export} (each checked by check_model).
    Its one endpoint, api_name "draw", takes the MAX_DRAWINGS sketches, a list of uploaded files and
    a seed, and returns one panel per model in the order given."""
    import gradio as gr

    for name, model in models.items():
        check_model(name, model)
        # A signature's first call builds its graph (about 1.5 s here): do it before anyone presses.
        panel(model, [_WARM_UP_DRAWING], num_samples, seed=0)

    def draw(*inputs):
        *sketches, uploads, seed = inputs
        try:
            drawings = drawings_from(sketches, uploads)
            return [panel(model, drawings, num_samples, int(seed or 0)) for model in models.values()]
        except UserInputError as e:
            raise gr.Error(str(e)) from None

    with gr.Blocks(title="vma_tf: new characters from a few drawings") as app:
        gr.Markdown(
            "## New characters from a few drawings\n"
            f"Draw one to {MAX_DRAWINGS} examples of one new character, one per pad (pick a pad's brush, the "
            "pen on its left, then draw; empty pads are ignored), or upload images of them, and press "
            "**Draw samples**. Addressed models (VMA) show "
            f"{num_samples} samples with every drawing in memory; the bars beside each sample are q(a | sample) "
            "over your drawings, orange for the drawing it was generated from. Other memory models (GMN) "
            "show samples given the first drawing, the first two, and so on."
        )
        with gr.Row():
            sketches = [
                gr.Sketchpad(
                    label=f"drawing {index + 1}", type="numpy", canvas_size=(210, 210), fixed_canvas=True,
                    brush=gr.Brush(default_size=6, colors=["#000000"], color_mode="fixed"), layers=False,
                    transforms=(), elem_id=f"sketch-{index}", min_width=120,
                )
                for index in range(MAX_DRAWINGS)
            ]
        with gr.Row():
            uploads = gr.File(label="or upload drawings", file_count="multiple", file_types=["image"], scale=3)
            seed = gr.Number(label="seed", value=0, precision=0, minimum=0, scale=1)
            button = gr.Button("Draw samples", variant="primary", elem_id="draw", scale=1)
        with gr.Row():
            outputs = [
                gr.Image(label=name, type="numpy", format="png", interactive=False, elem_id=f"panel-{index}")
                for index, name in enumerate(models)
            ]
        button.click(draw, [*sketches, uploads, seed], outputs, api_name="draw")
    return app
