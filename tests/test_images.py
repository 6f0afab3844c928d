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


def test_npz_with_both_layouts_possible_needs_its_layout(tmp_path):
    """A bug: (N, 3, H, 3) was read channels-first without a word, though it may be (N, H, W, 3): a silently
    transposed image. Such a shape now needs ``layout``; with it, either reading is right."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=pixels, labels=np.array([0, 1]))
    with pytest.raises(IntriguingError, match=r"a\.npz: images of shape \(2, 3, 5, 3\) read as \(N, C, H, W\) or as "
                       r"\(N, H, W, C\); say which: np\.savez\(\.\.\., layout='NCHW'\) or layout='NHWC'"):
        load_images(tmp_path / "a.npz")
    for layout, shape, pixel in (("NHWC", (2, 3, 3, 5), pixels[1, 2, 4]), (b"nchw", (2, 3, 5, 3), pixels[1, :, 4, 2])):
        np.savez(tmp_path / "a.npz", images=pixels, labels=np.array([0, 1]), layout=layout)
        data = load_images(tmp_path / "a.npz")
        assert data.images.shape == shape
        index = (1, slice(None), 2, 4) if shape[-1] == 5 else (1, slice(None), 4, 2)
        assert torch.equal(data.images[index], torch.tensor(pixel / 255.0, dtype=torch.float32))


@pytest.mark.parametrize("images, layout, message", [
    (np.zeros((2, 4, 4, 1), np.uint8), "CHW", r"layout 'CHW': expected NCHW, NHWC or NHW"),
    (np.zeros((2, 4, 4, 5), np.uint8), "NHWC", r"shape \(2, 4, 4, 5\) is not NHWC with C 1 or 3"),
    (np.zeros((2, 4, 4), np.uint8), "NCHW", r"shape \(2, 4, 4\) is not NCHW with C 1 or 3"),
])
def test_npz_layout_must_fit_the_images(tmp_path, images, layout, message):
    np.savez(tmp_path / "bad.npz", images=images, labels=np.array([0, 1]), layout=layout)
    with pytest.raises(IntriguingError, match=message):
        load_images(tmp_path / "bad.npz")


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 1, 4, 4), np.float32)}, "missing array.*labels"),
    ({"images": np.full((2, 1, 4, 4), 2.0, np.float32), "labels": np.array([0, 1])}, r"must lie in \[0, 1\]"),
    ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.array([0, 1, 1])}, r"expected shape \(2,\)"),
    ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.array([0.0, 1.5])}, "not a whole class index"),
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


# --- bad inputs that used to give silently wrong labels or pixels --------------------------------


def test_npz_labels_follow_its_class_names_into_the_models_order(tmp_path):
    """Labels index the .npz's own class_names; a model naming the same classes in another order gets
    them remapped, never shifted (a 'cat' labelled as the model's class 0, 'dog')."""
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, 1]),
             class_names=np.array(["cat", "dog"]))
    data = load_images(path, class_names=["dog", "cat", "bird"])
    assert [data.class_names[i] for i in data.labels.tolist()] == ["cat", "dog"]


def test_npz_class_names_stored_as_bytes_read_as_text(tmp_path):
    """A bug: np.savez(class_names=np.array([b"cat", b"dog"])) (what h5py and many converters give) read
    back as the names "b'cat'" and "b'dog'", which name none of the model's classes."""
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, 1]),
             class_names=np.array([b"cat", b"dog"]))
    assert load_images(path).class_names == ["cat", "dog"]
    data = load_images(path, class_names=["dog", "cat"])
    assert [data.class_names[i] for i in data.labels.tolist()] == ["cat", "dog"]


def test_class_names_given_as_one_string_are_refused(tmp_path):
    """A bug: class_names="catdog" was taken as the names c, a, t, d, o, g."""
    _png(tmp_path / "cat" / "a.png")
    with pytest.raises(IntriguingError, match="class_names: expected a list of names, one per class, got a string"):
        load_images(tmp_path, class_names="catdog")


def test_class_folders_partly_named_after_the_model_are_an_error(tmp_path):
    """Folders 'cat' and 'dog' for a model with classes dog, bird: numbering them in sorted order would
    label every cat a dog; naming the folder that matches no class is the only safe answer."""
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    with pytest.raises(IntriguingError, match=r"'cat'.*rename"):
        load_images(tmp_path, class_names=["dog", "bird"])


def test_hidden_files_in_class_folders_are_ignored(tmp_path):
    """macOS leaves '._a.png' (AppleDouble) and .DS_Store beside copied images; hidden folders are
    already skipped, so hidden files are too."""
    _png(tmp_path / "cat" / "a.png")
    (tmp_path / "cat" / "._a.png").write_bytes(b"\x00\x05\x16\x07 not a png")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")
    assert load_images(tmp_path).files == [str(tmp_path / "cat" / "a.png")]


def test_labels_csv_with_a_byte_order_mark_and_windows_line_endings(tmp_path):
    """Excel saves 'CSV UTF-8' with a BOM and CRLF: the header must still be recognised."""
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_bytes("\ufefffilename,label\r\na.png,dog\r\nb.png,cat\r\n".encode())
    assert load_images(tmp_path).labels.tolist() == [1, 0]


