"""Omniglot preprocessing, splits, caching and bad archives."""

import io
import os
import shutil
import time
import zipfile

import numpy as np
import pytest

from vma_tf.config import DataConfig
from vma_tf.data import cache, labelled, omniglot
from vma_tf.errors import UserInputError


def test_preprocess_26_crops_to_104_and_max_pools():
    ink = np.zeros((2, 105, 105), bool)
    ink[0, 103, 103] = True  # last kept pixel: lands in output pixel (25, 25)
    ink[0, 0, 5] = True  # column 5 -> pooled column 1
    ink[1, 104, 104] = True  # cropped away
    images = omniglot.preprocess(ink, 26)
    assert images.shape == (2, 26, 26) and images.dtype == np.uint8
    expected = np.zeros((26, 26), np.uint8)
    expected[25, 25] = expected[0, 1] = 1
    np.testing.assert_array_equal(images[0], expected)
    assert images[1].sum() == 0


def test_preprocess_28_pads_to_112():
    ink = np.zeros((1, 105, 105), bool)
    ink[0, 104, 0] = True  # padded by 3 before: row 107 -> 26, column 3 -> 0
    images = omniglot.preprocess(ink, 28)
    assert images.shape == (1, 28, 28)
    assert images[0, 26, 0] == 1 and images.sum() == 1


@pytest.fixture(scope="module")
def splits_45_5(data_dir, cache_dir):
    return omniglot.load_splits(DataConfig(data_dir=data_dir, split="45_5", cache_dir=cache_dir))


def test_45_5_split_counts_and_pixels(splits_45_5):
    train, test = splits_45_5["train"], splits_45_5["test"]
    assert test.num_classes == 144 and train.num_classes == 1623 - 144
    assert set(test.alphabets) == set(omniglot.TEST_ALPHABETS_45_5)
    assert not set(train.alphabets) & set(omniglot.TEST_ALPHABETS_45_5)
    assert train.images.shape[1:] == (20, 26, 26) and test.images.shape[1:] == (20, 26, 26)
    assert set(np.unique(train.images)) == {0, 1}
    # ink = 1: strokes cover a minority of pixels; the border is background.
    assert 0.05 < train.images.mean() < 0.3
    assert train.images[:, :, 0, :].mean() < train.images.mean()


def test_lake_split_counts(data_dir, cache_dir):
    splits = omniglot.load_splits(DataConfig(data_dir=data_dir, split="lake", cache_dir=cache_dir))
    assert splits["train"].num_classes == 964 and splits["test"].num_classes == 659
    assert len(set(splits["train"].alphabets)) == 30 and len(set(splits["test"].alphabets)) == 20


def test_28_pixel_option(data_dir, cache_dir):
    splits = omniglot.load_splits(DataConfig(data_dir=data_dir, image_size=28, cache_dir=cache_dir))
    assert splits["test"].images.shape == (144, 20, 28, 28)


def _images_of(size: int):
    return lambda arrays: cache.arrays_problem(arrays, {"images": ("n", size, size)}, {"images": "u"})


def test_second_load_reads_the_cache(tmp_path):
    calls = []
    build = lambda: calls.append(1) or {"images": np.zeros([3, 4, 4], np.uint8)}  # noqa: E731
    path = cache.cache_path(str(tmp_path), "x", "0123456789abcdef")
    first, second = cache.load_or_build(path, build, _images_of(4)), cache.load_or_build(path, build, _images_of(4))
    assert len(calls) == 1
    np.testing.assert_array_equal(first["images"], second["images"])
    with open(path, "wb") as f:
        f.write(b"truncated")  # a half-written cache is rebuilt, not trusted
    assert cache.load_or_build(path, build, _images_of(4))["images"].shape == (3, 4, 4)
    assert len(calls) == 2


@pytest.mark.parametrize("stored", [
    {"labels": np.arange(3)},  # a valid file without the arrays
    {"images": np.zeros([3, 5, 5], np.uint8)},  # images of another size
    {"images": np.zeros([3, 4, 4], np.float32)},  # of another dtype
    {"images": np.zeros([0, 4, 4], np.uint8)},  # none
])
def test_a_cache_with_the_wrong_contents_is_rebuilt(stored, tmp_path):
    path = cache.cache_path(str(tmp_path), "x", "0123456789abcdef")
    np.savez(path, **stored)
    rebuilt = cache.load_or_build(path, lambda: {"images": np.ones([3, 4, 4], np.uint8)}, _images_of(4))
    assert rebuilt["images"].shape == (3, 4, 4) and rebuilt["images"].dtype == np.uint8
    assert cache.load_or_build(path, lambda: pytest.fail("rebuilt twice"), _images_of(4))["images"].sum() == 48


