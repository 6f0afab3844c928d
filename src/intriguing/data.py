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
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from intriguing.architectures import INPUT_SHAPE
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
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; a flipped byte can raise any
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
    return check_data_dir(chosen, "data_dir" if override else DATA_DIR_ENV)


def check_data_dir(folder: str | os.PathLike, given_by: str) -> Path:
    """``folder`` resolved, or an error whose advice fits where it came from (``given_by``).

    A missing folder named by the environment variable is fixed by unsetting it; one passed as an
    argument (or ``--data-dir``) is not, so the advice must not mix the two up.
    """
    if not str(folder).strip():  # Path("") is the current folder: never what an empty variable meant
        raise IntriguingError(f"data directory: an empty path (from {given_by}); pass a folder holding the four "
                              f"MNIST-layout IDX files, or leave {given_by} out to use the bundled MNIST")
    path = Path(folder).expanduser().resolve()
    if path.is_dir():
        return path
    problem = "is a file, not a folder" if path.exists() else "does not exist"
    if given_by == DATA_DIR_ENV:
        fix = (f"set {DATA_DIR_ENV} to a folder holding the four MNIST-layout IDX files, "
               "or unset it to use the bundled MNIST")
    else:
        fix = f"pass a folder holding the four MNIST-layout IDX files, or leave {given_by} out to use the bundled MNIST"
    raise IntriguingError(f"data directory {path} (from {given_by}) {problem}; {fix}")


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


def _signature(path: Path) -> tuple[str, int, int]:
    """What the in-memory caches key a file by: its path, size and modification time, so a file
    rewritten while this process runs is read again (unless rewritten with the same size within the
    file system's timestamp granularity, a few milliseconds)."""
    status = path.stat()
    return str(path), status.st_size, status.st_mtime_ns


def _load_verified(folder: Path, stem: str) -> np.ndarray:
    """The array in ``folder``'s file ``stem`` (compressed or not), checked against ``SHA256SUMS.raw``."""
    return _read_verified(_signature(_find(folder, stem)), _checksums(folder).get(stem))


@functools.lru_cache(maxsize=8)
def _read_verified(signature: tuple[str, int, int], expected: str | None) -> np.ndarray:
    path = Path(signature[0])
    raw = read_idx_bytes(path)
    array = parse_idx(raw, str(path))  # structural problems first: their message is more specific
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
    if images.dtype != np.uint8 or labels.dtype.kind not in "iu":
        raise IntriguingError(
            f"{folder}: expected unsigned-byte images (IDX type 0x08, pixels 0-255) and integer labels, "
            f"got {images.dtype} and {labels.dtype}; the files are corrupt or not in MNIST's layout"
        )
    return images, labels


def files(split: str = "train", data_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The image and label files ``split`` is read from, so that messages can name them."""
    folder = resolve_data_dir(data_dir)
    return tuple(_find(folder, stem) for stem in FILES["test" if split == "test" else "train"])


def check_fits(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, name: str,
               split: str = "train", data_dir: str | os.PathLike | None = None) -> None:
    """Refuse, before any training, data that ``model`` (zoo model ``name``) cannot learn.

    Another dataset in MNIST's layout may have other image sizes or more classes; either would
    otherwise fail deep inside torch, mid-training. The size is tried with one forward pass on one
    image (so a user's architecture for other sizes is welcome); the labels must lie within the
    logits that pass returns.
    """
    image_file, label_file = files(split, data_dir)
    if len(images) == 0:
        raise IntriguingError(f"{image_file}: no images to use for {split}; use a non-empty dataset or limit")
    logits = _probe(model, images[:1], name, image_file)
    classes = logits.shape[-1]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise IntriguingError(
            f"{label_file}: labels range over {low}..{high}, but model {name} has {classes} outputs "
            f"(classes 0..{classes - 1}); use a dataset labelled 0..{classes - 1}, "
            f"or register a model with {high + 1} outputs (intriguing.zoo.register)"
        )


def _probe(model: torch.nn.Module, image: torch.Tensor, name: str, source: Path) -> torch.Tensor:
    """``model(image)`` without side effects: random state, train mode and gradients are left alone,
    so the seeded training that follows is the same as without the check."""
    size = "x".join(str(d) for d in image.shape[2:])
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            logits = model.eval()(image)
    except RuntimeError as e:
        if tuple(image.shape[1:]) != INPUT_SHAPE:
            expected = "x".join(str(d) for d in INPUT_SHAPE[1:])
            raise IntriguingError(
                f"{source}: images are {size}, but model {name} takes {expected} images (shape "
                f"(N, {', '.join(map(str, INPUT_SHAPE))})); use a dataset of {expected} images in MNIST's layout"
            ) from None
        raise IntriguingError(
            f"model {name} fails on one {size} image of {source} ({e}); check that the model takes {size} images"
        ) from None
    finally:
        model.train(was_training)
    if logits.dim() != 2 or logits.shape[0] != 1:
        raise IntriguingError(
            f"model {name} returns shape {tuple(logits.shape)} for one image, expected (1, classes) logits"
        )
    return logits


def split_indices(n: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    """Indices of P1 and P2: a fixed random halving of the training set (Section 4.2, Table 3).

    Disjoint, together covering all ``n`` images, and the same on every machine.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half : 2 * half])


def _part(split: str) -> str:
    """The files ``split`` is read from (``FILES``' key), its name checked first."""
    if split not in SPLITS:
        raise IntriguingError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return "test" if split == "test" else "train"


def load_mnist(split: str = "train", data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of ``split``.

    ``split`` is ``"train"`` (60,000), ``"test"`` (10,000), or the disjoint halves ``"P1"`` and
    ``"P2"`` (30,000 each) of the training set. Files are verified against ``SHA256SUMS.raw`` when
    the folder has one (the bundled copy does).
    """
    part = _part(split)
    images, labels = _load_part(resolve_data_dir(data_dir), part)
    if split in ("P1", "P2"):
        index = split_indices(len(images))[split == "P2"]
        images, labels = images[index], labels[index]
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0).unsqueeze(1)
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    return x, y


def split_size(split: str = "train", data_dir: str | os.PathLike | None = None) -> int:
    """How many images ``split`` holds, from its labels file alone (P1 and P2: a half of the training set each)."""
    part = _part(split)
    labels = _load_verified(resolve_data_dir(data_dir), FILES[part][1])
    return len(split_indices(len(labels))[split == "P2"]) if split in ("P1", "P2") else len(labels)


def fingerprint(data_dir: str | os.PathLike | None = None) -> str:
    """A short hash naming the dataset's content, so caches never mix MNIST and e.g. Fashion-MNIST."""
    folder = resolve_data_dir(data_dir)
    sums = _checksums(folder)
    return _fingerprint(tuple((stem, _signature(_find(folder, stem)), sums.get(stem))
                              for stems in FILES.values() for stem in stems))


@functools.lru_cache(maxsize=8)
def _fingerprint(files: tuple[tuple[str, tuple[str, int, int], str | None], ...]) -> str:
    h = hashlib.sha256()
    for _, signature, expected in files:
        h.update(hashlib.sha256(_read_verified(signature, expected).tobytes()).digest())
    return h.hexdigest()[:16]
