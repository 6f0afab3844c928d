"""Your own images as tensors: an image folder or a ``.npz``, checked on load.

Two layouts of a folder are understood:

* one subfolder per class (``cats/001.png``, ``dogs/002.jpg``): the model's classes when its names
  are given and the folders name them (``ostrich/`` or ``Great_White_Shark/``: as ``--target``
  matches), else (a model whose classes are bare indices) in sorted order; hidden files skipped, and
  a warning names the images it skips (beside the class folders, or in subfolders of one);
* a flat folder with a labels CSV (``labels.csv`` in it, or any file given as ``labels``) of
  ``filename,label`` rows, a label being a class index or a class name (:mod:`intriguing.image_labels`);
  a warning names the folder's images that the CSV does not list.

Pixels are decoded by :mod:`intriguing.pixels` (EXIF orientation applied, transparency on white,
16-bit images by 65535). A ``.npz`` holds ``images`` (N, C, H, W) or (N, H, W, C) or (N, H, W), uint8
in 0..255, uint16 in 0..65535 or floats in [0, 1], and ``labels`` (N,) indexing its optional
``class_names`` (renumbered into the model's order when they name its classes); an optional ``layout``
(``"NCHW"``, ``"NHWC"`` or ``"NHW"``) says how ``images`` is laid out, and is needed where its shape
reads both ways, e.g. (N, 3, H, 3). It is read without unpickling anything. Every image becomes
float32 in [0, 1]: the box in which the paper's attack (Section 4.1) measures distortion. Problems
are collected and reported together, one clear line each, so a broken folder is fixed in one go.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from intriguing import pixels
from intriguing.errors import IntriguingError
from intriguing.image_labels import (
    MAX_LISTED, Problems, check_listed_once, check_range, csv_class_names, index_names, label_index, model_indices,
    npz_labels, read_csv,
)
from intriguing.pixels import IMAGE_SUFFIXES
from intriguing.records import write_bytes
from intriguing.preprocessing import centre_cropped, resample, size_pair

LABELS_FILE = "labels.csv"
NPZ_ARRAYS = ("images", "labels", "class_names", "layout")  # the only arrays read: any other may hold anything


@dataclass
class ImageSet:
    """Images (N, C, H, W) float32 in [0, 1], labels (N,) int64, and where each image came from."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    files: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set with its tensors on ``device``."""
        return ImageSet(self.images.to(device), self.labels.to(device), self.class_names, self.files, self.source)


def load_images(path: str | os.PathLike, *, size: int | Sequence[int] | None = None, channels: int | None = None,
                class_names: Sequence[str] | None = None, labels: str | os.PathLike | None = None,
                limit: int | None = None, fit: str = "crop") -> ImageSet:
    """Images and labels from a folder (see the module doc) or a ``.npz`` file.

    ``size`` resizes every image (a number or ``(H, W)``; needed when sizes differ); an image of another
    aspect ratio is centre-cropped to that of ``size`` first (``fit="crop"``, as ImageNet evaluation does)
    or resized whole, its proportions lost (``fit="squash"``). ``channels``
    (1 or 3) converts them, else grayscale stays 1 channel and everything else becomes RGB.
    ``class_names`` are the model's, to map names to indices and check labels against.
    ``limit`` keeps the first ``limit`` images (in sorted file order).
    """
    path = Path(path)
    if isinstance(class_names, str):
        raise IntriguingError("class_names: expected a list of names, one per class, got a string")
    if channels not in (None, 1, 3):
        raise IntriguingError(f"channels: expected 1 or 3, got {channels!r}")
    if limit is not None and limit < 1:
        raise IntriguingError(f"limit: expected at least 1 image, got {limit}")
    if fit not in pixels.FITS:
        raise IntriguingError(f"fit: expected 'crop' or 'squash', got {fit!r}")
    if path.is_file() and path.suffix.lower() == ".npz":
        return load_npz(path, size=size, channels=channels, class_names=class_names, limit=limit, fit=fit)
    if not path.is_dir():
        what = "no such folder or file" if not path.exists() else "expected a folder of images or a .npz file"
        raise IntriguingError(f"{path}: {what}")
    entries, names = _folder_entries(path, labels, class_names)
    entries = entries[:limit] if limit else entries
    images = _decode_all(path, [f for f, _ in entries], size_pair(size, "size"), channels, fit)
    tensor = torch.tensor([lab for _, lab in entries], dtype=torch.int64)
    check_range(tensor, names, class_names, str(path), [os.path.relpath(f, path) for f, _ in entries])
    return ImageSet(images, tensor, list(class_names or names), [str(f) for f, _ in entries], str(path))


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise IntriguingError(f"cannot list folder {folder} ({e}); check its permissions") from None