def test_an_edit_inside_an_extracted_folder_changes_its_fingerprint(tmp_path):
    """An extracted archive's cache key must notice an edited, added or removed PNG, although none of
    these changes the top folder's own size or mtime (issue 30, item 9)."""
    character = tmp_path / "images_background" / "Alphabet" / "character01"
    character.mkdir(parents=True)
    drawing = character / "a.png"
    drawing.write_bytes(b"1")
    top = tmp_path / "images_background"
    fingerprints = [cache.file_fingerprint(str(top))]
    top_stat = os.stat(top)
    drawing.write_bytes(b"22")
    fingerprints.append(cache.file_fingerprint(str(top)))
    os.utime(drawing, ns=(0, 10**18))
    fingerprints.append(cache.file_fingerprint(str(top)))
    (character / "b.png").write_bytes(b"1")
    fingerprints.append(cache.file_fingerprint(str(top)))
    drawing.unlink()
    fingerprints.append(cache.file_fingerprint(str(top)))
    assert (os.stat(top).st_size, os.stat(top).st_mtime_ns) == (top_stat.st_size, top_stat.st_mtime_ns)
    assert len(set(fingerprints)) == len(fingerprints)
    assert cache.file_fingerprint(str(top)) == fingerprints[-1]


def test_a_killed_writers_temporaries_are_removed_once_stale(tmp_path):
    path = cache.cache_path(str(tmp_path), "x", "0123456789abcdef")
    name = os.path.basename(path)
    stale, fresh = tmp_path / f"{name}.old123.tmp", tmp_path / f"{name}.new456.tmp"
    others = tmp_path / "x-fedcba9876543210.npz.old789.tmp", tmp_path / "notes.tmp"  # not this cache file's
    for temporary in (stale, fresh, *others):
        temporary.write_bytes(b"")
    for old in (stale, *others):
        os.utime(old, (time.time() - 7200, time.time() - 7200))
    cache.load_or_build(path, lambda: {"images": np.ones([1, 4, 4], np.uint8)}, _images_of(4))
    assert not stale.exists() and fresh.exists()  # a fresh one may be another process's write in progress
    assert all(other.exists() for other in others)
    assert sorted(os.listdir(tmp_path)) == sorted([name, fresh.name, *(other.name for other in others)])


def test_missing_archive_is_named(tmp_path):
    with pytest.raises(UserInputError, match="images_background.zip"):
        omniglot.load_splits(DataConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path)))


def test_corrupt_archive_is_named(data_dir, tmp_path):
    root = tmp_path / "data" / "omniglot"
    root.mkdir(parents=True)
    shutil.copy(os.path.join(data_dir, "omniglot", "images_evaluation.zip"), root)
    with open(os.path.join(data_dir, "omniglot", "images_background.zip"), "rb") as f:
        (root / "images_background.zip").write_bytes(f.read(100_000))
    with pytest.raises(UserInputError, match="corrupt Omniglot archive .*images_background.zip"):
        omniglot.load_splits(DataConfig(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path)))


def test_extracted_folders_work_like_zips(tmp_path):
    folder = tmp_path / "omniglot" / "images_background" / "Alpha" / "character01"
    folder.mkdir(parents=True)
    from PIL import Image

    for drawer in (1, 2):
        pixels = np.full((105, 105), 255, np.uint8)
        pixels[10:20, 10:20] = 0
        Image.fromarray(pixels).convert("1").save(folder / f"0001_{drawer:02d}.png")
    evaluation = tmp_path / "omniglot" / "images_evaluation" / "Tengwar" / "character01"
    evaluation.mkdir(parents=True)
    Image.fromarray(np.full((105, 105), 255, np.uint8)).save(evaluation / "0002_01.png")
    Image.fromarray(np.full((105, 105), 255, np.uint8)).save(evaluation / "0002_02.png")
    splits = omniglot.load_splits(DataConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path)))
    assert splits["train"].images.shape == (1, 2, 26, 26)
    assert splits["train"].images[0, 0, 2:5, 2:5].min() == 1  # ink = 1 after inversion
    assert splits["test"].alphabets == ("Tengwar",) and splits["test"].images.sum() == 0


def _gmn_config(data_dir, **overrides) -> DataConfig:
    settings = {"dataset": "omniglot_gmn", "data_dir": data_dir, "split": "lake", "image_size": 28}
    return DataConfig(**{**settings, **overrides})


