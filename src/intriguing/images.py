"""Your own images as tensors: an image folder or a ``.npz``, checked on load.

Two layouts of a folder are understood:

* one subfolder per class (``cats/001.png``, ``dogs/002.jpg``): the model's classes when its names
  are given and the folders name them (``ostrich/`` or ``Great_White_Shark/``: as ``--target``
  matches), else (a model whose classes are bare indices) in sorted order; hidden files skipped;
* a flat folder with a labels CSV (``labels.csv`` in it, or any file given as ``labels``) of
  ``filename,label`` rows, a label being a class index or a class name.

A ``.npz`` holds ``images`` (N, C, H, W) or (N, H, W, C) or (N, H, W), uint8 in 0..255 or floats in
[0, 1], and ``labels`` (N,) indexing its optional ``class_names`` (renumbered into the model's
order when they name its classes). Every image becomes float32 in [0, 1]:
the box in which the paper's attack (Section 4.1) measures distortion. Problems are collected and
reported together, one clear line each, so a broken folder is fixed in one go.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from intriguing.errors import IntriguingError, check_labels
from intriguing.models import class_matches, name_key
from intriguing.records import write_bytes
from intriguing.preprocessing import resample, size_pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LABELS_FILE = "labels.csv"
MAX_LISTED = 8  # problems listed in one error; the rest are counted


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


class _Problems:
    """Collects the problems of one load and raises them together as one error."""

    def __init__(self, where: str):
        self.where, self.lines = where, []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        shown = self.lines[:MAX_LISTED]
        more = f"; and {len(self.lines) - MAX_LISTED} more" if len(self.lines) > MAX_LISTED else ""
        raise IntriguingError(f"{self.where}: {len(self.lines)} problem(s): " + "; ".join(shown) + more)


def load_images(path: str | os.PathLike, *, size: int | Sequence[int] | None = None, channels: int | None = None,
                class_names: Sequence[str] | None = None, labels: str | os.PathLike | None = None,
                limit: int | None = None) -> ImageSet:
    """Images and labels from a folder (see the module doc) or a ``.npz`` file.

    ``size`` resizes every image (a number or ``(H, W)``; needed when sizes differ); ``channels``
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
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path, size=size, channels=channels, class_names=class_names, limit=limit)
    if not path.is_dir():
        what = "no such folder or file" if not path.exists() else "expected a folder of images or a .npz file"
        raise IntriguingError(f"{path}: {what}")
    entries, names = _folder_entries(path, labels, class_names)
    entries = entries[:limit] if limit else entries
    images = _decode_all(path, [f for f, _ in entries], size_pair(size, "size"), channels)
    tensor = torch.tensor([lab for _, lab in entries], dtype=torch.int64)
    _check_range(tensor, names, class_names, str(path))
    return ImageSet(images, tensor, list(class_names or names), [str(f) for f, _ in entries], str(path))


