"""Which class each of your images is: a labels CSV's rows, a ``.npz``'s labels array, and the data's
class names matched to the model's. The paper's attack (Section 4.1) starts from correctly classified
examples and its error rates count labels, so a label silently shifted to another class corrupts every
number; each label here is read exactly or refused in one line (what, where, how to fix).

A labels CSV is ``filename,label`` rows, separated by commas (or semicolons or tabs, as some spreadsheets
save), with an optional header row. A header that names its columns (``filename``/``file``/``path``/
``image``..., ``label``/``class``/``category``...) may order them freely and add others.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from intriguing.errors import IntriguingError, check_labels
from intriguing.models import class_matches, name_key

MAX_LISTED = 8  # problems listed in one error; the rest are counted
MAX_CLASSES = 100_000  # above any real classifier's (ImageNet-21k: 21,841): a larger index is a mistake
FILE_COLUMNS = ("filename", "file", "file_name", "fname", "path", "filepath", "image", "image_name", "image_id", "img")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "category", "target", "y")
WHOLE = re.compile(r"\+?\d+(\.0*)?")  # 1, +1, 01, 1.0 (pandas writes 1.0 when a column had a gap)
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class Problems:
    """Collects the problems of one load and raises them together as one error: a broken folder is
    fixed in one go."""

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


@dataclass(frozen=True)
class Row:
    """One labels CSV row: the image's file name (relative to the folder), its label text, its line."""

    name: str
    label: str
    line: int


def read_csv(csv_path: Path) -> list[Row]:
    """The rows of a labels CSV, header skipped."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise IntriguingError(f"{csv_path}: not UTF-8 text ({e}); save it as CSV UTF-8") from None
    except OSError as e:
        raise IntriguingError(f"{csv_path}: cannot read the labels CSV ({e})") from None
    try:
        raw = [(row, n) for row, n in _rows_and_lines(text) if any(c.strip() for c in row)]
    except csv.Error as e:
        raise IntriguingError(f"{csv_path}: not a readable CSV ({e}); write one filename,label row per image") from None
    columns = _header_columns([c.strip().lower() for c in raw[0][0]], csv_path) if raw else None
    if columns:
        raw = raw[1:]
    file_col, label_col = columns or (0, 1)
    short = [n for row, n in raw if len(row) <= max(file_col, label_col) or (not columns and len(row) != 2)]
    if short:
        raise IntriguingError(f"{csv_path}: expected 2 columns (filename,label) on every line, or a header row naming "
                              f"the filename and label columns; lines {short[:5]} differ")
    return [Row(row[file_col].strip(), row[label_col].strip(), n) for row, n in raw]


def _rows_and_lines(text: str) -> Iterator[tuple[list[str], int]]:
    """Each record with the line it starts on: a quoted cell may span lines, so records are not lines."""
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text))
    line = 1
    for row in reader:
        yield row, line
        line = reader.line_num + 1


def _delimiter(text: str) -> str:
    """Commas, unless the first line has none but a semicolon (spreadsheets where ',' is the decimal
    mark) or a tab."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return next((d for d in ";\t" if "," not in first and d in first), ",")


def _header_columns(cells: list[str], csv_path: Path) -> tuple[int, int] | None:
    """The (filename, label) column indices a header row names, or ``None`` when the row is data."""
    files = [i for i, c in enumerate(cells) if c in FILE_COLUMNS]
    labels = [i for i, c in enumerate(cells) if c in LABEL_COLUMNS]
    if not files and not labels:
        return None
    if not files or not labels:
        missing, names = ("filename", FILE_COLUMNS) if not files else ("label", LABEL_COLUMNS)
        raise IntriguingError(f"{csv_path}: the header row names no {missing} column (one of {', '.join(names)}); "
                              f"it has {', '.join(cells)}")
    return files[0], labels[0]


def check_listed_once(rows: list[Row], problems: Problems) -> None:
    """An image listed twice would be counted twice by every rate, and with two labels one is wrong."""
    first = {}
    for row in rows:
        key = os.path.normpath(row.name)
        if key in first:
            problems.add(f"line {row.line}: {row.name!r} is listed again (first on line {first[key]}); "
                         "list each image once")
        first.setdefault(key, row.line)


def label_index(row: Row, problems: Problems) -> int | str | None:
    """A row's class index, or its label as a class name (``str``), or ``None`` after adding a problem."""
    label = row.label
    if not label:
        problems.add(f"line {row.line}: no label for {row.name!r}")
    elif WHOLE.fullmatch(label):
        return int(label.split(".")[0])
    elif NUMBER.fullmatch(label):
        why = "is negative; class indices start at 0" if label.startswith("-") else "is not a whole class index"
        problems.add(f"line {row.line}: label {label!r} {why}")
    else:
        return label
    return None


