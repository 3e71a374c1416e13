"""A user's drawings, in every form they come, become exactly the images the model trained on."""

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from vma_tf.data import drawings, omniglot
from vma_tf.errors import UserInputError


@pytest.fixture(scope="module")
def raw_drawing(data_dir):
    """One of Omniglot's 105x105 training PNGs, as the archive holds it: grey, black ink on white."""
    with zipfile.ZipFile(os.path.join(data_dir, "omniglot", "images_background.zip")) as archive:
        name = next(n for n in sorted(archive.namelist()) if n.endswith(".png"))
        return np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("L"))


def _png(path, array, mode):
    Image.fromarray(array, mode).save(path)
    return str(path)


@pytest.mark.parametrize("size", omniglot.IMAGE_SIZES)
def test_every_form_of_a_training_drawing_gives_its_training_image(raw_drawing, size, tmp_path):
    expected = omniglot.preprocess((raw_drawing < 128)[np.newaxis], size)[0].astype(np.float32)[..., np.newaxis]
    ink = raw_drawing < 128
    transparent = np.zeros([*ink.shape, 4], np.uint8)  # black strokes, the background fully transparent
    transparent[..., 3] = np.where(ink, 255, 0)
    coloured = np.where(ink[..., None], np.uint8([20, 40, 160]), np.uint8([250, 240, 190]))  # blue on cream
    forms = {
        "grey png": _png(tmp_path / "grey.png", raw_drawing, "L"),
        "png with alpha": _png(tmp_path / "alpha.png", transparent, "RGBA"),
        "colour png": _png(tmp_path / "colour.png", coloured, "RGB"),
        "light on dark png": _png(tmp_path / "negative.png", 255 - raw_drawing, "L"),
        "uint8 array": raw_drawing,
        "float array": raw_drawing.astype(np.float32) / 255,
        "bool ink array on black": ink,
        "rgba array": transparent,
        "PIL image": Image.fromarray(coloured, "RGB"),
    }
    for form, drawing in forms.items():
        np.testing.assert_array_equal(drawings.preprocess(drawing, size), expected, err_msg=form)


def test_a_larger_or_oblong_drawing_is_scaled_to_the_models_size(raw_drawing):
    expected = drawings.preprocess(raw_drawing, 26)
    twice = np.kron(raw_drawing, np.ones((2, 2), np.uint8))  # 210 x 210
    assert (drawings.preprocess(twice, 26) == expected).mean() > 0.97
    oblong = np.full((105, 300), 255, np.uint8)
    oblong[:, 97:202] = raw_drawing
    image = drawings.preprocess(oblong, 26)
    assert image.shape == (26, 26, 1) and image[:, :6].sum() == 0  # the padding is background


@pytest.mark.parametrize(
    "drawing, mode", [(np.full((40, 40), 255, np.uint8), "L"), (np.zeros((40, 40, 4), np.uint8), "RGBA")],
    ids=["white page", "transparent page"],
)
def test_a_drawing_without_ink_is_refused_naming_it(drawing, mode, tmp_path):
    with pytest.raises(UserInputError, match="a.png has no ink"):
        drawings.preprocess(_png(tmp_path / "a.png", drawing, mode), 26)


def test_a_drawing_that_is_mostly_ink_is_refused_naming_it():
    block = np.full((40, 40), 255, np.uint8)
    block[4:36, 4:36] = 0  # a dark block over 64% of a light page
    with pytest.raises(UserInputError, match=r"block is 6\d% ink: expected strokes on a plain background"):
        drawings.preprocess(block, 26, name="block")


@pytest.mark.parametrize(
    "drawing, message",
    [
        (np.zeros((4, 4, 5)), r"has shape \(4, 4, 5\)"),
        (np.full((4, 4), 2.0), r"holds floats outside \[0, 1\]"),
        (np.full((4, 4), 300), "holds integers outside 0..255"),
        (np.array([["a"]]), "has dtype <U1"),
    ],
)
def test_arrays_that_are_not_images_are_refused(drawing, message):
    with pytest.raises(UserInputError, match=f"^the array {message}"):
        drawings.preprocess(drawing, 26)


def test_an_unreadable_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(UserInputError, match="notes.png is not a readable image"):
        drawings.preprocess(str(path), 26)


def test_area_downscaling_looks_like_the_gmn_authors_arrays(data_dir, gmn_data_dir):
    """For 10 training characters, each of the authors' thin-stroked 28x28 arrays is closer to its
    nearest area-downscaled original than to its nearest max-pooled one, and area-downscaling inks
    about as much as the arrays do (max-pooling: half again as much)."""
    with np.load(os.path.join(gmn_data_dir, "omniglot_gmn", "train_small.npz")) as authors:
        keys = sorted(authors.files)[::97][:10]
        arrays = {key: (authors[key] == 0).reshape(20, 28, 28) for key in keys}
    ink = {"arrays": np.mean([array.mean() for array in arrays.values()]), "area": [], "max_pool": []}
    with zipfile.ZipFile(os.path.join(data_dir, "omniglot", "images_background.zip")) as archive:
        names = archive.namelist()
        for key, array in arrays.items():
            alphabet, character = key.split("/")[1:]
            originals = [np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("L")) for name in sorted(names)
                         if f"/{alphabet}/{character}/" in name and name.endswith(".png")]
            differing = {}
            for downscale in ("area", "max_pool"):
                ours = np.stack([drawings.preprocess(o, 28, downscale=downscale)[..., 0] for o in originals]) > 0
                differing[downscale] = np.mean([min(np.mean(a != b) for b in ours) for a in array])
                ink[downscale].append(ours.mean())
            assert differing["area"] < differing["max_pool"], (key, differing)
    assert abs(np.mean(ink["area"]) - ink["arrays"]) < 0.015 and np.mean(ink["max_pool"]) - ink["arrays"] > 0.03


def test_the_datasets_downscale_is_named_and_an_unknown_one_refused(raw_drawing):
    assert drawings.downscale_of("omniglot_gmn") == "area" and drawings.downscale_of("omniglot") == "max_pool"
    with pytest.raises(UserInputError, match=r"downscale must be one of \('max_pool', 'area'\), got 'bicubic'"):
        drawings.preprocess(raw_drawing, 28, downscale="bicubic")
