"""Logdirs written by the main of 2026-11-30, before the config named the task (`RunConfig.task`, then
`ModelConfig.memory`) and told its memory sizes and batch sizes apart, still load, resume where they
stopped, evaluate, and refuse a changed setting.

Each run in tests/data/runs_2026_11_30/ was trained for 2 steps by that main with the command of
COMMANDS; `<run>.uninterrupted.jsonl` holds the rows of the same command run for 4 steps without a
stop. (sequence_gmn keeps its config.json only: its checkpoint is 2 MB.)
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

import vma_tf
from vma_tf import checkpoints
from vma_tf.config import RunConfig
from vma_tf.errors import UserInputError

LEGACY_RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "runs_2026_11_30")
SMALL = dict(checkpoint_every=2, max_checkpoints=1, log_every=1, image_summary_every=1000, export=False,
             latent_dim=4, embed_dim=8, hidden_units=8, conv_channels=4)
# train.py's flags of each run, as config_from_flagfile's keywords, in the names of the day
# (--memory and --batch_size, now aliases of --task and --images_per_batch).
COMMANDS = {
    "few_shot_vma": ("smoke.flags", {}),
    "learned_vma": ("mnist_learned.flags", dict(memory_size=16, mlp_units=[8], memory_dim=8, tie_embeddings=False,
                                                batch_size=8)),
    "recall_soft_attention": ("mnist_learned.flags", dict(model="soft_attention", model_arch="conv", num_samples=1,
                                                          memory="recall", memory_size=16, batch_size=8)),
    "sequence_gmn": ("smoke_gmn.flags", dict(sequences_per_batch=2)),
}
WITH_CHECKPOINTS = ("few_shot_vma", "learned_vma", "recall_soft_attention")


def _config(name: str, logdir: str, data_dir: str, cache_dir: str | None, **changes) -> RunConfig:
    flagfile, flags = COMMANDS[name]
    folders = dict(data_dir=data_dir, **({"cache_dir": cache_dir} if cache_dir else {}))
    settings = {**SMALL, **flags, **folders, "logdir": logdir, "steps": 2, **changes}
    return vma_tf.config_from_flagfile(flagfile, **settings)


def _copy(name: str, tmp_path) -> str:
    logdir = str(tmp_path / name)
    shutil.copytree(os.path.join(LEGACY_RUNS, name), logdir)
    return logdir


def _rows(path: str) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_sec"} for line in f]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_old_config_json_reads_as_the_same_command_now_gives(name, data_dir, cache_dir, tmp_path):
    """The alias map moves every old field where the same flags put it today, so a resume compares equal."""
    stored = checkpoints.read_run_config(os.path.join(LEGACY_RUNS, name))
    given = _config(name, stored.train.logdir, stored.data.data_dir, stored.data.cache_dir)
    assert stored == given


def test_the_old_fields_land_in_their_new_places():
    read = {name: checkpoints.read_run_config(os.path.join(LEGACY_RUNS, name)) for name in COMMANDS}
    assert {name: config.task for name, config in read.items()} == {
        "few_shot_vma": "few_shot", "learned_vma": "learned", "recall_soft_attention": "recall",
        "sequence_gmn": "sequence"}
    learned, recall = read["learned_vma"], read["recall_soft_attention"]
    learned_fields = (learned.model.learned_memory_size, learned.model.memory_dim, learned.episodes.images_per_batch)
    assert learned_fields == (16, 8, 8)
    assert (recall.model.learned_memory_size, recall.episodes.recall_memory_size) == (0, 16)
    assert recall.episodes.images_per_batch == 8 and read["few_shot_vma"].episodes.recall_memory_size == 256
    assert read["sequence_gmn"].data.image_size == 26


@pytest.mark.parametrize("name", WITH_CHECKPOINTS)
def test_an_old_run_resumes_exactly_where_it_stopped(name, data_dir, cache_dir, mnist_dir, tmp_path):
    """Resumed by today's code from its step-2 checkpoint, the run writes the rows of steps 3 and 4
    that the old code wrote without a stop, bit for bit."""
    logdir = _copy(name, tmp_path)
    vma_tf.train(_config(name, logdir, data_dir, cache_dir, steps=4))
    resumed = _rows(os.path.join(logdir, checkpoints.METRICS_FILE))
    assert [row["step"] for row in resumed] == [1, 2, 3, 4]
    assert resumed == _rows(os.path.join(LEGACY_RUNS, f"{name}.uninterrupted.jsonl"))


def test_an_old_run_refuses_a_changed_memory_size_by_its_flag(data_dir, cache_dir, tmp_path):
    logdir = _copy("learned_vma", tmp_path)
    before = sorted(os.listdir(os.path.join(logdir, "checkpoints")))
    with pytest.raises(UserInputError, match=re.escape(
            f"--memory_size=32 but the checkpoint in {logdir} was trained with --memory_size=16")):
        vma_tf.train(_config("learned_vma", logdir, data_dir, cache_dir, steps=4, memory_size=32))
    assert sorted(os.listdir(os.path.join(logdir, "checkpoints"))) == before


def test_an_old_checkpoints_model_description_still_guards_the_image_size(data_dir, cache_dir, tmp_path):
    """The checkpoint holds the model fields of its day (memory, memory_size, image_size): a config
    that gives another image size is named before anything is restored."""
    logdir = _copy("few_shot_vma", tmp_path)
    config = _config("few_shot_vma", logdir, data_dir, cache_dir, image_size=28)
    prefix = os.path.join(logdir, "checkpoints", "ckpt-2")
    with pytest.raises(UserInputError, match="gives image_size=28 but .*ckpt-2 was trained with image_size=26"):
        checkpoints.require_trained_model(prefix, config, "the flags")
    checkpoints.require_trained_model(prefix, _config("few_shot_vma", logdir, data_dir, cache_dir), "the flags")


def test_an_old_learned_memory_run_evaluates(mnist_dir, cache_dir, tmp_path):
    logdir = _copy("learned_vma", tmp_path)
    config, model, step = checkpoints.restore_model(logdir)
    assert step == 2 and config.task == "learned" and model.learned_memory.shape == (16, 8)
    result = vma_tf.evaluate(logdir, "nll", data_dir=mnist_dir, num_importance_samples=4, num_episodes=1)
    assert result["memory_source"] == "learned" and result["memory"] == "the learned memory (16 entries)"
    assert np.isfinite(result["nll_nats"]) and result["nll_nats"] > 0
    stored = tf.train.load_checkpoint(os.path.join(logdir, "checkpoints", "ckpt-2"))
    np.testing.assert_array_equal(model.learned_memory.numpy(),
                                  stored.get_tensor("model/learned_memory/.ATTRIBUTES/VARIABLE_VALUE"))
