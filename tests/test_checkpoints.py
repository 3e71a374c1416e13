"""A run's checkpoint restores every weight into a model rebuilt from its config.json alone."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from vma_tf import checkpoints
from vma_tf.config import DataConfig, EpisodeConfig, ModelConfig, RunConfig, TrainConfig
from vma_tf.errors import UserInputError
from vma_tf.models import build_model


def test_restore_model_recovers_every_variable(tmp_path):
    config = RunConfig(
        data=DataConfig(), episodes=EpisodeConfig(),
        model=ModelConfig(latent_dim=4, embed_dim=8, conv_channels=4, hidden_units=8),
        train=TrainConfig(logdir=str(tmp_path)),
    )
    trained = build_model(config.model, config.data.image_size)
    optimizer = keras.optimizers.Adam()
    optimizer.build(trained.trainable_variables)
    step = tf.Variable(17, dtype=tf.int64)
    # Saved the way training saves: the model's variables are also reachable through the optimizer.
    tf.train.Checkpoint(model=trained, optimizer=optimizer, step=step).save(
        os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), "ckpt")
    )
    checkpoints.write_run_config(config)

    restored_config, restored, restored_step = checkpoints.restore_model(str(tmp_path))
    assert restored_config == config and restored_step == 17
    fresh = build_model(config.model, config.data.image_size)
    assert len(restored.variables) == len(trained.variables) > 40
    for saved, loaded in zip(trained.variables, restored.variables):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.path)
    assert any(not np.array_equal(n.numpy(), s.numpy()) for n, s in zip(fresh.variables, trained.variables))


def test_restore_model_explains_a_missing_run(tmp_path):
    with pytest.raises(UserInputError, match="config.json is missing"):
        checkpoints.restore_model(str(tmp_path))
