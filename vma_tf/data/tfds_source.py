"""Datasets through TensorFlow Datasets, when no --data_dir is given.

TFDS prepares a dataset once in its data directory ($TFDS_DATA_DIR, default ~/tensorflow_datasets)
from the files in its `downloads/` folder, downloading those that are missing. Without a network,
its downloader retries for minutes; here a missing download whose host does not answer within
seconds ends in one line instead.
"""

from __future__ import annotations

import os
import urllib.parse

from vma_tf.errors import UserInputError

_PROBE_TIMEOUT_SEC = 5.0


def download_path(builder, url: str, checksum: str) -> str:
    """Where TFDS's download manager looks for `url`'s file, already downloaded, in `builder`'s data
    directory (with `<path>.INFO` beside it)."""
    from tensorflow_datasets.core.download import resource

    return os.path.join(os.fspath(builder.data_dir_root), "downloads", resource.get_dl_fname(url, checksum))


def prepared_builder(name: str):
    """TFDS's builder of `name`, prepared; raises UserInputError when it needs a download that cannot
    be made."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name)
    if not builder.is_prepared():
        missing = [
            url for url, info in builder.url_infos.items()
            if not os.path.isfile(download_path(builder, url, info.checksum) + ".INFO")
        ]
        if missing:
            _check_reachable(name, missing[0])
        builder.download_and_prepare()
    return builder


def _check_reachable(name: str, url: str) -> None:
    import requests

    try:
        requests.head(url, timeout=_PROBE_TIMEOUT_SEC, allow_redirects=False)
    except requests.RequestException as e:
        host = urllib.parse.urlsplit(url).hostname
        raise UserInputError(
            f"could not download {name} through TensorFlow Datasets ({host} does not answer: "
            f"{type(e).__name__}); pass --data_dir=DIR with the archives, see BUILD.md"
        ) from None
