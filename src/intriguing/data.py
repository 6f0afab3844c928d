"""MNIST (or any dataset in the same IDX layout), verified on load, and the paper's P1/P2 split.

The paper's experiments (Szegedy et al. 2014, Section 4.2) all run on MNIST: the full training set
(Tables 1-2), two disjoint halves P1 and P2 of 30,000 images each (Tables 3-4) and the test set.
MNIST ships inside the package (``resources/mnist``), so nothing is downloaded. Another dataset of
the same layout (e.g. Fashion-MNIST) is read from ``data_dir`` or the ``INTRIGUING_DATA_DIR``
environment variable instead.

Images come back as float32 in [0, 1] shaped (N, 1, 28, 28); labels as int64 shaped (N,).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from intriguing.errors import IntriguingError

SPLITS = ("train", "test", "P1", "P2")
DATA_DIR_ENV = "INTRIGUING_DATA_DIR"
CHECKSUM_FILE = "SHA256SUMS.raw"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Seed of the P1/P2 permutation: fixed forever, so "P1" names the same 30,000 images everywhere.
SPLIT_SEED = 1312_6199

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """The decompressed bytes of an IDX file, raw or gzip (detected by its magic, not its name)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IntriguingError(f"{path}: cannot read the file ({e.strerror})") from None
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise IntriguingError(
            f"{path}: corrupt or truncated gzip data ({e}); replace the file with a fresh copy"
        ) from None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes into an array, checking the magic and the exact length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise IntriguingError(
            f"{source}: not an IDX file (bad magic number {data[:4].hex() or 'empty'}); "
            "expected 0x0000 followed by a type code and the number of dimensions"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IntriguingError(f"{source}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise IntriguingError(
            f"{source}: IDX header says shape {shape} ({expected} bytes) but the file has "
            f"{len(data)} bytes; the file is truncated or corrupt, replace it"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool = True) -> None:
    """Write ``array`` as an IDX file (gzip when ``compress``): the inverse of :func:`read_idx`."""
    codes = {dt: code for code, dt in _IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in codes:
        raise IntriguingError(f"write_idx: dtype {array.dtype} has no IDX type code")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array."""
    return parse_idx(read_idx_bytes(path), str(path))


def bundled_dir() -> Path:
    """The folder of the MNIST copy shipped inside the package."""
    return Path(str(resources.files("intriguing") / "resources" / "mnist"))


def resolve_data_dir(override: str | os.PathLike | None = None) -> Path:
    """Where the dataset is read from: ``override``, else ``$INTRIGUING_DATA_DIR``, else the bundled MNIST."""
    chosen = override or os.environ.get(DATA_DIR_ENV)
    if not chosen:
        return bundled_dir()
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise IntriguingError(
            f"data directory {path} does not exist; pass a folder holding the four IDX files "
            f"or unset {DATA_DIR_ENV} to use the bundled MNIST"
        )
    return path


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise IntriguingError(
        f"{folder}: missing {stem}.gz (or {stem}); the folder must hold the four MNIST-layout IDX files"
    )


def _checksums(folder: Path) -> dict[str, str]:
    path = folder / CHECKSUM_FILE
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    return sums


@functools.lru_cache(maxsize=8)
def _load_verified(folder: Path, stem: str) -> np.ndarray:
    path = _find(folder, stem)
    raw = read_idx_bytes(path)
    array = parse_idx(raw, str(path))  # structural problems first: their message is more specific
    expected = _checksums(folder).get(stem)
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise IntriguingError(
            f"{path}: SHA-256 of the decompressed bytes does not match {CHECKSUM_FILE}; "
            "the file is corrupt or not the original, replace it"
        )
    array.setflags(write=False)
    return array


def _load_part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = FILES[part]
    images, labels = _load_verified(folder, image_stem), _load_verified(folder, label_stem)
    if images.ndim != 3 or labels.ndim != 1:
        raise IntriguingError(
            f"{folder}: expected images shaped (N, H, W) and labels shaped (N,), "
            f"got {images.shape} and {labels.shape}"
        )
    if len(images) != len(labels):
        raise IntriguingError(
            f"{folder}: {image_stem} has {len(images)} images but {label_stem} has "
            f"{len(labels)} labels; the two files must come from the same dataset"
        )
    return images, labels


def split_indices(n: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    """Indices of P1 and P2: a fixed random halving of the training set (Section 4.2, Table 3).

    Disjoint, together covering all ``n`` images, and the same on every machine.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half : 2 * half])


def load_mnist(split: str = "train", data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of ``split``.

    ``split`` is ``"train"`` (60,000), ``"test"`` (10,000), or the disjoint halves ``"P1"`` and
    ``"P2"`` (30,000 each) of the training set. Files are verified against ``SHA256SUMS.raw`` when
    the folder has one (the bundled copy does).
    """
    if split not in SPLITS:
        raise IntriguingError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    folder = resolve_data_dir(data_dir)
    images, labels = _load_part(folder, "test" if split == "test" else "train")
    if split in ("P1", "P2"):
        index = split_indices(len(images))[split == "P2"]
        images, labels = images[index], labels[index]
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0).unsqueeze(1)
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    return x, y


def fingerprint(data_dir: str | os.PathLike | None = None) -> str:
    """A short hash naming the dataset's content, so caches never mix MNIST and e.g. Fashion-MNIST."""
    return _fingerprint(resolve_data_dir(data_dir))


@functools.lru_cache(maxsize=8)
def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for stems in FILES.values():
        for stem in stems:
            h.update(hashlib.sha256(_load_verified(folder, stem).tobytes()).digest())
    return h.hexdigest()[:16]
