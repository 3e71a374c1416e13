"""Omniglot: reading the archives (or TFDS), preprocessing to 26x26 or 28x28, splits and caching.

Raw images are 105x105 with ink = 0. Preprocessing inverts them (ink = 1) and then
- 26x26 (the VMA paper): crop to the top-left 104x104, 4x4 max-pool;
- 28x28: pad to 112x112 (3 pixels before, 4 after), 4x4 max-pool. This is derived
  from the originals, not Burda et al.'s 28x28 version, which is not available here.
Max-pooling keeps images binary and thin strokes visible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from vma_tf.config import DataConfig
from vma_tf.data import cache, tfds_source
from vma_tf.errors import UserInputError

ARCHIVES = ("images_background", "images_evaluation")
TEST_ALPHABETS_45_5 = ("Tengwar", "Sylheti", "Tibetan", "Syriac_(Serto)", "ULOG")
SPLITS = ("45_5", "lake", "drawings")
TRAIN_DRAWINGS = 15  # the "drawings" split: the first 15 drawings of every character train, the last 5 test
IMAGE_SIZES = (26, 28)
RAW_SIZE = 105
POOL = 4
_PREPROCESSING_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CharacterSet:
    """Preprocessed characters grouped by class.

    images: uint8 [C, N, S, S] in {0, 1}, ink = 1; C classes of N drawings each.
    character_ids: int32 [C], the global character id - 1 (TFDS's `label`); where the source
      names no global id (omniglot_gmn), the class's row.
    alphabets: [C] alphabet names. names: [C] character names, where the source keeps them.
    """

    images: np.ndarray
    character_ids: np.ndarray
    alphabets: tuple[str, ...]
    names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def images_per_class(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]


@dataclasses.dataclass(frozen=True)
class _Record:
    archive: str
    alphabet: str
    character_id: int
    ink: np.ndarray  # bool [105, 105]


def preprocess(ink: np.ndarray, image_size: int) -> np.ndarray:
    """Maps ink masks bool [N, 105, 105] to uint8 [N, S, S] in {0, 1} (S = image_size)."""
    if image_size == 26:
        ink = ink[:, :104, :104]
    elif image_size == 28:
        ink = np.pad(ink, ((0, 0), (3, 4), (3, 4)))
    else:
        raise UserInputError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    n = ink.shape[0]
    pooled = ink.reshape(n, image_size, POOL, image_size, POOL).max(axis=(2, 4))
    return pooled.astype(np.uint8)


def load_splits(config: DataConfig) -> dict[str, CharacterSet]:
    """Returns {"train": CharacterSet, "test": CharacterSet} for config.split.

    Reads `<data_dir>/omniglot/{images_background,images_evaluation}` (zips or the
    extracted folders) or, with data_dir None, TFDS `omniglot`. The preprocessed
    arrays are cached in config.cache_dir, so only the first run decodes PNGs.
    """
    if config.split not in SPLITS:
        raise UserInputError(f"--split must be one of {SPLITS}, got {config.split!r}")
    if config.image_size not in IMAGE_SIZES:
        raise UserInputError(f"--image_size must be one of {IMAGE_SIZES}, got {config.image_size}")
    if config.data_dir is not None:
        sources = [_locate_archive(config.data_dir, archive) for archive in ARCHIVES]
        fingerprint = [cache.file_fingerprint(path) for path in sources]

        def build() -> dict[str, np.ndarray]:
            return _arrays_from_records(_records_from_archives(sources), config.image_size)
    else:
        fingerprint = ["tfds:omniglot", "drawings by content"]

        def build() -> dict[str, np.ndarray]:
            return _by_content(_arrays_from_records(_records_from_tfds(), config.image_size))
    key = hashlib.sha256(repr((_PREPROCESSING_VERSION, config.image_size, fingerprint)).encode()).hexdigest()
    size = config.image_size
    shapes = {"images": ("n", size, size), "character_ids": ("n",), "alphabets": ("n",), "archives": ("n",)}
    kinds = {"images": "u", "character_ids": "i", "alphabets": "U", "archives": "U"}
    arrays = cache.load_or_build(cache.cache_path(config.cache_dir, f"omniglot{size}", key), build,
                                 lambda arrays: cache.arrays_problem(arrays, shapes, kinds))
    return _split(arrays, config.split)


def _locate_archive(data_dir: str, archive: str) -> str:
    omniglot_dir = os.path.join(data_dir, "omniglot")
    zip_path = os.path.join(omniglot_dir, archive + ".zip")
    folder = os.path.join(omniglot_dir, archive)
    if os.path.isfile(zip_path):
        return zip_path
    if os.path.isdir(folder):
        return folder
    raise UserInputError(f"missing Omniglot archive {zip_path} (or its extracted folder {folder}/)")


def _records_from_archives(sources: list[str]) -> Iterator[_Record]:
    for source in sources:
        archive = os.path.basename(source).removesuffix(".zip")
        for name, data in _png_files(source):
            parts = name.replace(os.sep, "/").split("/")
            # A zip's role comes from its contents: its top folder is images_background or _evaluation.
            if source.endswith(".zip") and len(parts) == 4 and parts[0] != archive:
                raise UserInputError(f"{source} holds {parts[0]}/, not {archive}/: the Omniglot archives are "
                                     "swapped or renamed (the Lake split would swap train and test)")
            stem = parts[-1].removesuffix(".png")
            try:
                character_id = int(stem.split("_")[0]) - 1
            except ValueError:
                raise UserInputError(f"{source}: unexpected file name {name} (want XXXX_YY.png)") from None
            yield _Record(archive, parts[-3], character_id, _decode_ink(data, f"{source}: {name}"))


def _png_files(source: str) -> Iterator[tuple[str, bytes]]:
    """Yields (path inside the archive, bytes) of every PNG, in sorted order.

    Raises UserInputError for a character folder (<alphabet>/<character>/) without PNGs.
    """
    if os.path.isdir(source):
        walked = [(os.path.relpath(root, source), files) for root, _, files in os.walk(source)]
        folders = {root for root, _ in walked if root.count(os.sep) == 1}
        paths = sorted(os.path.join(root, f) for root, files in walked for f in files if f.endswith(".png"))
        _check_no_empty_class(source, folders, {os.path.dirname(path) for path in paths})
        for path in paths:
            with open(os.path.join(source, path), "rb") as f:
                yield path, f.read()
        return
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            # Folder entries are <archive>/<alphabet>/<character>/.
            folders = {n.rstrip("/") for n in names if n.endswith("/") and n.count("/") == 3}
            pngs = sorted(n for n in names if n.endswith(".png"))
            _check_no_empty_class(source, folders, {os.path.dirname(n) for n in pngs})
            for name in pngs:
                yield name, archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise UserInputError(f"corrupt Omniglot archive {source}: {e}") from None


def _check_no_empty_class(source: str, character_folders: set[str], folders_with_pngs: set[str]) -> None:
    empty = sorted(character_folders - folders_with_pngs)
    if empty:
        raise UserInputError(f"{source}: character folder {empty[0]} holds no PNG images")


def _decode_ink(data: bytes, where: str) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UserInputError(f"{where} is not a readable PNG image ({e})") from None
    if image.size != (RAW_SIZE, RAW_SIZE):
        raise UserInputError(f"{where} is {image.size[0]}x{image.size[1]}, expected {RAW_SIZE}x{RAW_SIZE}")
    return np.asarray(image.convert("L")) < 128


def _records_from_tfds() -> Iterator[_Record]:
    import tensorflow_datasets as tfds

    builder = tfds_source.prepared_builder("omniglot")
    alphabet_names = builder.info.features["alphabet"].names
    for tfds_split, archive in (("train", "images_background"), ("test", "images_evaluation")):
        for example in tfds.as_numpy(builder.as_dataset(split=tfds_split)):
            yield _Record(
                archive,
                alphabet_names[example["alphabet"]],
                int(example["label"]),
                example["image"][..., 0] < 128,
            )


def _arrays_from_records(records: Iterator[_Record], image_size: int) -> dict[str, np.ndarray]:
    """Decodes and preprocesses every image; returns flat per-image arrays [N, ...]."""
    archives, alphabets, character_ids, images = [], [], [], []
    chunk: list[np.ndarray] = []
    for record in records:
        archives.append(record.archive)
        alphabets.append(record.alphabet)
        character_ids.append(record.character_id)
        chunk.append(record.ink)
        if len(chunk) == 1024:
            images.append(preprocess(np.stack(chunk), image_size))
            chunk = []
    if chunk:
        images.append(preprocess(np.stack(chunk), image_size))
    if not images:
        raise UserInputError("the Omniglot archives hold no PNG images")
    return {
        "images": np.concatenate(images),
        "character_ids": np.asarray(character_ids, np.int32),
        "alphabets": np.asarray(alphabets),
        "archives": np.asarray(archives),
    }


def _by_content(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The images of each character in the order of their preprocessed pixels' bytes. TFDS stores
    no drawer and shuffles the examples; this order is TFDS's canonical one (the archives' is by
    drawer), so each class holds the same images as from the archives, in another order."""
    pixels = np.array([image.tobytes() for image in arrays["images"]])
    order = np.lexsort((pixels, arrays["character_ids"]))
    return {name: values[order] for name, values in arrays.items()}


def _split(arrays: dict[str, np.ndarray], split: str) -> dict[str, CharacterSet]:
    if split == "drawings":
        every = _group_by_class(arrays, np.ones(len(arrays["images"]), bool))
        return {
            "train": dataclasses.replace(every, images=every.images[:, :TRAIN_DRAWINGS]),
            "test": dataclasses.replace(every, images=every.images[:, TRAIN_DRAWINGS:]),
        }
    if split == "lake":
        is_test = arrays["archives"] == "images_evaluation"
    else:
        is_test = np.isin(arrays["alphabets"], TEST_ALPHABETS_45_5)
    return {
        "train": _group_by_class(arrays, ~is_test),
        "test": _group_by_class(arrays, is_test),
    }


def _group_by_class(arrays: dict[str, np.ndarray], keep: np.ndarray) -> CharacterSet:
    character_ids = arrays["character_ids"][keep]
    order = np.argsort(character_ids, kind="stable")
    character_ids = character_ids[order]
    classes, first, counts = np.unique(character_ids, return_index=True, return_counts=True)
    if counts.size and counts.min() != counts.max():
        short = classes[np.argmin(counts)]
        raise UserInputError(
            f"Omniglot character {short + 1} has {counts.min()} images, the others {counts.max()}"
        )
    per_class = int(counts.max()) if counts.size else 0
    images = arrays["images"][keep][order]
    return CharacterSet(
        images=images.reshape(len(classes), per_class, *images.shape[1:]),
        character_ids=classes.astype(np.int32),
        alphabets=tuple(str(a) for a in arrays["alphabets"][keep][order][first]),
    )
