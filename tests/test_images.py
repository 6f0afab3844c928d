"""Image data: class folders, flat folders with a labels CSV, .npz files, and their checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from intriguing.errors import IntriguingError
from intriguing.images import ImageSet, load_images, load_npz, quantized, write_npz, write_pngs


def _png(path, size=(6, 4), color=(255, 0, 0), mode="RGB"):
    """A solid image ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path)
    return path


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "data"
    _png(root / "dog" / "a.png", color=(0, 255, 0))
    _png(root / "cat" / "b.png", color=(255, 0, 0))
    _png(root / "cat" / "c.jpg", color=(0, 0, 255))
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


def test_class_folders_decode_to_float_nchw(class_folder):
    data = load_images(class_folder)
    assert isinstance(data, ImageSet) and len(data) == 3
    assert data.images.shape == (3, 3, 4, 6) and data.images.dtype == torch.float32
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1]
    assert 0 <= float(data.images.min()) and float(data.images.max()) <= 1
    assert torch.allclose(data.images[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert data.files[2].endswith("a.png")


def test_resize_channels_and_limit(class_folder):
    data = load_images(class_folder, size=8, channels=1, limit=2)
    assert data.images.shape == (2, 1, 8, 8)
    assert load_images(class_folder, size=(5, 7)).images.shape == (3, 3, 5, 7)


def test_grayscale_stays_one_channel(tmp_path):
    _png(tmp_path / "0" / "x.png", mode="L", color=(128,))
    _png(tmp_path / "1" / "y.png", mode="L", color=(255,))
    data = load_images(tmp_path)
    assert data.images.shape == (2, 1, 4, 6)
    assert abs(float(data.images[0].mean()) - 128 / 255) < 1e-6


def test_folder_names_map_to_the_models_classes(class_folder):
    names = ["bird", "dog", "cat"]
    data = load_images(class_folder, class_names=names)
    assert data.class_names == names and data.labels.tolist() == [2, 2, 1]


def test_mixed_sizes_need_a_size(class_folder):
    _png(class_folder / "dog" / "big.png", size=(10, 10))
    with pytest.raises(IntriguingError, match=r"2 different sizes .*give a size"):
        load_images(class_folder)
    assert load_images(class_folder, size=4).images.shape == (4, 3, 4, 4)


def test_unreadable_images_are_named_together(class_folder):
    (class_folder / "dog" / "broken.png").write_bytes(b"not a png")
    (class_folder / "cat" / "empty.jpg").write_bytes(b"")
    with pytest.raises(IntriguingError, match=r"2 problem\(s\): cannot read image cat/empty.jpg.*dog/broken.png"):
        load_images(class_folder)


def test_empty_folders(tmp_path):
    with pytest.raises(IntriguingError, match="it is empty"):
        load_images(tmp_path)
    (tmp_path / "cat").mkdir()
    _png(tmp_path / "dog" / "a.png")
    with pytest.raises(IntriguingError, match="class folder 'cat' has no images"):
        load_images(tmp_path)
    with pytest.raises(IntriguingError, match="no such folder"):
        load_images(tmp_path / "missing")


def test_loose_images_without_labels_say_what_to_add(tmp_path):
    _png(tmp_path / "a.png")
    with pytest.raises(IntriguingError, match="found 1 image.*no labels.csv"):
        load_images(tmp_path)


def test_flat_folder_with_labels_csv(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / name)
    (tmp_path / "labels.csv").write_text("filename,label\na.png,2\nb.png,0\n\nc.png,1\n")
    data = load_images(tmp_path)
    assert data.labels.tolist() == [2, 0, 1] and data.class_names == ["0", "1", "2"]


def test_csv_labels_by_name_and_elsewhere(tmp_path):
    for name in ("a.png", "b.png"):
        _png(tmp_path / name)
    labels = tmp_path.parent / f"{tmp_path.name}-labels.csv"
    labels.write_text("a.png,ostrich\nb.png,tench\n")
    data = load_images(tmp_path, labels=labels)
    assert data.class_names == ["ostrich", "tench"] and data.labels.tolist() == [0, 1]
    model_names = ["tench", "goldfish", "ostrich"]
    assert load_images(tmp_path, labels=labels, class_names=model_names).labels.tolist() == [2, 0]


def test_csv_problems_are_listed_by_line(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("a.png,zebra\nmissing.png,1\n")
    with pytest.raises(IntriguingError, match=r"line 1: label 'zebra'.*line 2: no image 'missing.png'"):
        load_images(tmp_path, class_names=["0", "1"])
    (tmp_path / "labels.csv").write_text("a.png,1,extra\n")
    with pytest.raises(IntriguingError, match="expected 2 columns"):
        load_images(tmp_path)


def test_labels_out_of_range_for_the_model(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("a.png,7\n")
    expected = r": labels: class indices must lie in \[0, 4\], got range \[7, 7\]"
    with pytest.raises(IntriguingError, match=expected):
        load_images(tmp_path, class_names=[str(i) for i in range(5)])


# --- .npz --------------------------------------------------------------------------------------


def test_npz_uint8_nhwc_and_float_nchw(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", images=pixels, labels=np.array([0, 1, 2, 1]))
    data = load_images(tmp_path / "u.npz")
    assert data.images.shape == (4, 3, 5, 5)
    assert torch.allclose(data.images[1, :, 2, 3], torch.tensor(pixels[1, 2, 3] / 255.0, dtype=torch.float32))
    assert data.class_names == ["0", "1", "2"]
    floats = np.random.default_rng(1).random((2, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "f.npz", images=floats, labels=np.array([1, 0]), class_names=np.array(["a", "b"]))
    data = load_npz(tmp_path / "f.npz", size=3, channels=3)
    assert data.images.shape == (2, 3, 3, 3) and data.class_names == ["a", "b"]


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 1, 4, 4), np.float32)}, "missing array.*labels"),
    ({"images": np.full((2, 1, 4, 4), 2.0, np.float32), "labels": np.array([0, 1])}, r"must lie in \[0, 1\]"),
    ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.array([0, 1, 1])}, r"expected shape \(2,\)"),
    ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.array([0.0, 1.0])}, "integer class indices"),
    ({"images": np.zeros((2, 5, 4, 4), np.float32), "labels": np.array([0, 1])}, "C 1 or 3"),
    ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.array([0, 9])}, r"class indices must lie in \[0, 2\]"),
])
def test_npz_problems(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(IntriguingError, match=message):
        load_images(tmp_path / "bad.npz", class_names=["a", "b", "c"])


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", images=np.array([{"a": 1}], dtype=object), labels=np.array([0]))
    with pytest.raises(IntriguingError, match="pickled objects"):
        load_images(tmp_path / "obj.npz")


def test_imageset_moves_between_devices(class_folder):
    data = load_images(class_folder).to("cpu")
    assert data.images.device.type == "cpu" and data.labels.device.type == "cpu"


# --- writing ------------------------------------------------------------------------------------


def test_pngs_round_trip_through_a_labels_csv(tmp_path):
    images = torch.rand(3, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    paths = write_pngs(tmp_path, images, ["a", "b", "c"])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"]
    (tmp_path / "labels.csv").write_text("a.png,0\nb.png,1\nc.png,1\n")
    back = load_images(tmp_path)
    assert torch.equal(back.images, quantized(images))
    assert float((back.images - images).abs().max()) <= 0.5 / 255 + 1e-6
    gray = write_pngs(tmp_path / "gray", images[:1, :1], ["g"])
    assert Image.open(gray[0]).mode == "L"
    with pytest.raises(IntriguingError, match="one file name per image"):
        write_pngs(tmp_path, images, ["a"])


def test_npz_round_trip_keeps_exact_floats(tmp_path):
    images = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    path = write_npz(tmp_path / "adv.npz", images, torch.tensor([0, 2, 1, 2]), ["x", "y", "z"],
                     target=torch.tensor([1, 1, 0, 0]))
    back = load_npz(path)
    assert torch.equal(back.images, images) and back.labels.tolist() == [0, 2, 1, 2]
    assert back.class_names == ["x", "y", "z"]
    assert np.load(path)["target"].tolist() == [1, 1, 0, 0]
