"""Results as records: dataclasses to JSON and back, written atomically.

Everything the toolkit saves goes through :func:`write_json` / :func:`write_bytes`, which write to a
temporary file in the same folder and rename it into place, so a run killed at any moment leaves
either the old file or the new one, never half of one. That is what lets ``reproduce`` resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from intriguing.errors import IntriguingError

T = TypeVar("T")


def to_jsonable(obj: Any, *, nan_as_null: bool = True) -> Any:
    """Turn dataclasses, tensors, numpy values and paths into plain JSON values (numbers stay numbers).

    Standard JSON has no NaN or infinity: they become ``None`` ("not measured") unless ``nan_as_null``
    is false, for files that only Python's ``json`` reads back (:mod:`intriguing.runner.kept`).
    """
    def convert(value: Any) -> Any:
        return to_jsonable(value, nan_as_null=nan_as_null)

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): convert(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [convert(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return convert(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return convert(obj.tolist())
    if isinstance(obj, np.generic):
        return convert(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj) and nan_as_null:
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_jsonable(cls: type[T], raw: dict[str, Any]) -> T:
    """The dataclass ``cls`` back from :func:`to_jsonable`'s dict. Fields typed as dataclasses are rebuilt
    too; other values stay as JSON gave them (lists stay lists)."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: from_jsonable(hints[f.name], raw[f.name]) if dataclasses.is_dataclass(hints[f.name])
                  else raw[f.name] for f in dataclasses.fields(cls)})


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    A file-system error (no space left, a folder removed meanwhile) is one :class:`IntriguingError`
    naming the file; the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise IntriguingError(f"cannot write {path}: {e.strerror or e}; choose a folder you can write to") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary, shareable files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise IntriguingError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def check_writable(folder: str | os.PathLike, what: str) -> Path:
    """Fail at once, before any compute, when ``folder`` cannot be created or written to."""
    path = Path(folder)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise IntriguingError(f"{what} {path}: {probe} is a file, not a folder; choose another path")
    if not _can_create_in(probe):
        raise IntriguingError(f"{what} {path}: cannot create files in {probe}; choose a folder you can write to")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder``, by creating one: ``os.access`` says yes to root
    everywhere, even on ``/proc`` or a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Save ``obj`` (dataclasses welcome) as indented JSON, atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False)
    write_bytes(path, (text + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Load a JSON file; a damaged one (truncated, not UTF-8, not JSON) raises one clear ``IntriguingError``."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntriguingError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def git_describe() -> str | None:
    """``git describe --always --dirty`` of the checkout this package runs from, if it is one."""
    source = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=source, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def environment() -> dict[str, str]:
    """Library versions and machine facts recorded beside every result."""
    import scipy

    from intriguing.versions import __version__

    return {
        "intriguing": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
        "git": git_describe() or "not a git checkout",
    }
