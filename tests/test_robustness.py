"""A run survives non-finite steps, SIGTERM and SIGKILL, and refuses an incompatible logdir."""

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, checkpoint_digest
from PIL import Image
from test_training import TINY, model_weights, read_metrics, run_train, train_main_in_process

from vma_tf import checkpoints, export, training
from vma_tf.errors import StorageError, UserInputError


def _last_error_line(result):
    return result.stderr.strip().splitlines()[-1]


def test_nonfinite_steps_are_skipped_and_counted_until_too_many_stop_the_run(data_dir, cache_dir, tmp_path,
                                                                            monkeypatch):
    """Two poisoned steps are skipped and counted; three in a row (--max_nonfinite_steps) stop the run
    with its last checkpoint intact. The poison is in the data: the training dataset is wrapped so
    that the targets of steps 3, 4, 7, 8 and 9 are NaN."""
    from vma_tf import tasks

    poisoned_steps = tf.constant([3, 4, 7, 8, 9], tf.int64)
    clean_data = tasks.FewShotTask.training_data

    def poisoned_data(task):
        dataset_from = clean_data(task)

        def poisoned_from(start):  # the dataset's batches are those of steps start + 1, start + 2, ...
            return dataset_from(start).enumerate(start + 1).map(lambda step, batch: batch._replace(
                targets=tf.where(tf.reduce_any(step == poisoned_steps), float("nan"), batch.targets)))

        return poisoned_from

    monkeypatch.setattr(tasks.FewShotTask, "training_data", poisoned_data)
    error = train_main_in_process([f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={tmp_path}",
                                   *TINY, "--steps=10", "--checkpoint_every=1", "--max_nonfinite_steps=3",
                                   "--clip_global_norm=5"])
    assert error.startswith("train.py: error: step 9: the loss or its gradient was not finite for 3 steps in a row"), \
        error
    rows = read_metrics(str(tmp_path))
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert [row["skipped_nonfinite"] for row in rows] == [0, 0, 1, 1, 0, 0, 1, 1]
    assert all(np.isfinite(row["loss_nats"]) for row in rows)
    weights, step = model_weights(str(tmp_path))
    assert step == 8 and all(np.all(np.isfinite(w)) for w in weights.values())


def test_an_incompatible_logdir_is_refused_and_left_alone(data_dir, cache_dir, tmp_path):
    common = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={tmp_path}", *TINY]
    run_train(*common)
    with open(tmp_path / "config.json") as f:
        before = f.read()
    # Any setting of the experiment, not only the model's: the data, the episodes, the optimiser,
    # the seed (a changed --learning_rate used to be recorded and ignored by the restored Adam).
    for flag, stored in [("--latent_dim=5", "4"), ("--seed=1", "0"), ("--learning_rate=0.01", "0.0003"),
                         ("--split=lake", "45_5"), ("--num_samples=3", "4"), ("--memory_per_class=3", "2"),
                         ("--learning_rate_boundaries=2", ""), ("--weight_decay=0.1", "0.0"),
                         ("--mixed_precision=mixed_float16", "float32")]:  # was a RestoreV2 traceback
        extra = ["--learning_rate_values=1e-4"] if "boundaries" in flag else []
        result = run_train(*common, flag, *extra, "--steps=6", check=False)
        assert result.returncode == 1
        name, value = flag.split("=")
        assert _last_error_line(result) == (
            f"train.py: error: {flag} but the checkpoint in {tmp_path} was trained with {name}={stored}; "
            "use another --logdir or the same setting"
        )
        with open(tmp_path / "config.json") as f:
            assert f.read() == before
        assert model_weights(str(tmp_path))[1] == 3