def csv_class_names(values: list, class_names, csv_path: Path) -> tuple[list[str], dict[str, list[int]]]:
    """The class names, and the class indices each name label may mean: the model's names (matched as
    folders are) if given; else sorted label names, or indices when every label is a number (a mix of
    both has no numbering to follow)."""
    named = sorted({v for v in values if isinstance(v, str)})
    numbers = sorted({v for v in values if isinstance(v, int)})
    if class_names:
        return [str(c) for c in class_names], matches(named, class_names)
    if named and numbers:
        raise IntriguingError(f"{csv_path}: labels mix class names ({', '.join(map(repr, named[:3]))}) and indices "
                              f"({', '.join(map(repr, map(str, numbers[:3])))}); use one or the other, or give the "
                              "model's class names")
    if named:
        return named, {name: [i] for i, name in enumerate(named)}
    return index_names(max(numbers, default=-1), f"{csv_path}: labels"), {}


def index_names(top: int, where: str) -> list[str]:
    """Class names ``"0"`` to ``str(top)``, for data whose labels are bare indices."""
    if top >= MAX_CLASSES:
        raise IntriguingError(f"{where}: class index {top} is no class of any model (at most {MAX_CLASSES} "
                              "classes); labels are class indices 0, 1, 2, ...")
    return [str(i) for i in range(top + 1)]


def model_indices(names: Sequence[str], class_names: Sequence[str] | None, what: str) -> list[int] | None:
    """The model's class index of each of the data's class ``names`` (matched as ``class_index`` does:
    exactly, then ignoring case, spaces and underscores, then as an index), or ``None`` when the model's
    classes are bare indices and none is named (the data's own numbering then stands). Any other
    mismatch is an error: every numbering would silently mislabel some images."""
    if not class_names:
        return None
    model_names = [str(c) for c in class_names]
    found = matches(names, class_names)
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


def matches(names: Sequence[str], class_names: Sequence) -> dict[str, list[int]]:
    """The model's class indices each of ``names`` may mean (:func:`~intriguing.models.class_matches`)."""
    model_names = [str(c) for c in class_names]
    keys = [name_key(c) for c in model_names]  # computed once: ImageNet has 1000 classes
    return {name: class_matches(model_names, name, keys) for name in names}


def npz_labels(path: Path, array: np.ndarray, n: int, stored: list[str] | None) -> tuple[torch.Tensor, list[str] | None]:
    """A ``.npz``'s labels as class indices, and its class names (``stored``, or the sorted names its
    labels give when they are text). Class indices may be whole floats, one-hot rows or an (N, 1) column."""
    where = f"{path}: labels"
    if array.ndim == 2 and array.shape[0] == n:
        array = array[:, 0] if array.shape[1] == 1 else _one_hot(array, where)
    if array.shape != (n,):
        raise IntriguingError(f"{where}: expected shape ({n},) to match {n} images, got {array.shape}")
    if array.dtype.kind in "US":
        return _named_labels(array, stored, where)
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        got = "booleans" if array.dtype.kind == "b" else f"dtype {array.dtype}"
        raise IntriguingError(f"{where}: expected class indices (integers), got {got}; store them as integers")
    whole = np.isfinite(array) & (array == np.round(array)) if array.dtype.kind == "f" else np.ones(n, bool)
    if not whole.all():
        bad = int(np.flatnonzero(~whole)[0])
        raise IntriguingError(f"{where}: {array[bad]:g} (at index {bad}) is not a whole class index; "
                              "store integer class indices")
    if n and array.max() >= MAX_CLASSES:
        index_names(int(array.max()), where)
    return torch.from_numpy(array.astype(np.int64)), stored


def _one_hot(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind in "iufb" and np.isin(array, (0, 1)).all() and (array.sum(1) == 1).all():
        return array.argmax(1)
    raise IntriguingError(f"{where}: {array.shape} rows are not one-hot (a single 1 per row); store one class "
                          "index per image")


def _named_labels(array: np.ndarray, stored: list[str] | None, where: str) -> tuple[torch.Tensor, list[str]]:
    """Labels given as class names: indices into the file's class names, else into their sorted names."""
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in array.tolist()]
    names = stored or sorted(set(labels))
    lookup = {name: i for i, name in reversed(list(enumerate(names)))}
    unknown = sorted(set(labels) - set(lookup))
    if unknown:
        raise IntriguingError(f"{where}: {', '.join(map(repr, unknown[:MAX_LISTED]))} name none of its "
                              f"class_names; add them there, or store class indices")
    return torch.tensor([lookup[label] for label in labels], dtype=torch.int64), names


def check_range(labels: torch.Tensor, names: Sequence[str], model_names, where: str, files: Sequence[str]) -> None:
    """Every label must name a class: of the model when its names are given, else of the data. The
    error names the first image whose label does not (``files[i]`` is image ``i``)."""
    check_labels(labels, f"{where}: labels", len(labels), None)
    count = len(model_names) if model_names else len(names)
    outside = ((labels < 0) | (labels >= count)).nonzero().flatten()
    if len(outside):
        first = int(outside[0])
        whose = f"the model's {count}" if model_names else f"its {count}"
        raise IntriguingError(f"{where}: labels: class indices must lie in [0, {count - 1}], got range "
                              f"[{int(labels.min())}, {int(labels.max())}] ({files[first]}: {int(labels[first])}); "
                              f"give each image a label of {whose} classes, or use a model with those classes")