def test_sixteen_bit_images_of_either_byte_order_scale_by_65535(tmp_path):
    """A big-endian 16-bit TIFF ('I;16B') was converted as if 8-bit: every pixel above 255 saturated."""
    ramp = np.linspace(0, 65535, 16).reshape(4, 4)
    for order in ("<u2", ">u2"):
        Image.fromarray(ramp.astype(order)).save(tmp_path / f"x{order[0] == '>'}.tif")
    (tmp_path / "labels.csv").write_text("xFalse.tif,0\nxTrue.tif,0\n")
    data = load_images(tmp_path)
    assert data.images.shape == (2, 1, 4, 4)
    assert torch.allclose(data.images[0], data.images[1]) and abs(float(data.images.mean()) - 0.5) < 0.01


def test_float_images_outside_the_unit_box_are_an_error(tmp_path):
    """A float TIFF ('F') in 0..255 was clipped to 1 everywhere: a white image, silently."""
    Image.fromarray(np.full((4, 4), 200.0, np.float32)).save(tmp_path / "x.tif")
    (tmp_path / "labels.csv").write_text("x.tif,0\n")
    with pytest.raises(IntriguingError, match=r"x\.tif.*\[0, 1\]"):
        load_images(tmp_path)


def test_labels_csv_mixing_names_and_indices_without_the_models_names_is_an_error(tmp_path):
    """'cat', 'dog' and '1': numbering the names in sorted order made '1' silently mean 'dog'."""
    for name in "abc":
        _png(tmp_path / f"{name}.png")
    (tmp_path / "labels.csv").write_text("a.png,cat\nb.png,dog\nc.png,1\n")
    with pytest.raises(IntriguingError, match=r"labels\.csv: labels mix class names .*'cat'.* and indices .*'1'"):
        load_images(tmp_path)


def test_class_folders_match_the_models_names_as_class_index_does(tmp_path):
    """'great_white_shark' and 'Cat' name the model's 'great white shark' and 'cat' (as --target does);
    matching exactly only, they fell back to sorted order and were labelled 'dog' and 'great white shark'."""
    _png(tmp_path / "Cat" / "a.png")
    _png(tmp_path / "great_white_shark" / "b.png")
    data = load_images(tmp_path, class_names=["dog", "great white shark", "cat"])
    assert data.labels.tolist() == [2, 1]


def test_a_class_folder_naming_two_of_the_models_classes_is_an_error(tmp_path):
    """ImageNet has two 'crane's (a bird and a machine): a folder 'crane' cannot say which it means."""
    _png(tmp_path / "crane" / "a.png")
    with pytest.raises(IntriguingError, match=r"'crane' \(0, 2\).*several.*index"):
        load_images(tmp_path, class_names=["crane", "dog", "crane"])


def test_class_folders_numbered_from_one_are_an_error_not_a_shift(tmp_path):
    """Folders 1..10 for a 10-class model: '10' is no class index, and the sorted fallback ('1', '10',
    '2', ...) labelled folder '2' as class 2 but folder '1' as 0 and '10' as 1, within range, silently."""
    for k in range(1, 11):
        _png(tmp_path / str(k) / "a.png")
    with pytest.raises(IntriguingError, match=r"class folder\(s\) '10' name none of the model's 10 classes"):
        load_images(tmp_path, class_names=[str(i) for i in range(10)])


def test_class_folders_naming_none_of_the_models_named_classes_are_an_error(tmp_path):
    """Folders 'cat' and 'dog' for an ImageNet-like model were numbered 0 and 1 (its 'tench' and
    'goldfish'), silently; only a model whose classes are bare indices takes the folders' own order."""
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    with pytest.raises(IntriguingError, match=r"'cat', 'dog' name none of the model's 3 classes"):
        load_images(tmp_path, class_names=["tench", "goldfish", "shark"])
    assert load_images(tmp_path, class_names=["0", "1", "2"]).labels.tolist() == [0, 1]


def _wide_striped(tmp_path):
    """A 40x20 (width x height) image: red outer quarters, a green central square."""
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10, 0] = array[:, 30:, 0] = 255
    array[:, 10:30, 1] = 255
    (tmp_path / "a").mkdir()
    Image.fromarray(array).save(tmp_path / "a" / "wide.png")
    return array


def test_images_of_another_shape_are_centre_cropped_not_squashed(tmp_path):
    """A photo of another aspect ratio keeps its proportions: the central region of the target's shape
    is resized, as ImageNet evaluation crops (squashing would distort every object in it)."""
    array = _wide_striped(tmp_path)
    cropped = load_images(tmp_path, size=10).images[0]
    assert cropped[0].max() == 0 and cropped[1].min() == 1  # only the green centre is left
    squashed = load_images(tmp_path, size=10, fit="squash").images[0]
    assert squashed[0, :, 0].min() == 1 and squashed[0, :, 5].max() == 0  # red at the sides, green between
    np.savez(tmp_path / "wide.npz", images=array[None], labels=np.array([0]))
    from_npz = load_images(tmp_path / "wide.npz", size=10)
    assert from_npz.images[0, 0].max() == 0 and from_npz.images[0, 1].min() == 1


def test_an_unknown_fit_is_one_line(tmp_path):
    _wide_striped(tmp_path)
    with pytest.raises(IntriguingError, match="fit: expected 'crop' or 'squash'"):
        load_images(tmp_path, size=10, fit="stretch")
