"""The TensorFlow Datasets path, offline: TFDS's download folder is seeded with the shared archives,
so TFDS prepares omniglot and binarized_mnist without a network; and a missing download whose host
does not answer ends in one line within seconds. Each case runs in a subprocess whose
TFDS_DATA_DIR is a fresh folder (TFDS reads it at import) and whose proxies point at a closed port,
so no case can reach the internet or wait on it."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

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


OFFLINE = textwrap.dedent("""
    import sys
    import time

    import numpy as np
    from vma_tf.config import DataConfig
    from vma_tf.data import mnist, omniglot
    from vma_tf.errors import UserInputError

    tests, tfds_dir, data_dir, archives_cache, tfds_cache = sys.argv[1:]
    # Nothing downloaded yet, and the host unreachable: one line, within seconds.
    started = time.perf_counter()
    try:
        omniglot.load_splits(DataConfig(data_dir=None, cache_dir=tfds_cache))
        raise AssertionError("TFDS without its downloads and without a network did not fail")
    except UserInputError as e:
        print(f"refused in {time.perf_counter() - started:.0f} s: {e}")
    sys.path.insert(0, tests)
    import test_tfds

    test_tfds.seed_downloads(tfds_dir, data_dir)
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
def test_tfds_offline_refuses_in_seconds_then_prepares_the_archives_images(data_dir, mnist_dir, cache_dir, tmp_path):
    """One process (one TensorFlow start): TFDS with nothing downloaded fails in one line; seeded
    with the archives, it prepares both datasets, whose arrays equal those read from --data_dir
    (from the session's cache; TFDS's from a fresh one, so that TFDS is read)."""
    tfds_dir = str(tmp_path / "tensorflow_datasets")
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE, os.path.join(REPO, "tests"), tfds_dir, data_dir, cache_dir,
         str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True, env=offline_environment(tfds_dir), timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line for line in result.stdout.splitlines() if line.startswith(("refused", "same images"))]
    assert re.fullmatch(
        r"refused in \d s: could not download omniglot through TensorFlow Datasets \(github\.com does not answer: "
        r"ProxyError\); pass --data_dir=DIR with the archives, see BUILD\.md", printed[0]), printed
    assert printed[1] == "same images"