def _folder_entries(root: Path, labels, class_names) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(file, label)`` pairs and the class names, from subfolders or a labels CSV."""
    csv_path = Path(labels) if labels is not None else root / LABELS_FILE
    if labels is not None or csv_path.is_file():
        return _csv_entries(root, csv_path, class_names)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        how = (f"found {len(loose)} image(s) but no {LABELS_FILE}; add one with filename,label rows"
               if loose else "it is empty")
        raise IntriguingError(
            f"{root}: expected one subfolder of images per class, or images with a {LABELS_FILE}; {how}"
        )
    names = [p.name for p in folders]
    index = _model_indices(names, class_names, f"{root}: class folder(s)") or list(range(len(names)))
    problems, entries = _Problems(str(root)), []
    for folder, label in zip(folders, index):
        files = sorted(p for p in folder.iterdir()  # hidden files: .DS_Store, macOS's ._name.png
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            problems.add(f"class folder {folder.name!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        entries += [(f, label) for f in files]
    problems.raise_if_any()
    return entries, names


def _model_indices(names: Sequence[str], class_names: Sequence[str] | None, what: str) -> list[int] | None:
    """The model's class index of each of the data's class ``names`` (matched as ``class_index`` does:
    exactly, then ignoring case, spaces and underscores, then as an index), or ``None`` when the model's
    classes are bare indices and none is named (the data's own numbering then stands). Any other
    mismatch is an error: every numbering would silently mislabel some images."""
    if not class_names:
        return None
    model_names = [str(c) for c in class_names]
    keys = [name_key(c) for c in model_names]  # computed once: ImageNet has 1000 classes
    found = {name: class_matches(model_names, name, keys) for name in names}
    ambiguous = [f"{n!r} ({', '.join(map(str, m))})" for n, m in found.items() if len(m) > 1]
    if ambiguous:
        raise IntriguingError(f"{what} {', '.join(ambiguous[:MAX_LISTED])} name several of the model's classes; "
                              "rename each to the index of the class it means")
    unmatched = [n for n in names if not found[n]]
    if not unmatched:
        return [found[n][0] for n in names]
    if len(unmatched) < len(names) or model_names != [str(i) for i in range(len(model_names))]:
        listed = ", ".join(repr(n) for n in unmatched[:MAX_LISTED])
        others = " while the others do" if len(unmatched) < len(names) else ""
        raise IntriguingError(f"{what} {listed} name none of the model's {len(class_names)} classes{others}; rename "
                              "them to the model's class names (or indices), or use a model with those classes")
    return None


def _csv_entries(root: Path, csv_path: Path, class_names) -> tuple[list[tuple[Path, int]], list[str]]:
    rows = _read_csv(csv_path)
    problems = _Problems(str(csv_path))
    text_labels = [label for _, label, _ in rows]
    names = _csv_class_names(text_labels, class_names, csv_path)
    lookup = {n: i for i, n in reversed(list(enumerate(names)))}
    entries = []
    for name, label, line in rows:
        file = root / name
        if not file.is_file():
            problems.add(f"line {line}: no image {name!r} in {root}")
        elif label.lstrip("-").isdigit():
            entries.append((file, int(label)))
        elif label in lookup:
            entries.append((file, lookup[label]))
        else:
            problems.add(f"line {line}: label {label!r} is neither a class index nor a class name")
    problems.raise_if_any()
    if not entries:
        raise IntriguingError(f"{csv_path}: no filename,label rows")
    return entries, names


def _read_csv(csv_path: Path) -> list[tuple[str, str, int]]:
    """``(filename, label, line number)`` rows; a header row (``filename,label``) is skipped."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            raw = [(row, n) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise IntriguingError(f"{csv_path}: cannot read the labels CSV ({e})") from None
    bad = [n for row, n in raw if len(row) != 2]
    if bad:
        raise IntriguingError(f"{csv_path}: expected 2 columns (filename,label) on every line; lines {bad[:5]} differ")
    rows = [(row[0].strip(), row[1].strip(), n) for row, n in raw]
    if rows and rows[0][0].lower() in ("filename", "file", "path", "image"):
        rows = rows[1:]
    return rows


def _csv_class_names(labels: list[str], class_names, csv_path: Path) -> list[str]:
    """The model's names if given; else sorted label names, or indices when every label is a number
    (a mix of both has no numbering to follow)."""
    if class_names:
        return [str(c) for c in class_names]
    named = sorted({label for label in labels if not label.lstrip("-").isdigit()})
    numbers = sorted({label for label in labels if label.lstrip("-").isdigit()}, key=int)
    if named and numbers:
        raise IntriguingError(f"{csv_path}: labels mix class names ({', '.join(map(repr, named[:3]))}) and indices "
                              f"({', '.join(map(repr, numbers[:3]))}); use one or the other, or give the model's class names")
    if named:
        return named
    top = max((int(label) for label in labels), default=-1)
    return [str(i) for i in range(top + 1)]


def _decode_all(root: Path, files: list[Path], size: tuple[int, int] | None, channels: int | None) -> torch.Tensor:
    """Decode with Pillow into one (N, C, H, W) float32 tensor in [0, 1]."""
    from PIL import Image, UnidentifiedImageError  # Pillow is needed only for image folders

    problems, decoded = _Problems(str(root)), []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                decoded.append((file, image.copy()))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            problems.add(f"cannot read image {file.relative_to(root)} ({type(e).__name__}: {e})")
    problems.raise_if_any()
    if channels is None:
        channels = 1 if all(im.mode in ("1", "L", "I", "F") or im.mode.startswith("I;16") for _, im in decoded) else 3
    if size is None:
        _check_same_size(root, decoded)
    arrays = []
    for file, image in decoded:
        try:
            arrays.append(_to_array(image, channels, size))
        except IntriguingError as e:
            problems.add(f"image {file.relative_to(root)}: {e}")
    problems.raise_if_any()
    return torch.from_numpy(np.stack(arrays))


def _check_same_size(root: Path, decoded: list) -> None:
    sizes = {}
    for file, image in decoded:
        sizes.setdefault(image.size, file)
    if len(sizes) > 1:
        listed = ", ".join(f"{f.relative_to(root)} is {w}x{h}" for (w, h), f in list(sizes.items())[:3])
        raise IntriguingError(
            f"{root}: images of {len(sizes)} different sizes ({listed}); give a size to resize them to"
        )


def _to_array(image, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (C, H, W) float32 in [0, 1]."""
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16-bit (either byte order) or float grey
        top = 1.0 if image.mode == "F" else 65535.0
        array = np.asarray(image, dtype=np.float32) / top
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise IntriguingError(f"{image.mode} pixels must lie in [0, {top:g}], got [{array.min() * top:.4g}, "
                                  f"{array.max() * top:.4g}]; save it as 8-bit, or scale it to [0, {top:g}]")
        image = Image.fromarray(np.round(array * 255.0).astype(np.uint8))
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()


def load_npz(path: str | os.PathLike, *, size: int | Sequence[int] | None = None, channels: int | None = None,
             class_names: Sequence[str] | None = None, limit: int | None = None) -> ImageSet:
    """Images and labels from a ``.npz`` (keys ``images``, ``labels``, optional ``class_names``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise IntriguingError(f"{path}: not a readable .npz without pickled objects ({e})") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise IntriguingError(f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(arrays) or 'none'}")
    images = _npz_images(path, arrays["images"], channels)
    labels = _npz_labels(path, arrays["labels"], len(images))
    if limit:
        images, labels = images[:limit], labels[:limit]
    pair = size_pair(size, "size")
    if pair is not None and tuple(images.shape[-2:]) != pair:
        images = resample(images, pair).clamp(0, 1)
    stored = [c.decode() if isinstance(c, bytes) else str(c)  # bytes: from h5py and many converters
              for c in arrays["class_names"].tolist()] if "class_names" in arrays else None
    labels = _to_model_classes(path, labels, stored, class_names)
    names = list(class_names or stored or [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)])
    _check_range(labels, names, class_names, str(path))
    return ImageSet(images, labels, names, [f"{path.name}[{i}]" for i in range(len(labels))], str(path))


def _npz_images(path: Path, array: np.ndarray, channels: int | None) -> torch.Tensor:
    """(N, C, H, W) float32 in [0, 1] from uint8 or float arrays in NCHW, NHWC or NHW layout."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[0] == 0 or array.shape[1] not in (1, 3):
        raise IntriguingError(f"{path}: images: expected (N, C, H, W), (N, H, W, C) or (N, H, W) with C 1 or 3, "
                              f"got shape {array.shape}")
    if array.dtype == np.uint8:
        tensor = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif np.issubdtype(array.dtype, np.floating):
        tensor = torch.from_numpy(array.astype(np.float32))
        if not torch.isfinite(tensor).all():
            raise IntriguingError(f"{path}: images contain NaN or infinite values")
        if tensor.min() < 0 or tensor.max() > 1:
            low, high = float(tensor.min()), float(tensor.max())
            raise IntriguingError(f"{path}: float images must lie in [0, 1], got range [{low:.4g}, {high:.4g}]; "
                                  "store uint8 or divide by 255")
    else:
        raise IntriguingError(f"{path}: images: expected uint8 or float pixels, got dtype {array.dtype}")
    if channels is not None and tensor.shape[1] != channels:
        tensor = tensor.expand(-1, 3, -1, -1).contiguous() if channels == 3 else _gray(tensor)
    return tensor


def _to_model_classes(path: Path, labels: torch.Tensor, stored: list[str] | None, class_names) -> torch.Tensor:
    """Labels index the file's own ``class_names``: renumbered into the model's order when the model
    names the same classes differently ordered, so that no label shifts to another class."""
    if not stored or not class_names or stored == [str(c) for c in class_names]:
        return labels
    index = _model_indices(stored, class_names, f"{path}: class_names")
    if index is None:
        return labels
    check_labels(labels, f"{path}: labels", len(labels), len(stored))
    return torch.tensor(index, dtype=torch.int64)[labels]


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as Pillow's ``convert("L")`` computes it."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True)


def _npz_labels(path: Path, array: np.ndarray, n: int) -> torch.Tensor:
    if not np.issubdtype(array.dtype, np.integer):
        raise IntriguingError(f"{path}: labels: expected integer class indices, got dtype {array.dtype}")
    if array.shape != (n,):
        raise IntriguingError(f"{path}: labels: expected shape ({n},) to match {n} images, got {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


def _check_range(labels: torch.Tensor, names: Sequence[str], model_names, where: str) -> None:
    """Every label must name a class: of the model when its names are given, else of the data."""
    check_labels(labels, f"{where}: labels", len(labels), len(model_names) if model_names else len(names))


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
    """An :func:`load_npz`-readable file (float32 images, int64 labels, class names) plus extra ``arrays``."""
    buffer = io.BytesIO()
    extra = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    np.savez_compressed(buffer, images=images.detach().float().cpu().numpy(),
                        labels=labels.detach().cpu().numpy().astype(np.int64),
                        class_names=np.array([str(c) for c in class_names]), **extra)
    write_bytes(path, buffer.getvalue())
    return Path(path)
