"""Labels: the labels CSV's variants and the .npz's label and class-name arrays, each either read right or
refused in one line (what, where, how to fix); never a label silently shifted to another class."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intriguing.errors import IntriguingError
from intriguing.images import load_images


def _folder(root: Path, csv: str | bytes, files=("a.png", "b.png")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        Image.new("L", (4, 4)).save(root / name)
    (root / "labels.csv").write_bytes(csv if isinstance(csv, bytes) else csv.encode())
    return root


@pytest.mark.parametrize("csv", [
    "label,filename\n1,a.png\n0,b.png\n",
    "filename,label,notes\na.png,1,blurry\nb.png,0,\n",
    "image_id,category\na.png,1\nb.png,0\n",
    " File , Class \n a.png , 1 \nb.png,0\n",
    "a.png;1\nb.png;0\n",
    "filename\tlabel\na.png\t1\nb.png\t0\n",
    '"a.png","1"\n"b.png","0"\n',
])
def test_labels_csv_variants(tmp_path, csv):
    """Bugs: a header naming its columns in another order, or with extra columns, gave 'no image
    'label'' or 'expected 2 columns'; 'image_id,category' was read as a data row; Excel's semicolon and
    tab separated files were refused."""
    assert load_images(_folder(tmp_path, csv)).labels.tolist() == [1, 0]


def test_a_header_without_a_label_column_says_which_columns_it_needs(tmp_path):
    with pytest.raises(IntriguingError, match=r"labels\.csv: the header row names no label column \(one of label, labels, class"):
        load_images(_folder(tmp_path, "filename,notes\na.png,x\n"))
    with pytest.raises(IntriguingError, match=r"expected 2 columns \(filename,label\).*or a header row"):
        load_images(_folder(tmp_path, "a.png,1,x\n"))


def test_duplicate_rows_are_an_error(tmp_path):
    """A bug: a file listed twice was loaded twice (counted twice by every rate), with either label."""
    with pytest.raises(IntriguingError, match=r"line 2: 'a.png' is listed again \(first on line 1\)"):
        load_images(_folder(tmp_path, "a.png,1\na.png,0\nb.png,0\n"))


def test_lines_are_counted_in_the_file_not_in_records(tmp_path):
    """A bug: a quoted cell spanning two lines shifted every later line number given in an error by one."""
    with pytest.raises(IntriguingError, match=r"line 4: no image 'missing.png'"):
        load_images(_folder(tmp_path, 'filename,label,notes\na.png,1,"two\nlines"\nmissing.png,0,\n'))


@pytest.mark.parametrize("label, index", [("1.0", 1), ("+1", 1), ("01", 1)])
def test_numeric_labels_written_otherwise_are_indices(tmp_path, label, index):
    """A bug: '1.0' (pandas writes ints so when a column had a gap) and '+1' were taken as class *names*:
    alone in the CSV they became class 0, silently."""
    data = load_images(_folder(tmp_path, f"a.png,{label}\nb.png,0\n"))
    assert data.labels.tolist() == [index, 0]


@pytest.mark.parametrize("label, message", [
    ("-1", r"line 1: label '-1' is negative; class indices start at 0"),
    ("", r"line 1: no label for 'a.png'"),
    ("1.5", r"line 1: label '1.5' is not a whole class index"),
])
def test_bad_label_cells_are_named_by_line(tmp_path, label, message):
    """Bugs: an empty label became a class named '' (index 0); -1 gave 'indices must lie in [0, -1]'."""
    with pytest.raises(IntriguingError, match=message):
        load_images(_folder(tmp_path, f"a.png,{label}\nb.png,0\n"))


def test_images_missing_from_the_csv_are_warned_about(tmp_path):
    """A bug: images in the folder but not in the CSV were skipped silently."""
    _folder(tmp_path, "a.png,0\n", files=("a.png", "b.png", "c.png"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(load_images(tmp_path)) == 1
    assert any("2 image(s) in" in str(w.message) and "not in labels.csv" in str(w.message)
               and "(b.png, c.png)" in str(w.message) for w in caught)


def test_csv_names_match_the_models_classes_as_folders_do(tmp_path):
    """A bug: 'Cat' and 'great_white_shark' named the model's 'cat' and 'great white shark' as folders but
    not in the CSV ('neither a class index nor a class name')."""
    data = load_images(_folder(tmp_path, "a.png,Cat\nb.png,great_white_shark\n"),
                       class_names=["dog", "great white shark", "cat"])
    assert data.labels.tolist() == [2, 1]


def test_a_csv_that_is_not_utf8_says_how_to_save_it(tmp_path):
    with pytest.raises(IntriguingError, match="labels.csv: not UTF-8 text .*save it as CSV UTF-8"):
        load_images(_folder(tmp_path, "a.png,caf\xe9\n".encode("latin-1")))


def test_an_absurd_label_index_is_an_error_not_a_huge_class_list(tmp_path):
    """A bug: a label such as 10**12 built a list of 10**12 class names: the process died of memory."""
    with pytest.raises(IntriguingError, match=r"class index 1000000000000 .*at most 100000 classes"):
        load_images(_folder(tmp_path, "a.png,1000000000000\nb.png,0\n"))
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 10**12]))
    with pytest.raises(IntriguingError, match=r"class index 1000000000000 .*at most 100000 classes"):
        load_images(tmp_path / "d.npz")


# --- .npz ------------------------------------------------------------------------------------------


IMAGES = np.zeros((3, 4, 4, 3), np.uint8)


@pytest.mark.parametrize("labels, expected", [
    (np.array([0.0, 2.0, 1.0]), [0, 2, 1]),
    (np.eye(3)[[0, 2, 1]], [0, 2, 1]),
    (np.eye(3, dtype=np.int64)[[0, 2, 1]], [0, 2, 1]),
    (np.array([[0], [2], [1]]), [0, 2, 1]),
])
def test_npz_labels_as_floats_one_hot_or_a_column(tmp_path, labels, expected):
    """Whole-number floats (Keras), one-hot rows and an (N, 1) column are class indices written otherwise."""
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=labels)
    assert load_images(tmp_path / "d.npz").labels.tolist() == expected


def test_npz_labels_as_names(tmp_path):
    """Labels stored as names (text or bytes) index the file's class_names, else the model's names,
    else their own sorted names; they were refused ('expected integer class indices')."""
    for labels in (np.array(["dog", "cat", "dog"]), np.array([b"dog", b"cat", b"dog"])):
        np.savez(tmp_path / "d.npz", images=IMAGES, labels=labels)
        data = load_images(tmp_path / "d.npz")
        assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [1, 0, 1]
        assert load_images(tmp_path / "d.npz", class_names=["bird", "Dog", "cat"]).labels.tolist() == [1, 2, 1]
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=np.array(["dog", "cat", "dog"]),
             class_names=np.array(["dog", "cat"]))
    assert load_images(tmp_path / "d.npz").labels.tolist() == [0, 1, 0]


@pytest.mark.parametrize("labels, message", [
    (np.array([0.0, 1.5, 1.0]), r"labels: 1\.5 \(at index 1\) is not a whole class index"),
    (np.array([[0.7, 0.3], [0.2, 0.8], [1, 0]]), r"labels: \(3, 2\) rows are not one-hot"),
    (np.array([True, False, True]), "labels: expected class indices .*got booleans"),
    (np.array([0, 1, 2**63 + 5], np.uint64), r"class index 9223372036854775813 .*at most 100000"),
])
def test_npz_labels_that_are_no_class_indices(tmp_path, labels, message):
    """uint64 labels past int64 wrapped to negatives: the error showed range [-9223372036854775803, 1]."""
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=labels)
    with pytest.raises(IntriguingError, match=message):
        load_images(tmp_path / "d.npz")


@pytest.mark.parametrize("names", [np.array("abc"), np.array([["a", "b", "c"]])])
def test_npz_class_names_must_be_a_list(tmp_path, names):
    """A bug: class_names stored as one string ('abc') became the classes a, b, c; a (1, 3) array one
    class named "['a', 'b', 'c']"."""
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=np.array([0, 1, 2]), class_names=names)
    with pytest.raises(IntriguingError, match=r"class_names: expected a 1-D array of names"):
        load_images(tmp_path / "d.npz")


def test_npz_images_as_uint16_scale_by_65535_and_ints_say_how_to_store_them(tmp_path):
    np.savez(tmp_path / "u.npz", images=np.full((1, 2, 2), 32768, np.uint16), labels=np.array([0]))
    assert abs(float(load_images(tmp_path / "u.npz").images.mean()) - 32768 / 65535) < 1e-7
    np.savez(tmp_path / "i.npz", images=np.full((1, 2, 2), 200, np.int64), labels=np.array([0]))
    with pytest.raises(IntriguingError, match=r"images: expected uint8 .*got dtype int64; .*astype\(np\.uint8\)"):
        load_images(tmp_path / "i.npz")
    np.savez(tmp_path / "e.npz", images=np.zeros((0, 2, 2), np.uint8), labels=np.zeros(0, np.int64))
    with pytest.raises(IntriguingError, match="images: no images"):
        load_images(tmp_path / "e.npz")


def test_npz_files_that_are_not_npz(tmp_path):
    """A text file named .npz was reported as 'pickled (object) data'; '.NPZ' was 'not a .npz'."""
    (tmp_path / "t.npz").write_text("not a zip\n")
    with pytest.raises(IntriguingError, match=r"t\.npz: not a \.npz file \(a zip of \.npy arrays"):
        load_images(tmp_path / "t.npz")
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=np.array([0, 1, 2]))
    (tmp_path / "d.npz").rename(tmp_path / "D.NPZ")
    assert len(load_images(tmp_path / "D.NPZ")) == 3


def test_npz_object_arrays_are_never_unpickled(tmp_path):
    """An object array in 'images' is named (it is never unpickled); one in an unused array, e.g.
    metadata, refused the whole file."""
    np.savez(tmp_path / "o.npz", images=np.array([np.zeros((2, 2)), np.zeros((3, 3))], dtype=object),
             labels=np.array([0, 1]))
    with pytest.raises(IntriguingError, match=r"o\.npz: array 'images' holds pickled objects .*never unpickled"):
        load_images(tmp_path / "o.npz")
    np.savez(tmp_path / "m.npz", images=IMAGES, labels=np.array([0, 1, 2]), meta=np.array([{"a": 1}], dtype=object))
    assert len(load_images(tmp_path / "m.npz")) == 3
    assert zipfile.is_zipfile(tmp_path / "m.npz")


def test_labels_past_the_models_classes_name_an_image_and_the_fix(tmp_path):
    """'class indices must lie in [0, 2], got range [0, 3]' said neither which image nor how to fix it
    (here: a fourth class folder for a three-class model)."""
    for name in "abcd":
        (tmp_path / name).mkdir()
        Image.new("L", (4, 4)).save(tmp_path / name / "x.png")
    with pytest.raises(IntriguingError, match=r"must lie in \[0, 2\], got range \[0, 3\] \(.*d/x\.png: 3\); give each "
                                              r"image a label of the model's 3 classes, or use a model with those"):
        load_images(tmp_path, class_names=["0", "1", "2"])
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=np.array([0, 7, 1]))
    with pytest.raises(IntriguingError, match=r"got range \[0, 7\] \(d\.npz\[1\]: 7\)"):
        load_images(tmp_path / "d.npz", class_names=["0", "1", "2"])
