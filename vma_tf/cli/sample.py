"""New characters from a few examples, with plain TensorFlow and an exported SavedModel:

    python sample.py --saved_model=LOGDIR/saved_model --memory='drawings/*.png' --output=grid.png

(or `vma-sample` once the package is installed). It reads the SavedModel only, through
TensorFlow, numpy and pillow: no model code of vma_tf. Each memory image, of any size, grey,
colour or with a transparent background, dark ink on light or light on dark, goes through
`vma_tf.data.drawings.preprocess`: the training preprocessing of Omniglot's 105x105 drawings. An
image without ink, or mostly ink, is refused, naming the file, before any sampling.

--num_samples draws from p(x|M) with every image in memory. For a model that reports each
sample's memory entry (VMA), the grid shows one memory image per row and, beside it, the
samples drawn from that entry (rows of different lengths: the entries are drawn from q(a));
for one that reads the memory as a whole (soft attention), the memory images fill the first
row and the samples the rows below. --samples_per_image=N instead makes each image alone the
memory, once per image: each row is an image and N samples given it (the one-shot figure).

A model without a memory input (a VAE, or VMA with a learned memory) takes no --memory: its
grid has one row per address that the samples used, or rows of samples.
"""

import glob
import os

import numpy as np
from absl import flags, logging
from PIL import Image

from vma_tf import files
from vma_tf.cli import commands
from vma_tf.cli.tensorflow_logs import VERBOSE_HELP, quiet_tensorflow
from vma_tf.data.drawings import preprocess
from vma_tf.errors import UserInputError
from vma_tf.serving import export_description, export_path

flags.DEFINE_string("saved_model", None, "Directory of a SavedModel written by train.py or eval.py --mode=export.")
flags.DEFINE_string("model", None, "A pretrained model by name (pretrained/<name>), instead of --saved_model.")
flags.DEFINE_list("memory", None, "Image files or glob patterns (PNG, JPEG, ...): the memory "
                                 "(none for a model with a learned memory).")
flags.DEFINE_integer("num_samples", 16, "Samples drawn from p(x|M), M every memory image.")
flags.DEFINE_integer("samples_per_image", 0, "If positive: this many samples given each memory image alone, "
                     "one row per image (instead of --num_samples).")
flags.DEFINE_integer("seed", 0, "Same seed, same samples.")
flags.DEFINE_string("output", "samples.png", "The grid, written as PNG.")
flags.DEFINE_integer("zoom", 3, "Each pixel of the grid becomes zoom x zoom pixels.")
flags.DEFINE_bool("verbose", False, VERBOSE_HELP)

FLAGS = flags.FLAGS
SAMPLES_PER_ROW = 8  # a grid of samples that no memory entry groups
MAX_CELL_SIDE = 30  # a grid cell's side before --zoom, at most: a 28 x 28 image and its gap


def memory_paths(patterns: list[str]) -> list[str]:
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise UserInputError(f"no file matches {pattern}")
        paths += matches
    return paths


def grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Images [S, S, 1] in rows; uint8 with dark ink and grey gaps."""
    size = rows[0][0].shape[0]
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (size + 2), columns * (size + 2)), 0.75, np.float32)
    for row, images in enumerate(rows):
        for column, image in enumerate(images):
            top, left = row * (size + 2) + 1, column * (size + 2) + 1
            canvas[top : top + size, left : left + size] = 1.0 - image[..., 0]
    return np.uint8(canvas * 255)


def rows_by_address(images: np.ndarray, addresses: np.ndarray) -> list[list[np.ndarray]]:
    """The samples grouped by their address, in the order the addresses first appear."""
    order = list(dict.fromkeys(addresses.tolist()))
    return [list(images[addresses == address]) for address in order]


def rows_of(images: np.ndarray, per_row: int) -> list[list[np.ndarray]]:
    """The images in rows of per_row."""
    return [list(images[start : start + per_row]) for start in range(0, len(images), per_row)]


def draw_grid() -> None:
    """Draws the samples the flags ask for and writes the grid to --output."""
    if FLAGS.num_samples < 1 or FLAGS.zoom < 1 or FLAGS.samples_per_image < 0:
        raise UserInputError("--num_samples and --zoom must be positive, --samples_per_image non-negative")
    if FLAGS.samples_per_image and FLAGS["num_samples"].present:
        raise UserInputError("pass --num_samples (from the whole memory) or --samples_per_image, not both")
    if (FLAGS.saved_model is None) == (FLAGS.model is None):
        raise UserInputError("pass --saved_model=FOLDER or --model=NAME (a pretrained model), one of them")
    path = FLAGS.saved_model if FLAGS.model is None else export_path(FLAGS.model)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise UserInputError(f"no SavedModel in {path}")
    if os.path.isdir(FLAGS.output):
        raise UserInputError(f"--output={FLAGS.output} is a folder: name the PNG to write")
    files.require_writable(os.path.dirname(os.path.abspath(FLAGS.output)))
    paths = memory_paths(FLAGS.memory) if FLAGS.memory else []
    per_image = len(paths) * (FLAGS.samples_per_image + 1)
    cells = per_image if FLAGS.samples_per_image else FLAGS.num_samples + len(paths)
    pixels = cells * (MAX_CELL_SIDE * FLAGS.zoom) ** 2
    if pixels > Image.MAX_IMAGE_PIXELS:
        raise UserInputError(f"the grid would hold up to {pixels:,} pixels, over pillow's {Image.MAX_IMAGE_PIXELS:,}: "
                             "fewer samples or a smaller --zoom")
    if not 0 <= FLAGS.seed < 2**31 - len(paths):
        raise UserInputError(f"--seed must lie in 0..2**31-1-{len(paths)} (an int32 seed per memory image), "
                             f"got {FLAGS.seed}")
    with quiet_tensorflow(FLAGS.verbose):
        import tensorflow as tf
    try:
        model = tf.saved_model.load(path)
    except (OSError, ValueError) as e:
        raise UserInputError(f"{path} is not a readable SavedModel ({str(e).splitlines()[0][:200]})") from None
    sample = model.signatures["sample"]
    size = model.signatures["log_likelihood"].structured_input_signature[1]["x"].shape[1]
    count, seed = tf.constant(FLAGS.num_samples), tf.constant(FLAGS.seed)
    if "memory" not in sample.structured_input_signature[1]:
        if FLAGS.memory or FLAGS.samples_per_image:
            raise UserInputError("this SavedModel takes no memory (it reads its own learned memory, or none); "
                     "drop --memory and --samples_per_image")
        drawn = sample(num_samples=count, seed=seed)
        if "addresses" in drawn:
            rows = rows_by_address(drawn["images"].numpy(), drawn["addresses"].numpy())
            described = f"{len(rows)} addresses of the learned memory, {FLAGS.num_samples} samples"
        else:
            rows = rows_of(drawn["images"].numpy(), SAMPLES_PER_ROW)
            described = f"no memory, {FLAGS.num_samples} samples"
    else:
        # An export says how few memory images it reads (GMN with a pseudo-input: none).
        min_memory_size, downscale = export_description(model, reads_memory=True)
        if not FLAGS.memory and (min_memory_size or FLAGS.samples_per_image):
            raise UserInputError("--memory is required: this SavedModel samples from a memory of images")
        memory = (np.stack([preprocess(path, size, downscale=downscale) for path in paths]) if paths
                  else np.zeros([0, size, size, 1]))
        memory = memory.astype(np.float32)
        if FLAGS.samples_per_image:
            per_image = tf.constant(FLAGS.samples_per_image)
            # Image i's samples use seed + i: one image's row does not depend on the others.
            rows = [
                [image, *sample(memory=tf.constant(image[None]), num_samples=per_image,
                                seed=tf.constant(FLAGS.seed + index))["images"].numpy()]
                for index, image in enumerate(memory)
            ]
            described = f"{len(memory)} memory images, each alone, {FLAGS.samples_per_image} samples each"
        else:
            drawn = sample(memory=tf.constant(memory), num_samples=count, seed=seed)
            images = drawn["images"].numpy()
            if "addresses" in drawn:
                addresses = drawn["addresses"].numpy()
                rows = [[entry, *images[addresses == row]] for row, entry in enumerate(memory)]
            else:
                rows = [list(memory)] if len(memory) else []
                rows += rows_of(images, max(len(memory), SAMPLES_PER_ROW))
            described = f"{len(memory)} memory images, {FLAGS.num_samples} samples"
    picture = grid(rows)
    picture = np.kron(picture, np.ones((FLAGS.zoom, FLAGS.zoom), np.uint8))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    Image.fromarray(picture).save(FLAGS.output, format="PNG")
    logging.info("wrote %s: %s", FLAGS.output, described)


def run() -> None:
    """The `vma-sample` command."""
    commands.run(commands.main_of(draw_grid), __name__, __doc__)


if __name__ == "__main__":
    run()
