"""The drawing demo in a browser:

    python demo.py                       # every pretrained memory model, at http://127.0.0.1:7860
    python demo.py --models=vma-omniglot,runs/gmn/saved_model --port=8000

Draw one to five examples of a new character (or upload images of them) and press "Draw samples":
each model's samples appear side by side, with q(a|x) over the drawings for VMA and samples given
1, 2, ... of the drawings for GMN (vma_tf/demo.py). It runs on the CPU. Install its requirements
first: `pip install -r requirements-demo.txt`.
"""

import logging as logging_module
import os

from absl import flags, logging

from vma_tf.cli import commands
from vma_tf.cli.tensorflow_logs import VERBOSE_HELP, quiet_tensorflow
from vma_tf.errors import UserInputError

flags.DEFINE_list("models", None, "Pretrained model names or export folders, shown side by side "
                  "(default: every pretrained model that reads a memory).")
flags.DEFINE_integer("num_samples", 8, "Samples per model (per row of a GMN panel).")
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 7860, "Port to serve on.")
flags.DEFINE_bool("verbose", False, VERBOSE_HELP)

FLAGS = flags.FLAGS


def serve() -> None:
    """Serves the demo the flags describe, until interrupted."""
    if not 1 <= FLAGS.num_samples <= 64:
        raise UserInputError(f"--num_samples must be in 1..64, got {FLAGS.num_samples}")
    if not 0 < FLAGS.port < 65536:
        raise UserInputError(f"--port must be in 1..65535, got {FLAGS.port}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserInputError("the demo needs Gradio: pip install -r requirements-demo.txt") from None
    from vma_tf import demo, serving

    # Names are checked before TensorFlow's import, so a typo costs no start-up.
    paths = {name: serving.export_path(name) for name in FLAGS.models or serving.pretrained_names()}
    with quiet_tensorflow(FLAGS.verbose):
        import tensorflow  # noqa: F401
    models = {name: serving.ExportedModel(path) for name, path in paths.items()}
    if not FLAGS.models:
        models = {name: model for name, model in models.items() if model.reads_memory}
        if not models:
            raise UserInputError("no pretrained memory model in this clone: pass --models=EXPORT_FOLDER")
    # Gradio's HTTP client logs each request it makes to the app at INFO.
    logging_module.getLogger("httpx").setLevel(logging_module.WARNING)
    application = demo.build_app(models, FLAGS.num_samples)
    logging.info("serving %s on http://%s:%d", ", ".join(models), FLAGS.host, FLAGS.port)
    try:
        application.launch(server_name=FLAGS.host, server_port=FLAGS.port, quiet=True)
    except OSError as e:
        raise UserInputError(f"cannot serve on {FLAGS.host}:{FLAGS.port} ({e})") from None


def run() -> None:
    """The `vma-demo` command."""
    commands.run(commands.main_of(serve), __name__, __doc__)


if __name__ == "__main__":
    run()
