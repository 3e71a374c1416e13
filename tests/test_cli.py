"""The entry points' output: TensorFlow's log lines hidden, progress bars on terminals only, the
console scripts."""

import io
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from vma_tf.cli.tensorflow_logs import quiet_tensorflow
from vma_tf.evaluation.progress import progress_bar

TENSORFLOW_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795404888.525996   17125 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
    "E0000 00:00:1795404890.378139   17125 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
)


def test_quiet_import_drops_tensorflow_lines_and_keeps_the_rest(capfd, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with quiet_tensorflow(verbose=False):
        os.write(2, (TENSORFLOW_LINES + "a warning of the user's own\n").encode())
    assert capfd.readouterr().err == "a warning of the user's own\n"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_verbose_or_the_users_level_shows_tensorflow_lines(capfd, monkeypatch):
    for verbose, level in ((True, None), (False, "1")):
        if level is None:
            monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
        else:
            monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
        with quiet_tensorflow(verbose):
            os.write(2, TENSORFLOW_LINES.encode())
        assert capfd.readouterr().err == TENSORFLOW_LINES
        assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == level


def _without_log_level() -> dict:
    return {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}


def test_a_command_prints_its_own_lines_only(tmp_path):
    """eval.py imports TensorFlow before it finds no run: its stderr is the one error line (the
    same command with --verbose, or TF_CPP_MIN_LOG_LEVEL set, prints about seven TensorFlow lines
    first on this stack)."""
    command = [sys.executable, os.path.join(REPO, "eval.py"), f"--logdir={tmp_path}"]
    quiet = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=_without_log_level(), timeout=300)
    assert quiet.stderr.splitlines() == [f"eval.py: error: no trained run in {tmp_path}: {tmp_path}/config.json "
                                         "is missing"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(monkeypatch):
    for stream, shown in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar(3, "conditional: sequences") as bar:
            for _ in range(3):
                bar.update()
        written = stream.getvalue()
        assert ("conditional: sequences" in written and "/3 [" in written) == shown, written
        assert bool(written) == shown


def test_console_scripts_name_the_entry_points():
    """`pip install .` installs vma-train, vma-eval, vma-sample and vma-demo: each names a function that runs
    its command (here asked for its flags: absl prints them and exits 1)."""
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        section = f.read().split("[project.scripts]\n")[1].split("\n[")[0]  # tomllib is Python 3.11+
    scripts = dict(re.findall(r'^(\S+) = "(\S+)"$', section, re.MULTILINE))
    assert set(scripts) == {"vma-train", "vma-eval", "vma-sample", "vma-demo"}
    for name, target in scripts.items():
        module, function = target.split(":")
        program = f"import sys; from {module} import {function}; sys.argv = [{name!r}, '--helpfull']; {function}()"
        shown = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert f"USAGE: {name}" in shown.stdout and "--[no]verbose" in shown.stdout, (name, shown.stderr[-1000:])


def test_help_lists_each_commands_own_flags_and_exits_0():
    expected = {"train.py": ("--flagfile", "--learning_rate_boundaries", "--gmn_matching"),
                "eval.py": ("--mode", "--[no]per_class", "--probe_episodes"),
                "sample.py": ("--saved_model", "--samples_per_image"),
                "demo.py": ("--models", "--port")}
    for script, names in expected.items():
        result = subprocess.run([sys.executable, os.path.join(REPO, script), "--help"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert all(f"  {name}:" in result.stdout or name == "--flagfile" for name in names), script
        assert "(default:" in result.stdout and "--flagfile=FILE" in result.stdout


def _absl_values(argv: list[str]) -> dict:
    """Every train.py flag's value after absl parses argv (from the repository root)."""
    import copy

    from absl import flags

    import vma_tf.cli.train  # noqa: F401  (defines the flags)

    values = flags.FlagValues()
    for flag in flags.FLAGS.get_flags_for_module("vma_tf.cli.train"):
        values[flag.name] = copy.deepcopy(flag)
    values(argv)
    return {name: values[name].value for name in values}


def test_every_shipped_flagfile_expands_to_what_absl_reads(monkeypatch):
    """Issue 30, newcomer item 8: the entry points expand --flagfile themselves; from the folder of
    the shipped configurations the result is absl's own, for every one of them (nested ones included)."""
    from vma_tf.cli import flagfiles

    monkeypatch.chdir(flagfiles.SHIPPED_DIR)
    names = flagfiles.shipped_names()
    assert "omniglot_gmn_avg1.flags" in names and len(names) >= 10
    for name in names:
        argv = ["train.py", f"--flagfile={name}", "--steps=3"]
        assert _absl_values(flagfiles.expand(argv)) == _absl_values(argv), name


def test_a_shipped_flagfile_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from vma_tf.cli import flagfiles
    from vma_tf.errors import UserInputError

    monkeypatch.chdir(REPO)
    at_root = flagfiles.expand(["train.py", "--flagfile=omniglot_gmn_avg1.flags"])
    monkeypatch.chdir(tmp_path)
    assert flagfiles.expand(["train.py", "--flagfile", "omniglot_gmn_avg1.flags"]) == at_root
    assert flagfiles.expand(["train.py", "-flagfile=omniglot_gmn_avg1"]) == at_root
    # A user's flagfile elsewhere builds on a shipped one by name; its own nested files are read
    # relative to it, not to the working directory.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "base.flags").write_text("# mine\n\n--seed=4\n// also a comment\n")
    (tmp_path / "mine" / "run.flags").write_text("--flagfile=omniglot_gmn_avg1.flags\n--flagfile=base.flags\n")
    assert flagfiles.expand(["train.py", "--flagfile=mine/run.flags", "--steps=2"]) == [
        *at_root, "--seed=4", "--steps=2"]
    assert flagfiles.expand(["train.py", "--", "--flagfile=x"]) == ["train.py", "--", "--flagfile=x"]
    (tmp_path / "loop.flags").write_text("--flagfile=loop.flags\n")
    for argv, message in ((["train.py", "--flagfile=loop.flags"], "loop.flags includes itself"),
                          (["train.py", "--flagfile=nothing.flags"], "no flagfile nothing.flags .*omniglot.flags"),
                          (["train.py", "--flagfile"], "--flagfile needs a file name")):
        with pytest.raises(UserInputError, match=message):
            flagfiles.expand(argv)


def test_a_non_editable_install_finds_the_shipped_flagfiles(tmp_path):
    """Issue 30: `pip install .` (not -e) installed no flagfiles, so `vma-train --flagfile=omniglot.flags`
    failed. Installed from a copy of the sources (pip builds in the source folder), without
    dependencies; run from another folder, the installed package resolves nested shipped flagfiles."""
    import shutil

    from vma_tf.cli import flagfiles

    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(os.path.join(REPO, name), source)
    shutil.copytree(os.path.join(REPO, "vma_tf"), source / "vma_tf", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(tmp_path / "installed"), str(source)], check=True, capture_output=True, timeout=300)
    assert sorted(os.listdir(tmp_path / "installed" / "vma_tf" / "configs")) == flagfiles.shipped_names()
    shutil.rmtree(source)
    probe = ("from vma_tf.cli import flagfiles; "
             "print(flagfiles.__file__); print(flagfiles.expand(['train.py', '--flagfile=omniglot_gmn_avg1.flags']))")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(tmp_path / "installed")}, check=True)
    where, expanded = shown.stdout.splitlines()
    assert where.startswith(str(tmp_path / "installed"))
    assert expanded == str(flagfiles.expand(["train.py", "--flagfile=omniglot_gmn_avg1.flags"]))


def test_train_py_outside_the_checkout_reads_a_shipped_flagfile(tmp_path):
    """`--help` runs after the expansion: a shipped name resolves from another folder, a missing one is
    one line."""
    shown = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--flagfile=omniglot_gmn_avg1.flags",
                            "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    missing = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--flagfile=nothing.flags"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: no flagfile nothing.flags"), missing.stderr
