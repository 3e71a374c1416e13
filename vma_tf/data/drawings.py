"""A user's drawings as a model's input, by the preprocessing the training drawings had.

A drawing may be an image file (PNG, JPEG, ...), a PIL image or a NumPy array, of any size:
grey or colour, dark ink on a light background or light on dark, or strokes on a transparent
background (alpha: transparent is background). It becomes an ink mask at Omniglot's 105x105
(padded to a square, resized, thresholded at half intensity), and is then brought to the
model's size the way its training drawings were (`downscale`):
- "max_pool": the very function that turned Omniglot's drawings into the training images here
  (`omniglot.preprocess`: 4x4 max-pooling to 26x26 or 28x28; other sizes are resized to 4x and
  max-pooled the same way). Strokes come out 2-3 pixels wide.
- "area": each pixel inked where at least half its area is, as the GMN authors' thin-stroked
  arrays look (`--dataset=omniglot_gmn`; their code does not say how they made them). Of 480 of
  their training drawings, the area-downscaled original differs from their array in 5.4% of
  the pixels (max-pooling: 6.9%) and is 7.6% ink (theirs 8.4%, max-pooling 12.4%). A VMA
  trained on their arrays scores area-downscaled test drawings 11.8 +- 1.2 nats better than
  max-pooled ones.
`downscale_of(dataset)` names the one a dataset's images had.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from vma_tf.data import omniglot
from vma_tf.errors import UserInputError

# A drawing whose mask is inked over more than this share of its pixels is not a drawing on a
# background (Omniglot's training images average 13%; a photo or an inverted scan reaches 50%).
MAX_INK_SHARE = 0.5
DOWNSCALES = ("max_pool", "area")
_AREA_DOWNSCALED = ("omniglot_gmn",)  # the datasets whose images look area-downscaled

Drawing = str | os.PathLike | Image.Image | np.ndarray


def downscale_of(dataset: str) -> str:
    """The downscale (DOWNSCALES) that brought `dataset`'s drawings to the model's size."""
    return "area" if dataset in _AREA_DOWNSCALED else "max_pool"


def preprocess(drawing: Drawing, size: int, name: str | None = None, downscale: str = "max_pool") -> np.ndarray:
    """The model input of one drawing: float32 [size, size, 1] in {0, 1}, ink = 1, brought to
    `size` by `downscale` (see the module docstring).

    Raises UserInputError naming the drawing (`name`, else its path, else "the array") when it
    cannot be read, is not an image-shaped array, has no ink, or is mostly ink."""
    if downscale not in DOWNSCALES:
        raise UserInputError(f"downscale must be one of {DOWNSCALES}, got {downscale!r}")
    name = name or (os.fspath(drawing) if isinstance(drawing, (str, os.PathLike)) else "the array")
    ink = _ink(_as_array(drawing, name), name)
    mask = _square_mask(ink)
    if not mask.any():
        raise UserInputError(f"{name} has no ink: nothing is drawn on its background")
    if mask.mean() > MAX_INK_SHARE:
        raise UserInputError(
            f"{name} is {mask.mean():.0%} ink: expected strokes on a plain background (at most {MAX_INK_SHARE:.0%})"
        )
    if downscale == "area":
        area = Image.fromarray(mask.astype(np.float32), "F").resize((size, size), Image.BOX)
        pooled = np.asarray(area) > 0.5
    elif size in omniglot.IMAGE_SIZES:
        pooled = omniglot.preprocess(mask[np.newaxis], size)[0]
    else:
        resized = np.asarray(Image.fromarray(np.uint8(mask) * 255).resize((4 * size, 4 * size), Image.BILINEAR)) > 127
        pooled = resized.reshape(size, 4, size, 4).max(axis=(1, 3))
    return pooled.astype(np.float32)[..., np.newaxis]


def _as_array(drawing: Drawing, name: str) -> np.ndarray:
    """float32 [H, W, C] in [0, 1], C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)."""
    if isinstance(drawing, (str, os.PathLike)):
        try:
            with Image.open(drawing) as image:
                drawing = _image_array(image)
        except Image.DecompressionBombError:
            raise UserInputError(
                f"{name} is too large to be a drawing (over {Image.MAX_IMAGE_PIXELS:,} pixels)"
            ) from None
        except (UnidentifiedImageError, OSError) as e:
            raise UserInputError(f"{name} is not a readable image ({e})") from None
    elif isinstance(drawing, Image.Image):
        drawing = _image_array(drawing)
    array = np.asarray(drawing)
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or min(array.shape[:2]) < 1:
        raise UserInputError(f"{name} has shape {array.shape}: expected [H, W] or [H, W, 1, 2, 3 or 4]")
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise UserInputError(f"{name} holds integers outside 0..255")
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise UserInputError(f"{name} has dtype {array.dtype}: expected bool, integers 0..255 or floats in [0, 1]")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
        raise UserInputError(f"{name} holds floats outside [0, 1] (or NaN)")
    return array.astype(np.float32)


def _image_array(image: Image.Image) -> np.ndarray:
    """A PIL image as uint8 [H, W, C], keeping its alpha channel if it has one."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    return np.asarray(image.convert("LA" if has_alpha else "L"))


def _ink(array: np.ndarray, name: str) -> np.ndarray:
    """float32 [H, W] in [0, 1], 1 where the pen was. With a (non-trivial) alpha channel the ink is
    its opacity; otherwise the grey level, inverted when the background (the median of the
    border) is light."""
    channels = array.shape[-1]
    if channels in (2, 4) and array[..., -1].min() < 1.0:
        return array[..., -1]
    colour = array[..., : 3 if channels >= 3 else 1]
    grey = colour @ np.float32([0.299, 0.587, 0.114]) if colour.shape[-1] == 3 else colour[..., 0]
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return 1.0 - grey if np.median(border) > 0.5 else grey


def _square_mask(ink: np.ndarray) -> np.ndarray:
    """bool [105, 105]: ink [H, W] padded with background to a centred square, resized to
    Omniglot's raw size, and thresholded at half intensity (Omniglot's PNGs: grey < 128 is ink)."""
    height, width = ink.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros([side, side], np.float32)
    square[top : top + height, left : left + width] = ink
    raw = omniglot.RAW_SIZE
    resized = np.asarray(Image.fromarray(np.uint8(np.round(square * 255))).resize((raw, raw), Image.BILINEAR))
    return resized > 127