def test_the_gmn_authors_arrays_load_as_the_lake_split_with_ink_one(gmn_data_dir):
    splits = labelled.load_splits(_gmn_config(gmn_data_dir))
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (964, 20, 28, 28) and test.images.shape == (659, 20, 28, 28)
    assert train.images.dtype == np.uint8 and set(np.unique(train.images)) == {0, 1}
    assert 0.06 < train.images.mean() < 0.10  # thin strokes: about 8% ink (background, 92%, is 0)
    with np.load(os.path.join(gmn_data_dir, "omniglot_gmn", "test_small.npz")) as raw:
        key = f"images_evaluation/{test.alphabets[5]}/{test.names[5]}"
        np.testing.assert_array_equal(test.images[5].reshape(20, 784), raw[key] == 0)
    assert len(set(train.alphabets)) == 30 and len(set(test.alphabets)) == 20
    assert not set(train.alphabets) & set(test.alphabets)


def _write_npz(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage, message", [
    ("missing", r"missing .*test_small.npz: the GMN authors' 28x28 Omniglot, from the GMN authors' repository"),
    ("junk", r"test_small.npz is not a readable .npz of the GMN authors' arrays"),
    ("shape", r"test_small.npz: images_evaluation/A/character01 is uint8 \[20, 700\], expected uint8 \[20, 784\]"),
    ("values", r"test_small.npz: images_evaluation/A/character01 holds values other than 0 and 255"),
    ("key", r"test_small.npz: unexpected key 'character01'"),
])
def test_a_missing_or_damaged_gmn_file_is_refused_in_one_line(damage, message, gmn_data_dir, tmp_path):
    folder = tmp_path / "omniglot_gmn"
    folder.mkdir()
    shutil.copy(os.path.join(gmn_data_dir, "omniglot_gmn", "train_small.npz"), folder / "train_small.npz")
    good = np.full([20, 784], 255, np.uint8)
    test_file = str(folder / "test_small.npz")
    if damage == "junk":
        with open(test_file, "wb") as f:
            f.write(b"not a zip")
    elif damage == "shape":
        _write_npz(test_file, **{"images_evaluation/A/character01": good[:, :700]})
    elif damage == "values":
        _write_npz(test_file, **{"images_evaluation/A/character01": np.full([20, 784], 7, np.uint8)})
    elif damage == "key":
        _write_npz(test_file, character01=good)
    with pytest.raises(UserInputError, match=message) as refused:
        labelled.load_splits(_gmn_config(str(tmp_path)))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=26), "--dataset=omniglot_gmn holds 28x28 images: pass --image_size=28"),
    (dict(split="45_5"), "pass --split=lake"),
    (dict(data_dir=None), "is read from --data_dir"),
])
def test_the_gmn_dataset_refuses_settings_it_cannot_serve(overrides, message, tmp_path):
    with pytest.raises(UserInputError, match=message):
        labelled.load_splits(_gmn_config(**{"data_dir": str(tmp_path), **overrides}))


def _tiny_archive(path, top_folder, character_id, deflate_garbage=False):
    """A zip laid out like Omniglot's: <top>/<alphabet>/<character>/<id>_<drawer>.png."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((105, 105), 255, np.uint8)).save(buffer, format="PNG")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for drawer in (1, 2):
            archive.writestr(f"{top_folder}/Alpha/character01/{character_id:04d}_{drawer:02d}.png", buffer.getvalue())
    if deflate_garbage:  # the local header stays, the compressed stream does not inflate
        data = bytearray(path.read_bytes())
        start = data.index(b".png") + 4
        data[start + 10 : start + 40] = bytes(range(30))
        path.write_bytes(bytes(data))


def test_swapped_archives_are_refused_by_their_contents(tmp_path):
    root = tmp_path / "omniglot"
    root.mkdir()
    _tiny_archive(root / "images_background.zip", "images_evaluation", 2)
    _tiny_archive(root / "images_evaluation.zip", "images_background", 1)
    with pytest.raises(UserInputError, match="images_background.zip holds images_evaluation/, not images_background/: "
                                             "the Omniglot archives are swapped"):
        omniglot.load_splits(DataConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path), split="lake"))


def test_a_corrupt_deflate_stream_is_named(tmp_path):
    root = tmp_path / "omniglot"
    root.mkdir()
    _tiny_archive(root / "images_background.zip", "images_background", 1, deflate_garbage=True)
    _tiny_archive(root / "images_evaluation.zip", "images_evaluation", 2)
    with pytest.raises(UserInputError, match="corrupt Omniglot archive .*images_background.zip"):
        omniglot.load_splits(DataConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path), split="lake"))
