"""The Python API: config_from_flagfile reads flagfiles as train.py does."""


import pytest

import vma_tf


def test_a_flagfile_reads_as_train_py_reads_it_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # smoke_gmn.flags names omniglot_gmn.flags relative to its own folder
    config = vma_tf.config_from_flagfile("smoke_gmn.flags", steps=7, mlp_units=[64, 32], data_dir="data")
    assert (config.model.name, config.model.model_arch, config.model.gmn_matching) == ("gmn", "conv", "authors_code")
    data = config.data
    assert (data.dataset, data.image_size, data.data_dir) == ("omniglot", 26, str(tmp_path / "data"))
    assert config.train.steps == 7 and config.model.mlp_units == (64, 32)
    assert config.train.learning_rate_boundaries == (30250, 60500) and config.train.adam_beta_2 == 0.99
    assert vma_tf.config_from_flagfile("smoke.flags").model.name == "vma"


@pytest.mark.parametrize(
    "path, overrides, message",
    [
        ("missing.flags", {}, "no flagfile missing.flags"),
        ("smoke.flags", {"stepz": 3}, "unknown setting"),
        ("smoke.flags", {"steps": "many"}, "flag --steps=many"),
    ],
)
def test_bad_flagfiles_and_settings_are_named(path, overrides, message):
    with pytest.raises(vma_tf.UserInputError, match=message):
        vma_tf.config_from_flagfile(path, **overrides)


def test_an_unknown_model_name_is_named_with_the_pretrained_ones(tmp_path):
    with pytest.raises(vma_tf.UserInputError, match="no-such-model is neither an export folder nor a pretrained model"):
        vma_tf.load("no-such-model")
    with pytest.raises(vma_tf.UserInputError, match=f"no SavedModel in {tmp_path}"):
        vma_tf.load(tmp_path)