def _start(args):
    """train.py in the background; its stderr goes to a file (a pipe nobody reads would fill up and
    stall the run), read by _stderr."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed with the process object)
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=log, text=True)
    process.log = log
    return process


def _stderr(process) -> str:
    process.log.seek(0)
    return process.log.read()


def _wait_for_rows(logdir, count, process, timeout=300):
    deadline = time.time() + timeout
    path = os.path.join(logdir, "metrics.jsonl")
    while time.time() < deadline and process.poll() is None:
        if os.path.isfile(path):
            with open(path) as f:
                if sum(1 for _ in f) >= count:
                    return
        time.sleep(0.05)
    raise AssertionError(f"no {count} metrics rows in {logdir}")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_the_current_step(data_dir, cache_dir, tmp_path):
    """SIGTERM stops the run at the step in flight (Ctrl-C's SIGINT reaches the same handler: the
    next test); a second run on the same logdir is refused while it runs."""
    signal_number = signal.SIGTERM
    args = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={tmp_path}", *TINY,
            "--steps=100000", "--checkpoint_every=100000"]
    process = _start(args)
    _wait_for_rows(str(tmp_path), 5, process)
    second = run_train(*args, check=False)
    assert second.returncode == 1 and _last_error_line(second) == (
        f"train.py: error: {tmp_path} is in use by process {process.pid}"), second.stderr[-2000:]
    sent = time.perf_counter()
    process.send_signal(signal_number)
    # pread: the child shares the file's offset, which a seek would move under its writes.
    while (b"stopped by signal" not in os.pread(process.log.fileno(), 1 << 20, 0)
           and process.poll() is None and time.perf_counter() - sent < 60):
        time.sleep(0.05)
    # The step in flight and a checkpoint: prompt, against the hours the run had left. (Alone this
    # takes a few seconds; with the suite's two workers beside other runs it measured 15.6 and 19 s.
    # Tearing TensorFlow down afterwards takes seconds more, so that is not timed.)
    assert time.perf_counter() - sent < 30
    process.wait(timeout=120)
    stderr = _stderr(process)
    assert process.returncode == 128 + signal_number, stderr[-2000:]
    _, step = model_weights(str(tmp_path))
    assert step >= 5 and f"stopped by signal {int(signal_number)} at step {step}" in stderr


def test_ctrl_c_and_sigterm_only_mark_the_loop_to_stop():
    before = signal.getsignal(signal.SIGINT)
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with training.loop._StopSignal() as stop:
            os.kill(os.getpid(), signal_number)  # no KeyboardInterrupt, no exit
            time.sleep(0.01)
            assert stop.received == signal_number
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_at_most_a_checkpoint_interval(data_dir, cache_dir, tmp_path):
    """Two SIGKILLs at random moments (during steps, checkpoint writes or the export), then a
    rerun: the same step count, metrics and weights as a run that was never interrupted."""
    steps, every = 20, 5
    common = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", *TINY, f"--steps={steps}",
              f"--checkpoint_every={every}", "--export=true"]
    killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
    rng = random.Random(0)
    losses = []
    for _ in range(2):
        # Kill only after progress beyond the previous kill, not while the rerun starts up.
        written = len(read_metrics(killed)) if os.path.isfile(os.path.join(killed, "metrics.jsonl")) else 0
        process = _start([*common, f"--logdir={killed}"])
        _wait_for_rows(killed, min(steps - 1, written + rng.randint(1, every)), process)
        time.sleep(rng.random() * 0.5)
        process.kill()
        process.wait()
        rows = read_metrics(killed)
        # What a rerun resumes from: the newest checkpoint that reads back whole (none when the kill
        # came before the first one was written, as it can on a loaded machine).
        directory = os.path.join(killed, "checkpoints")
        newest = checkpoints.newest_whole_checkpoint(directory, set_aside=False) if os.path.isdir(directory) else None
        restored = int(tf.train.load_checkpoint(newest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) if newest else 0
        losses.append(rows[-1]["step"] - restored)
    assert max(losses) <= every
    run_train(*common, f"--logdir={killed}")
    run_train(*common, f"--logdir={straight}")

    killed_rows, straight_rows = read_metrics(killed), read_metrics(straight)
    assert [row["step"] for row in killed_rows] == list(range(1, steps + 1))
    assert [r["loss_nats"] for r in killed_rows] == [r["loss_nats"] for r in straight_rows]
    killed_weights, killed_step = model_weights(killed)
    straight_weights, straight_step = model_weights(straight)
    assert killed_step == straight_step == steps
    for name, value in straight_weights.items():
        np.testing.assert_array_equal(killed_weights[name], value, err_msg=name)  # bitwise on one machine
    assert os.path.isfile(os.path.join(killed, "saved_model", "saved_model.pb"))
    with open(os.path.join(killed, "config.json")) as f:
        assert json.load(f)["train"]["steps"] == steps


def _write_png(path, size=105, ink=True):
    pixels = np.full((size, size), 255, np.uint8)
    if ink:
        pixels[10:20, 10:20] = 0
    Image.fromarray(pixels).save(path)


def _extracted_omniglot(root):
    """A minimal valid layout: 2 characters of 2 drawings in each archive folder."""
    for archive, alphabet, first_id in (("images_background", "Alpha", 1), ("images_evaluation", "Tengwar", 3)):
        for offset in range(2):
            folder = root / "omniglot" / archive / alphabet / f"character{offset + 1:02d}"
            folder.mkdir(parents=True)
            for drawer in (1, 2):
                _write_png(folder / f"{first_id + offset:04d}_{drawer:02d}.png")
    return root / "omniglot" / "images_background" / "Alpha"


@pytest.mark.parametrize("damage, message", [
    ("not_an_image", r"character01/0001_01.png is not a readable PNG image"),
    ("wrong_size", r"character01/0001_01.png is 50x50, expected 105x105"),
    ("empty_class", r"character folder Alpha/character03 holds no PNG images"),
])
def test_bad_data_is_named_and_nothing_is_cached(damage, message, tmp_path):
    alphabet = _extracted_omniglot(tmp_path / "data")
    if damage == "not_an_image":
        (alphabet / "character01" / "0001_01.png").write_text("not a picture")
    elif damage == "wrong_size":
        _write_png(alphabet / "character01" / "0001_01.png", size=50)
    else:
        (alphabet / "character03").mkdir()
    cache = tmp_path / "cache"
    result = run_train(f"--data_dir={tmp_path / 'data'}", f"--cache_dir={cache}", f"--logdir={tmp_path / 'run'}",
                       *TINY, "--classes_per_batch=1", "--targets_per_class=1", "--memory_per_class=1", check=False)
    assert result.returncode == 1
    last = _last_error_line(result)
    assert last.startswith("train.py: error: ") and re.search(message, last), last
    assert not cache.exists() or not os.listdir(cache)  # no cache, whole or partial
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_logdir_from_before_the_model_registry_resumes_evaluates_and_exports(
    three_checkpoints, data_dir, cache_dir, tmp_path
):
    """A config.json written before `--model` existed has no model name: it is VMA's, and the run
    resumes, restores for evaluation and exports."""
    tmp_path = tmp_path / "run"
    shutil.copytree(three_checkpoints, tmp_path)
    common = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={tmp_path}", *TINY]
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    del config["model"]["name"]
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    run_train(*common, "--steps=5")
    assert model_weights(str(tmp_path))[1] == 5
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    run, model, step = checkpoints.restore_model(str(tmp_path))
    assert run.model.name == "vma" and step == 5
    assert model.DIAGNOSTICS == ("kl_a", "kl_z", "entropy_a", "address_information")
    assert os.path.isfile(os.path.join(export.export_run(str(tmp_path)), "saved_model.pb"))


@pytest.fixture(scope="module")
def three_checkpoints(data_dir, cache_dir, tmp_path_factory) -> str:
    """A TINY run with checkpoints at steps 1, 2 and 3."""
    logdir = str(tmp_path_factory.mktemp("three") / "run")
    run_train(f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={logdir}", *TINY,
              "--checkpoint_every=1")
    return logdir


def _damage(folder, how: str) -> None:
    """Damages checkpoint 3 of `folder` (or its index file) as a crash, a full disk or a bad disk would."""
    data, index = os.path.join(folder, "ckpt-3.data-00000-of-00001"), os.path.join(folder, "ckpt-3.index")
    if how == "index_file_lost":
        os.remove(os.path.join(folder, "checkpoint"))
    elif how in ("data_cut", "index_cut"):
        path = data if how == "data_cut" else index
        with open(path, "rb") as f:
            kept = f.read()[:500]
        with open(path, "wb") as f:
            f.write(kept)
    else:
        with open(data, "r+b") as f:
            f.seek(os.path.getsize(data) // 2)
            chunk = f.read(64)
            f.seek(-len(chunk), os.SEEK_CUR)
            f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.mark.parametrize("how", ["index_file_lost", "data_cut", "index_cut", "data_flipped"])
def test_evaluation_reads_the_newest_whole_checkpoint_and_changes_nothing(how, three_checkpoints, tmp_path):
    logdir = str(tmp_path / "run")
    shutil.copytree(three_checkpoints, logdir)
    _damage(os.path.join(logdir, "checkpoints"), how)
    before = checkpoint_digest(logdir)
    _, _, step = checkpoints.restore_model(logdir)
    assert step == (3 if how == "index_file_lost" else 2)
    assert checkpoint_digest(logdir) == before


def test_a_damaged_run_resumes_from_its_newest_whole_checkpoint(three_checkpoints, data_dir, cache_dir, tmp_path):
    """Index file lost, checkpoint 3 cut short and the last metrics row torn: the rerun continues from
    step 2, sets checkpoint 3's files aside, and writes the rows an uninterrupted run writes."""
    logdir = str(tmp_path / "run")
    shutil.copytree(three_checkpoints, logdir)
    folder = os.path.join(logdir, "checkpoints")
    _damage(folder, "index_file_lost")
    _damage(folder, "data_cut")
    with open(os.path.join(logdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 4, "loss_na')
    # What killed runs leave, and links planted at the names temporaries had before.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in ("config.json.x8d2kq.tmp", "metrics.jsonl.0a9bc_.tmp"):
        os.symlink(victim, os.path.join(logdir, name))
    os.makedirs(os.path.join(folder, "ckpt-9_temp"))
    result = run_train(f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={logdir}", *TINY,
                       "--checkpoint_every=1", "--steps=5")
    assert re.search(r"checkpoint .*ckpt-3 is damaged \(IndexError: Read less bytes than requested\); "
                     r"set aside as ckpt-3\.\*\.damaged", result.stderr), result.stderr[-2000:]
    assert "training from step 2 to 5" in result.stderr
    assert {"ckpt-3.data-00000-of-00001.damaged", "ckpt-3.index.damaged"} <= set(os.listdir(folder))
    assert [row["step"] for row in read_metrics(logdir)] == [1, 2, 3, 4, 5]
    assert model_weights(logdir)[1] == 5
    assert victim.read_text() == "keep me"
    leftovers = [name for name in os.listdir(logdir) + os.listdir(folder) if name.endswith((".tmp", "_temp"))]
    assert leftovers == []


def test_a_run_whose_checkpoints_are_all_damaged_is_refused_untouched(three_checkpoints, data_dir, cache_dir,
                                                                      tmp_path):
    logdir = str(tmp_path / "run")
    shutil.copytree(three_checkpoints, logdir)
    folder = os.path.join(logdir, "checkpoints")
    for name in os.listdir(folder):
        if name.endswith(".index"):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"")
    before = checkpoint_digest(logdir)
    result = run_train(f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={logdir}", *TINY,
                       "--steps=5", check=False)
    assert result.returncode == 1 and re.fullmatch(
        rf"train\.py: error: no checkpoint in {re.escape(folder)} reads back whole \(newest: .*ckpt-3: .*\); "
        "nothing was changed", _last_error_line(result)), result.stderr[-2000:]
    assert checkpoint_digest(logdir) == before


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(data=5), r'not a vma_tf run configuration \("data" is the number 5, not an object\)'),
    (lambda c: c["model"].update(latent_dim="16"), r'"model\.latent_dim" is the string "16", expected int'),
    (lambda c: c["data"].update(image_size=28), r"gives image_size=28 but .*ckpt-3 was trained with image_size=26"),
    (lambda c: c["model"].update(latent_dim=5), r"gives latent_dim=5 but .*ckpt-3 was trained with latent_dim=4"),
], ids=["section_not_an_object", "string_for_int", "image_size", "latent_dim"])
def test_a_config_json_that_does_not_describe_the_checkpoint_is_named(edit, message, three_checkpoints, tmp_path):
    logdir = str(tmp_path / "run")
    shutil.copytree(three_checkpoints, logdir)
    with open(os.path.join(logdir, "config.json")) as f:
        config = json.load(f)
    edit(config)
    with open(os.path.join(logdir, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(UserInputError, match=message):
        checkpoints.restore_model(logdir)


def test_a_full_disk_during_a_checkpoint_removes_the_partial_files_and_names_the_cause(
    data_dir, cache_dir, tmp_path, monkeypatch
):
    save = tf.train.CheckpointManager.save

    def full_disk_at_step_4(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number == 4:  # as TensorFlow leaves a sharded save that ran out of space
            os.makedirs(os.path.join(manager.directory, "ckpt-4_temp"))
            with open(os.path.join(manager.directory, "ckpt-4_temp", "part-00000"), "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(manager, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk_at_step_4)
    error = train_main_in_process([f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={tmp_path}",
                                   *TINY, "--checkpoint_every=2", "--steps=4"])
    folder = os.path.join(tmp_path, "checkpoints")
    assert error == (f"train.py: error: could not write checkpoint 4 in {folder} (No space left on device); "
                     f"removed its partial files, the run resumes from {folder}/ckpt-2")
    assert sorted(os.listdir(folder)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]


def test_a_full_disk_during_an_export_removes_the_partial_export(smoke_run, monkeypatch):
    def full_disk(module, directory, signatures):
        with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    before = sorted(os.listdir(smoke_run))
    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    with pytest.raises(StorageError) as failed:
        export.export_run(smoke_run)
    assert str(failed.value) == (f"could not write the export {os.path.join(smoke_run, 'saved_model')} "
                                 "(No space left on device); removed the partial files")
    assert sorted(os.listdir(smoke_run)) == before  # the previous export stays, nothing is left beside it


def test_a_folder_holding_files_that_are_not_a_runs_is_refused_untouched(data_dir, cache_dir, tmp_path):
    """train.py removes only temporaries it names itself: a folder with anything else (here a build
    folder named like TensorFlow's temporaries, and a file named like ours) is refused in one line."""
    logdir = tmp_path / "d"
    (logdir / "build_temp").mkdir(parents=True)
    (logdir / "build_temp" / "f").write_text("x")
    (logdir / "notes.tmp").write_text("mine")
    result = run_train(f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={logdir}", *TINY,
                       "--steps=1", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"train.py: error: {logdir} holds files that are not a vma_tf run: build_temp, notes.tmp; "
        "use an empty or new folder"), result.stderr[-2000:]
    assert (logdir / "build_temp" / "f").read_text() == "x" and (logdir / "notes.tmp").read_text() == "mine"
    assert sorted(os.listdir(logdir)) == ["build_temp", "notes.tmp"]


def test_a_resumed_run_removes_its_own_temporaries_and_nothing_else(data_dir, cache_dir, tmp_path):
    logdir = tmp_path / "run"
    common = [f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={logdir}", *TINY]
    run_train(*common, "--steps=1")
    checkpoints = logdir / "checkpoints"
    (logdir / "metrics.jsonl.k3j4x_.tmp").write_text("torn")
    (logdir / "saved_model.a1b2c3.tmp").mkdir()
    (checkpoints / "ckpt-9_temp").mkdir()
    (checkpoints / "notes_temp").mkdir()  # not TensorFlow's: kept
    result = run_train(*common, "--steps=2")
    assert "training from step 1 to 2" in result.stderr
    assert sorted(p.name for p in logdir.iterdir() if p.name.endswith(".tmp")) == []
    assert (checkpoints / "notes_temp").is_dir() and not (checkpoints / "ckpt-9_temp").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_take_the_users_umask(umask, tmp_path):
    """tempfile makes 0600 files and 0700 folders; a run's files and its export are made the usual way."""
    from vma_tf import files

    previous = os.umask(umask)
    try:
        files.write_atomically(str(tmp_path / "config.json"), "{}")
        folder = files.temporary_folder_beside(str(tmp_path / "saved_model"))
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "config.json").st_mode & 0o777 == 0o666 & ~umask
    assert os.stat(folder).st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.slow
def test_a_checkpoint_rotated_out_while_eval_reads_it_is_replaced_by_the_newest(smoke_run, monkeypatch):
    """A training run deletes old checkpoints; restore_model picks the newest again (as many times as
    it takes, within reason) instead of ending in NotFoundError."""
    real_restore, calls = checkpoints.restore, []

    def rotated_once(checkpoint, prefix, described_by):
        calls.append(prefix)
        if len(calls) == 1:
            raise tf.errors.NotFoundError(None, None, f"{prefix}.index: no such file")
        real_restore(checkpoint, prefix, described_by)

    monkeypatch.setattr(checkpoints, "restore", rotated_once)
    _, _, step = checkpoints.restore_model(smoke_run)
    assert step == 150 and len(calls) == 2

    def always_rotated(checkpoint, prefix, described_by):
        raise tf.errors.NotFoundError(None, None, "gone")

    monkeypatch.setattr(checkpoints, "restore", always_rotated)
    with pytest.raises(UserInputError, match="were replaced faster than they could be read"):
        checkpoints.restore_model(smoke_run)


def _write(folder, files_and_texts: dict[str, str]) -> None:
    for name, text in files_and_texts.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)


def _contents(folder) -> dict[str, str]:
    """{name: text} of the files in folder (not its staging folders)."""
    return {name: open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def test_an_output_set_replaces_its_files_together_or_not_at_all(tmp_path):
    """Issue 30, item 6: a kill or an error while a set is written leaves the previous set whole (no
    0-byte PNG), and the next writer removes the killed one's staging folder."""
    from vma_tf import files

    _write(tmp_path, {"nll.json": "old", "nll.md": "old", "nll.png": "old", "notes.txt": "mine"})
    with pytest.raises(RuntimeError, match="figure failed"), files.output_set(str(tmp_path)) as staging:
        _write(staging, {"nll.json": "new", "nll.md": "new"})
        open(os.path.join(staging, "nll.png"), "w").close()  # the figure's file exists, empty
        raise RuntimeError("figure failed")
    assert _contents(tmp_path) == {"nll.json": "old", "nll.md": "old", "nll.png": "old", "notes.txt": "mine"}

    killed = tmp_path / f"{files.OUTPUT_SET_STAGING}.abc123{files.TEMPORARY_SUFFIX}"  # a killed writer's
    killed.mkdir()
    (killed / "nll.json").write_text("half")
    with files.output_set(str(tmp_path)) as staging:
        _write(staging, {"nll.json": "new", "nll.md": "new", "nll.png": "new"})
    assert _contents(tmp_path) == {"nll.json": "new", "nll.md": "new", "nll.png": "new", "notes.txt": "mine"}
    assert sorted(os.listdir(tmp_path)) == ["nll.json", "nll.md", "nll.png", "notes.txt"]


def test_two_output_sets_in_one_folder_never_interleave(tmp_path):
    """The second writer waits for the first one's whole set: the folder never holds one writer's
    JSON beside the other's figure."""
    import threading

    from vma_tf import files

    first_staged, release, seen = threading.Event(), threading.Event(), []

    def first():
        with files.output_set(str(tmp_path)) as staging:
            _write(staging, {"a.json": "first"})
            first_staged.set()
            release.wait(10)
            _write(staging, {"a.png": "first"})

    def second():
        first_staged.wait(10)
        with files.output_set(str(tmp_path)) as staging:
            seen.append(_contents(tmp_path))  # what the folder holds once the lock is ours
            _write(staging, {"a.json": "second", "a.png": "second"})

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert not seen  # the second writer is still waiting
    release.set()
    for thread in threads:
        thread.join(20)
    assert seen == [{"a.json": "first", "a.png": "first"}]
    assert _contents(tmp_path) == {"a.json": "second", "a.png": "second"}


def test_an_eval_whose_figure_fails_leaves_the_previous_outputs(smoke_run, data_dir, cache_dir, tmp_path,
                                                                 monkeypatch):
    from test_evaluation import SMALL_CONFIG

    from vma_tf.evaluation import reports, runner

    output = str(tmp_path / "classification.json")
    runner.run_evaluation(smoke_run, "classification", SMALL_CONFIG, data_dir, cache_dir, output)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert set(before) == {"classification.json", "classification.md", "classification.png"}

    def failing_figure(result, path):
        open(path, "w").close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(reports.FIGURES, "classification", failing_figure)
    with pytest.raises(StorageError, match=f"cannot write the outputs in {tmp_path} .No space left on device"):
        runner.run_evaluation(smoke_run, "classification", SMALL_CONFIG, data_dir, cache_dir, output)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda logdir: (logdir / "config.json").mkdir(), "config.json is not a file, as a run's config.json is"),
        (lambda logdir: (logdir / "metrics.jsonl").mkdir(), "metrics.jsonl is not a file"),
        (lambda logdir: (logdir / "checkpoints").write_text(""), "checkpoints is not a folder"),
        (lambda logdir: (logdir / "train.lock").symlink_to(logdir / "elsewhere"), "train.lock is a symbolic link"),
    ],
)
def test_a_run_entry_of_the_wrong_kind_is_refused_before_any_work(make, message, data_dir, cache_dir, tmp_path):
    """Issue 30: these ended in tracebacks, the checkpoints file only after the first steps' work."""
    logdir = tmp_path / "run"
    logdir.mkdir()
    make(logdir)
    before = sorted(os.listdir(logdir))
    error = train_main_in_process([f"--data_dir={data_dir}", f"--cache_dir={cache_dir}", f"--logdir={logdir}", *TINY])
    assert "\n" not in error and re.search(message, error), error
    assert sorted(os.listdir(logdir)) == before


def test_an_unwritable_cache_is_skipped_with_a_warning(tmp_path, caplog):
    """Issue 30: an unwritable --cache_dir ended in a traceback after the whole decode."""
    from vma_tf.data import cache

    blocked = tmp_path / "file"
    blocked.write_text("")
    path = cache.cache_path(str(blocked / "cache"), "x", "0123456789abcdef")
    with caplog.at_level("WARNING"):
        arrays = cache.load_or_build(path, lambda: {"images": np.ones([2, 4, 4], np.uint8)}, lambda arrays: None)
    assert arrays["images"].shape == (2, 4, 4)
    assert "going on without the cache" in caplog.text


def test_a_looping_logdir_is_named_as_such(tmp_path):
    from vma_tf import files

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(StorageError, match="a symbolic link to nothing, or to itself"):
        files.require_writable(str(tmp_path / "a"))


def test_a_killed_exports_staging_folder_is_removed_once_stale(tmp_path):
    """Issue 30: a killed `eval.py --mode=export` left `saved_model.*.tmp` until a later train.py;
    the next export removes it, but not one a running export may be writing."""
    from vma_tf import files

    stale, fresh = tmp_path / "saved_model.killed.tmp", tmp_path / "saved_model.running.tmp"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "saved_model.pb").write_text("")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    removed = files.remove_stale_temporaries(str(tmp_path), ("saved_model",), older_than_sec=3600)
    assert removed == [str(stale)] and not stale.exists() and fresh.exists()
