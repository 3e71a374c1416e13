"""The TensorFlow Datasets path, offline: TFDS's download folder is seeded with the shared archives,
so TFDS prepares omniglot and binarized_mnist without a network; and a missing download whose host
does not answer ends in one line within seconds. Each case runs in a subprocess whose
TFDS_DATA_DIR is a fresh folder (TFDS reads it at import) and whose proxies point at a closed port,
so no case can reach the internet or wait on it."""

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO

# The shared archive of each file TFDS downloads, by the file name TFDS registers for it.
SHARED_FILES = {
    "omniglot": {name: os.path.join("omniglot", name) for name in (
        "images_background.zip", "images_evaluation.zip", "images_background_small1.zip",
        "images_background_small2.zip")},
    "binarized_mnist": {name: os.path.join("binarized_mnist", name) for name in (
        "binarized_mnist_train.amat", "binarized_mnist_valid.amat", "binarized_mnist_test.amat")},
}


def offline_environment(tfds_dir: str) -> dict:
    closed = "http://127.0.0.1:9"
    return {**os.environ, "TFDS_DATA_DIR": tfds_dir, "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
            "http_proxy": closed, "https_proxy": closed, "NO_PROXY": "", "no_proxy": ""}


def seed_downloads(tfds_dir: str, data_dir: str) -> None:
    """Copies the shared archives to where TFDS's download manager finds finished downloads: the file
    named after its URL and registered checksum, and an INFO file beside it. (The full Omniglot zips
    were re-packed, so TFDS would reject them as a manual download: their checksums differ.)"""
    os.environ["TFDS_DATA_DIR"] = tfds_dir
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import resource

    from vma_tf.data import tfds_source

    for name, files in SHARED_FILES.items():
        builder = tfds.builder(name, data_dir=tfds_dir)
        for url, info in builder.url_infos.items():
            path = tfds_source.download_path(builder, url, info.checksum)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile(os.path.join(data_dir, files[info.filename]), path)
            resource.write_info_file(url=url, path=resource.epath.Path(path), dataset_name=name,
                                     original_fname=info.filename, url_info=info)


COMPARE = textwrap.dedent("""
    import sys
    import numpy as np
    from vma_tf.config import DataConfig
    from vma_tf.data import mnist, omniglot

    data_dir, archives_cache, tfds_cache = sys.argv[1:]
    for split in ("lake", "45_5"):
        archives = omniglot.load_splits(DataConfig(data_dir=data_dir, cache_dir=archives_cache, split=split))
        tfds = omniglot.load_splits(DataConfig(data_dir=None, cache_dir=tfds_cache, split=split))
        for part in ("train", "test"):
            a, t = archives[part], tfds[part]
            assert np.array_equal(a.character_ids, t.character_ids) and a.alphabets == t.alphabets, (split, part)
            # The same images per class; TFDS keeps no drawer, so their order within a class differs.
            def by_content(images):
                return [sorted(image.tobytes() for image in drawings) for drawings in images]
            assert a.images.shape == t.images.shape, (split, part)
            assert by_content(a.images) == by_content(t.images), (split, part)
    archives = mnist.load_splits(DataConfig(dataset="mnist", data_dir=data_dir, cache_dir=archives_cache,
                                            image_size=28))
    tfds = mnist.load_splits(DataConfig(dataset="mnist", data_dir=None, cache_dir=tfds_cache, image_size=28))
    for part in ("train", "test"):  # TFDS keeps no index: the same images, in another order
        assert sorted(image.tobytes() for image in archives[part]) == sorted(image.tobytes() for image in tfds[part])
    print("same images")
""")


@pytest.mark.slow
def test_tfds_prepared_offline_gives_the_archives_images(data_dir, mnist_dir, cache_dir, tmp_path):
    tfds_dir = str(tmp_path / "tensorflow_datasets")
    seeder = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.join(REPO, 'tests')!r}); "
         f"import test_tfds; test_tfds.seed_downloads({tfds_dir!r}, {data_dir!r})"],
        cwd=REPO, capture_output=True, text=True, env=offline_environment(tfds_dir), timeout=300,
    )
    assert seeder.returncode == 0, seeder.stderr[-3000:]
    # The archives' arrays from the session's cache; TFDS's from a fresh one, so TFDS is read.
    result = subprocess.run([sys.executable, "-c", COMPARE, data_dir, cache_dir, str(tmp_path / "cache")], cwd=REPO,
                            capture_output=True, text=True, env=offline_environment(tfds_dir), timeout=900)
    assert result.returncode == 0 and result.stdout.strip() == "same images", result.stderr[-3000:]


def test_train_without_data_dir_offline_fails_in_seconds_with_one_line(tmp_path):
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--flagfile=smoke.flags", f"--logdir={tmp_path}/run",
         f"--cache_dir={tmp_path}/cache"],
        cwd=REPO, capture_output=True, text=True, env=offline_environment(str(tmp_path / "tfds")), timeout=300,
    )
    elapsed = time.perf_counter() - started
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last == (
        "train.py: error: could not download omniglot through TensorFlow Datasets (github.com does not answer: "
        "ProxyError); pass --data_dir=DIR with the archives, see BUILD.md"), result.stderr[-3000:]
    assert elapsed < 60  # a TensorFlow import and a refused connection; TFDS's own retries take minutes
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