def _images_in(listing: list[Path]) -> list[Path]:
    """Image files by suffix; hidden ones skipped (.DS_Store, macOS's ._name.png)."""
    return [p for p in listing if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]


def _folder_entries(root: Path, labels, class_names) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(file, label)`` pairs and the class names, from subfolders or a labels CSV."""
    csv_path = Path(labels) if labels is not None else root / LABELS_FILE
    if labels is not None or csv_path.is_file():
        return _csv_entries(root, csv_path, class_names)
    listing = _listing(root)
    folders = [p for p in listing if p.is_dir() and not p.name.startswith(".")]
    loose = [p.name for p in _images_in(listing) if p.is_file()]
    if not folders:
        how = (f"found {len(loose)} image(s) but no {LABELS_FILE}; add one with filename,label rows"
               if loose else "it is empty")
        raise IntriguingError(
            f"{root}: expected one subfolder of images per class, or images with a {LABELS_FILE}; {how}"
        )
    if loose:
        warnings.warn(f"{root}: {len(loose)} image(s) beside the class folders are skipped "
                      f"({', '.join(loose[:MAX_LISTED])}); move each into its class folder", stacklevel=3)
    names = [p.name for p in folders]
    index = model_indices(names, class_names, f"{root}: class folder(s)") or list(range(len(names)))
    problems, entries = Problems(str(root)), []
    for folder, label in zip(folders, index):
        entries += [(f, label) for f in _class_files(root, folder, problems)]
    problems.raise_if_any()
    return entries, names


def _class_files(root: Path, folder: Path, problems: Problems) -> list[Path]:
    """The images of one class folder; a broken link or a folder without images is a problem, and
    subfolders (not read: a class is one folder) are warned about."""
    listing = _listing(folder)
    files = [p for p in _images_in(listing) if p.is_file() or p.is_symlink()]
    for broken in (p for p in files if not p.is_file()):
        problems.add(f"{folder.name}/{broken.name} is a link to a missing file")
    files = [p for p in files if p.is_file()]
    subfolders = [p.name for p in listing if p.is_dir() and not p.name.startswith(".")]
    listed = ", ".join(subfolders[:MAX_LISTED])
    if not files:
        why = (f"but subfolder(s) {listed}: if those are the classes, give {folder}" if subfolders
               else f"({', '.join(IMAGE_SUFFIXES)})")
        problems.add(f"class folder {folder.name!r} has no images {why}")
    elif subfolders:
        warnings.warn(f"{root}: class folder {folder.name!r} has subfolder(s) {listed}, whose images are skipped; "
                      f"move them into {folder.name!r} itself", stacklevel=4)
    return files


def _csv_entries(root: Path, csv_path: Path, class_names) -> tuple[list[tuple[Path, int]], list[str]]:
    rows = read_csv(csv_path)
    if not rows:
        raise IntriguingError(f"{csv_path}: no filename,label rows; add one row per image")
    problems = Problems(str(csv_path))
    check_listed_once(rows, problems)
    values = [label_index(row, problems) for row in rows]
    names, lookup = csv_class_names(values, class_names, csv_path)
    entries = []
    for row, value in zip(rows, values):
        file = root / row.name
        if not file.is_file():
            why = "is a link to a missing file" if file.is_symlink() else f"is not in {root}"
            header = ("; a header row names its columns, e.g. filename,label"
                      if row.line == 1 and Path(row.name).suffix.lower() not in IMAGE_SUFFIXES else "")
            problems.add(f"line {row.line}: no image {row.name!r}: it {why}{header}")
        elif isinstance(value, int):
            entries.append((file, value))
        elif value is not None and len(lookup[value]) == 1:
            entries.append((file, lookup[value][0]))
        elif value is not None:
            several = f"names several of the model's classes ({', '.join(map(str, lookup[value]))}); use the index"
            problems.add(f"line {row.line}: label {value!r} " +
                         (several if lookup[value] else "is neither a class index nor a class name"))
    problems.raise_if_any()
    _warn_unlisted(root, csv_path, [file for file, _ in entries])
    return entries, names


def _warn_unlisted(root: Path, csv_path: Path, listed: list[Path]) -> None:
    """Images in the folder that the CSV leaves out are skipped: say so, not silently."""
    known = {os.path.realpath(f) for f in listed}
    unlisted = [p.name for p in _images_in(_listing(root)) if p.is_file() and os.path.realpath(p) not in known]
    if unlisted:
        warnings.warn(f"{len(unlisted)} image(s) in {root} are not in {csv_path.name}, so skipped "
                      f"({', '.join(unlisted[:MAX_LISTED])}); add a row for each to use them", stacklevel=5)


def _decode_all(root: Path, files: list[Path], size: tuple[int, int] | None, channels: int | None,
                fit: str) -> torch.Tensor:
    """Decode (see :mod:`intriguing.pixels`) into one (N, C, H, W) float32 tensor in [0, 1]."""
    problems, decoded = Problems(str(root)), []
    for file in files:
        try:
            decoded.append((file, pixels.read(file, os.path.relpath(file, root))))
        except IntriguingError as e:
            problems.add(str(e))
    problems.raise_if_any()
    if channels is None:
        channels = 1 if all(image.mode in pixels.GREY_MODES for _, image in decoded) else 3
    if size is None:
        _check_same_size(root, decoded)
    return torch.from_numpy(np.stack([pixels.to_array(image, channels, size, fit) for _, image in decoded]))


def _check_same_size(root: Path, decoded: list) -> None:
    sizes = {}
    for file, image in decoded:
        sizes.setdefault(image.size, file)
    if len(sizes) > 1:
        listed = ", ".join(f"{os.path.relpath(f, root)} is {w}x{h}" for (w, h), f in list(sizes.items())[:3])
        raise IntriguingError(
            f"{root}: images of {len(sizes)} different sizes ({listed}); give a size to resize them to"
        )


def load_npz(path: str | os.PathLike, *, size: int | Sequence[int] | None = None, channels: int | None = None,
             class_names: Sequence[str] | None = None, limit: int | None = None, fit: str = "crop") -> ImageSet:
    """Images and labels from a ``.npz`` (keys ``images``, ``labels``, optional ``class_names`` and
    ``layout``), fitted to ``size`` as :func:`load_images` does."""
    path = Path(path)
    arrays = _npz_arrays(path)
    images = _npz_images(path, arrays["images"], _layout(path, arrays["images"].shape, arrays.get("layout")), channels)
    labels, stored = npz_labels(path, arrays["labels"], len(images), _stored_names(path, arrays.get("class_names")))
    if limit:
        images, labels = images[:limit], labels[:limit]
    pair = size_pair(size, "size")
    if pair is not None and tuple(images.shape[-2:]) != pair:
        images = resample(centre_cropped(images, pair) if fit == "crop" else images, pair).clamp(0, 1)
    labels = _to_model_classes(path, labels, stored, class_names)
    names = list(class_names or stored or index_names(int(labels.max()) if len(labels) else -1, f"{path}: labels"))
    files = [f"{path.name}[{i}]" for i in range(len(labels))]
    check_range(labels, names, class_names, str(path), files)
    return ImageSet(images, labels, names, files, str(path))


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays this module reads, never unpickled: unpickling a file runs whatever code it holds."""
    if not zipfile.is_zipfile(path):
        raise IntriguingError(f"{path}: not a .npz file (a zip of .npy arrays, as np.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in NPZ_ARRAYS[:2] if k not in data.files]
            if missing:
                raise IntriguingError(f"{path}: missing array(s) {', '.join(missing)}; found "
                                      f"{', '.join(data.files) or 'none'}; save np.savez(path, images=..., labels=...)")
            return {k: _npz_array(path, data, k) for k in NPZ_ARRAYS if k in data.files}
    except IntriguingError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise IntriguingError(f"{path}: not a readable .npz ({e})") from None


def _npz_array(path: Path, data, key: str) -> np.ndarray:
    try:
        return data[key]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise IntriguingError(f"{path}: array {key!r} holds pickled objects (dtype object), which are never unpickled "
                              "(that could run code); save it as a numeric or text array, e.g. np.stack(...)") from None


def _stored_names(path: Path, array: np.ndarray | None) -> list[str] | None:
    """The file's class names; bytes (from h5py and many converters) read as text."""
    if array is None:
        return None
    if array.ndim != 1:
        raise IntriguingError(f"{path}: class_names: expected a 1-D array of names, one per class, got shape "
                              f"{array.shape}")
    return [c.decode() if isinstance(c, bytes) else str(c) for c in array.tolist()]


LAYOUTS = {"NCHW": (0, 1, 2, 3), "NHWC": (0, 3, 1, 2), "NHW": None}  # each to (N, C, H, W)


def _layout(path: Path, shape: tuple[int, ...], stored: np.ndarray | None) -> str:
    """How ``images`` is laid out: the file's ``layout`` where given, else what its shape allows. A shape
    that reads both ways ((N, 3, H, 3), (N, 1, H, 3), ...) needs ``layout``: guessing would silently
    transpose every image of the other reading."""
    if stored is not None:
        value = stored.item() if stored.size == 1 else stored
        layout = (value.decode() if isinstance(value, bytes) else str(value)).upper()
        if layout not in LAYOUTS:
            raise IntriguingError(f"{path}: layout {str(stored)!r}: expected NCHW, NHWC or NHW (how images is laid out)")
        if not _fits(layout, shape):
            channels = " with C 1 or 3" if layout != "NHW" else ""
            raise IntriguingError(f"{path}: images: shape {shape} is not {layout}{channels}, as its layout says")
        return layout
    possible = [layout for layout in LAYOUTS if _fits(layout, shape)]
    if not possible:
        raise IntriguingError(f"{path}: images: expected (N, C, H, W), (N, H, W, C) or (N, H, W) with C 1 or 3, "
                              f"got shape {shape}")
    if len(possible) > 1:
        raise IntriguingError(f"{path}: images of shape {shape} read as (N, C, H, W) or as (N, H, W, C); say which: "
                              "np.savez(..., layout='NCHW') or layout='NHWC'")
    return possible[0]


def _fits(layout: str, shape: tuple[int, ...]) -> bool:
    if layout == "NHW":
        return len(shape) == 3
    return len(shape) == 4 and shape[layout.index("C")] in (1, 3)


def _npz_images(path: Path, array: np.ndarray, layout: str, channels: int | None) -> torch.Tensor:
    """(N, C, H, W) float32 in [0, 1] from uint8, uint16 or float arrays laid out as ``layout``."""
    array = array[:, None] if layout == "NHW" else array.transpose(LAYOUTS[layout])
    if array.shape[0] == 0:
        raise IntriguingError(f"{path}: images: no images (shape {array.shape})")
    if array.dtype in (np.uint8, np.uint16):
        tensor = torch.from_numpy(array.astype(np.float32) / float(np.iinfo(array.dtype).max))
    elif np.issubdtype(array.dtype, np.floating):
        tensor = torch.from_numpy(array.astype(np.float32))
        if not torch.isfinite(tensor).all():
            raise IntriguingError(f"{path}: images contain NaN or infinite values")
        if tensor.min() < 0 or tensor.max() > 1:
            low, high = float(tensor.min()), float(tensor.max())
            raise IntriguingError(f"{path}: float images must lie in [0, 1], got range [{low:.4g}, {high:.4g}]; "
                                  "store uint8 or divide by 255")
    else:
        raise IntriguingError(f"{path}: images: expected uint8 (0..255), uint16 (0..65535) or float pixels in [0, 1], "
                              f"got dtype {array.dtype}; store 0..255 values as images.astype(np.uint8)")
    if channels is not None and tensor.shape[1] != channels:
        tensor = tensor.expand(-1, 3, -1, -1).contiguous() if channels == 3 else _gray(tensor)
    return tensor


def _to_model_classes(path: Path, labels: torch.Tensor, stored: list[str] | None, class_names) -> torch.Tensor:
    """Labels index the file's own ``class_names``: renumbered into the model's order when the model
    names the same classes differently ordered, so that no label shifts to another class."""
    if not stored or not class_names or stored == [str(c) for c in class_names]:
        return labels
    index = model_indices(stored, class_names, f"{path}: class_names")
    if index is None:
        return labels
    check_range(labels, stored, None, str(path), [f"{path.name}[{i}]" for i in range(len(labels))])
    return torch.tensor(index, dtype=torch.int64)[labels]


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as Pillow's ``convert("L")`` computes it."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True)


# --- writing images ------------------------------------------------------------------------------


def quantized(images: torch.Tensor) -> torch.Tensor:
    """``images`` rounded to 8 bits, as a PNG stores them: what a saved adversarial image really is."""
    return (images.detach().float().clamp(0, 1) * 255).round() / 255


def png_bytes(image: torch.Tensor) -> bytes:
    """One (C, H, W) image in [0, 1] encoded as an 8-bit grey or RGB PNG."""
    from PIL import Image

    array = (quantized(image).cpu().numpy() * 255).astype(np.uint8)
    picture = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_pngs(folder: str | os.PathLike, images: torch.Tensor, names: Sequence[str]) -> list[Path]:
    """Write ``images`` (N, C, H, W) as ``folder/<name>.png``, each atomically; returns the paths."""
    if len(names) != len(images):
        raise IntriguingError(f"names: expected one file name per image ({len(images)}), got {len(names)}")
    paths = [Path(folder) / f"{name}.png" for name in names]
    for path, image in zip(paths, images):
        write_bytes(path, png_bytes(image))
    return paths


def write_npz(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
              **arrays: torch.Tensor) -> Path:
    """An :func:`load_npz`-readable file (float32 images (N, C, H, W), int64 labels, class names) plus extra
    ``arrays``."""
    buffer = io.BytesIO()
    extra = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    np.savez_compressed(buffer, images=images.detach().float().cpu().numpy(),
                        labels=labels.detach().cpu().numpy().astype(np.int64),
                        class_names=np.array([str(c) for c in class_names]), layout=np.array("NCHW"), **extra)
    write_bytes(path, buffer.getvalue())
    return Path(path)
