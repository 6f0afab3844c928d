"""Image files to pixels: every Pillow mode to the right values in [0, 1], EXIF orientation, transparency,
and the files a folder holds that cannot be read (one line each, naming the file)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from intriguing.errors import IntriguingError
from intriguing.images import load_images


def _flat(root: Path, *images: tuple[str, Image.Image]) -> Path:
    """A flat folder of ``images`` (file name, picture), each labelled 0 in a labels.csv."""
    root.mkdir(parents=True, exist_ok=True)
    for name, image in images:
        image.save(root / name)
    (root / "labels.csv").write_text("".join(f"{name},0\n" for name, _ in images))
    return root


def _palette() -> Image.Image:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.putpixel((1, 0), 1)
    return image


@pytest.mark.parametrize("mode, image, pixel", [
    ("P", _palette(), [1.0, 0.0, 0.0]),
    ("CMYK", Image.new("CMYK", (4, 4), (0, 255, 255, 0)), [1.0, 0.0, 0.0]),
    ("1", Image.new("1", (4, 4), 1), [1.0]),
    ("L", Image.new("L", (4, 4), 51), [0.2]),
])
def test_eight_bit_modes_decode_to_their_colours(tmp_path, mode, image, pixel):
    """Palette, CMYK and bilevel images are their displayed colours, 255 being 1."""
    data = load_images(_flat(tmp_path, (f"x.{'tif' if mode == 'CMYK' else 'png'}", image)))
    assert torch.allclose(data.images[0, :, 0, 0], torch.tensor(pixel), atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    """A bug: a phone photo stored sideways with an EXIF orientation (6: rotate 90 degrees clockwise) was
    read as stored, so the model saw it lying on its side; people see it upright."""
    image = Image.new("RGB", (8, 4))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    tmp_path.mkdir(exist_ok=True)
    image.save(tmp_path / "x.png", exif=exif)
    (tmp_path / "labels.csv").write_text("x.png,0\n")
    data = load_images(tmp_path)
    assert data.images.shape == (1, 3, 8, 4)
    assert data.images[0, :, 0, 3].tolist() == [1.0, 1.0, 1.0] and float(data.images.sum()) == 3.0


def test_transparent_pixels_are_composited_on_white(tmp_path):
    """A bug: alpha was dropped, so a fully transparent pixel took whatever colour it stored (often black
    or, here, red) though every viewer shows the background. One rule for RGBA, LA and palette
    transparency: composite on white."""
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    rgba.putpixel((2, 0), (0, 0, 0, 51))
    transparent_palette = _palette()
    transparent_palette.info["transparency"] = 0
    data = load_images(_flat(tmp_path, ("a.png", rgba), ("p.png", transparent_palette)))
    assert data.images[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert data.images[0, :, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(data.images[0, :, 0, 2], torch.full((3,), 0.8), atol=1 / 255)
    assert data.images[1, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and data.images[1, :, 0, 1].tolist() == [0.0, 0.0, 1.0]
    grey = load_images(_flat(tmp_path / "la", ("g.png", Image.new("LA", (4, 4), (0, 0)))))
    assert grey.images.shape == (1, 1, 4, 4) and float(grey.images.min()) == 1.0


def test_sixteen_bit_and_float_pixels_keep_their_precision(tmp_path):
    """A bug: 16-bit and float images were rounded to 8 bits (32768/65535 read as 128/255)."""
    sixteen = Image.fromarray(np.full((4, 4), 32768, np.uint16))
    floats = Image.fromarray(np.full((4, 4), 0.3, np.float32))
    data = load_images(_flat(tmp_path, ("a.png", sixteen), ("b.tif", floats)), channels=3)
    assert data.images.shape == (2, 3, 4, 4)
    assert torch.allclose(data.images[0], torch.tensor(32768 / 65535)) and torch.allclose(data.images[1], torch.tensor(0.3))
    resized = load_images(tmp_path, size=2)
    assert torch.allclose(resized.images[0], torch.tensor(32768 / 65535))


def test_sixteen_bit_pgm_scales_by_65535(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "x.pgm").write_bytes(b"P5\n2 2\n65535\n" + np.full((2, 2), 40000, ">u2").tobytes())
    (tmp_path / "labels.csv").write_text("x.pgm,0\n")
    assert torch.allclose(load_images(tmp_path).images, torch.tensor(40000 / 65535))


def test_thirty_two_bit_integer_images_are_refused(tmp_path):
    """A bug: a 32-bit integer TIFF of 8-bit values (Image.fromarray of an int32 array) was scaled as if
    16-bit: 200 became 0.003, a black image, silently. Its white level is unknowable: one line instead."""
    _flat(tmp_path, ("x.tif", Image.fromarray(np.full((4, 4), 200, np.int32))))
    with pytest.raises(IntriguingError, match=r"problem\(s\): x\.tif: 32-bit integer pixels .*save it as 8-bit or 16-bit"):
        load_images(tmp_path)


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    """A bug: an image over Pillow's pixel limit raised DecompressionBombError as a traceback."""
    _flat(tmp_path, ("big.png", Image.new("L", (8, 8))))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(IntriguingError, match=r"cannot read image big\.png .*pixels"):
        load_images(tmp_path)


def test_a_broken_link_in_a_class_folder_is_named(tmp_path):
    """A bug: a symlink to a missing image was skipped silently (the class lost an image)."""
    Image.new("L", (4, 4)).save((tmp_path / "cat").mkdir() or tmp_path / "cat" / "a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "cat" / "b.png")
    with pytest.raises(IntriguingError, match=r"cat/b\.png is a link to a missing file"):
        load_images(tmp_path)


def test_an_unlistable_folder_is_one_line(tmp_path, monkeypatch):
    """A bug: a class folder without read permission raised PermissionError as a traceback."""
    Image.new("L", (4, 4)).save((tmp_path / "cat").mkdir() or tmp_path / "cat" / "a.png")
    listing = Path.iterdir

    def refuse(self):
        if self.name == "cat":
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(IntriguingError, match=r"cannot list folder .*cat.*Permission denied"):
        load_images(tmp_path)


def test_images_the_class_folder_layout_skips_are_warned_about(tmp_path):
    """A bug: images beside the class folders, and in subfolders of a class folder, were skipped
    silently; a folder one level too high ('data' holding 'train/cat') said only 'no images'."""
    for path in ("cat/a.png", "cat/extra/b.png", "loose.png", "dog/c.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(tmp_path / path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(load_images(tmp_path)) == 2
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 image(s) beside the class folders are skipped (loose.png)" in messages
    assert "class folder 'cat' has subfolder(s) extra, whose images are skipped" in messages
    for path in ("top/data/cat/a.png", "top/data/dog/b.png"):
        (tmp_path / path).parent.mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / path)
    with pytest.raises(IntriguingError, match=r"class folder 'data' has no images but subfolder\(s\) cat, dog"):
        load_images(tmp_path / "top")
