"""Model weights in safetensors: saved atomically with an integrity hash, loaded with every check.

safetensors stores raw tensors only, so loading a checkpoint never runs code (unlike pickle). It
does not notice a flipped byte, though: a damaged file would load as garbage weights. So every
checkpoint we write carries a SHA-256 of its tensors and of its other metadata (the zoo keeps the
training record, with the errors ``train`` prints, there), and loading verifies it. A flip can also
hit the hash's own key; the zoo therefore loads its cache with ``require_hash=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save

from intriguing.errors import IntriguingError, check_finite_parameters
from intriguing.numerics import zero_subnormals_
from intriguing.records import write_bytes

INTEGRITY_KEY = "intriguing.sha256"


def tensors_digest(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order, then the metadata
    (all but the hash itself)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    others = {k: v for k, v in (metadata or {}).items() if k != INTEGRITY_KEY}
    digest.update(json.dumps(others, sort_keys=True).encode())
    return digest.hexdigest()


def save_model(model: torch.nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write the model's state dict, string ``metadata`` and the integrity hash to ``path`` atomically.

    Subnormal weights are stored as zero (:mod:`intriguing.numerics`): they would slow every use.
    """
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    for tensor in state.values():
        zero_subnormals_(tensor)
    metadata = dict(metadata or {})
    write_bytes(path, save(state, metadata={**metadata, INTEGRITY_KEY: tensors_digest(state, metadata)}))


def _damaged(path: Path, why: str) -> IntriguingError:
    return IntriguingError(f"{path}: damaged checkpoint ({why}); delete it, or retrain / re-export the weights")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise _damaged(Path(path), f"not readable as safetensors: {e}") from None


def _read_state(source: str | os.PathLike, require_hash: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, verified against its integrity hash when it has one
    (or must have one: ``require_hash``)."""
    path = Path(source)
    if not path.is_file():
        raise IntriguingError(f"{path}: no such checkpoint file")
    try:
        raw = path.read_bytes()
        state = load(raw)
    except (SafetensorError, OSError, ValueError) as e:
        if path.suffix in (".pt", ".pth", ".bin"):
            raise IntriguingError(
                f"{path}: not a safetensors file ({e}); convert the PyTorch state dict with "
                "safetensors.torch.save_file(torch.load(path, weights_only=True), 'weights.safetensors')"
            ) from None
        raise _damaged(path, f"not readable as safetensors: {e}") from None
    metadata = read_metadata(path)
    expected = metadata.get(INTEGRITY_KEY)
    if expected is None and require_hash:
        raise _damaged(path, f"no integrity hash ({INTEGRITY_KEY}), which every checkpoint this toolkit writes has")
    if expected is not None and tensors_digest(state, metadata) != expected:
        raise _damaged(path, "its tensors or metadata do not match the integrity hash stored with them")
    return state


def load_weights(model: torch.nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *,
                 require_hash: bool = False) -> torch.nn.Module:
    """Load weights from a safetensors file or a state dict into ``model`` and return it.

    Every mismatch (missing or unexpected key, wrong shape) is reported in one error listing both
    shapes; NaN or infinite weights are refused. ``require_hash`` refuses a file without the
    integrity hash: right for files this toolkit wrote, wrong for weights exported elsewhere.
    """
    if not isinstance(model, torch.nn.Module):
        raise IntriguingError(f"model: expected a torch.nn.Module to load the weights into, got {type(model).__name__}")
    if not isinstance(source, (str, os.PathLike, Mapping)):
        raise IntriguingError(f"weights: expected a path to a .safetensors file or a state dict, "
                              f"got {type(source).__name__}")
    where = str(source) if not isinstance(source, Mapping) else "state dict"
    state = dict(source) if isinstance(source, Mapping) else _read_state(source, require_hash)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise IntriguingError(f"{where}: expected parameter name -> tensor, got {type(value).__name__} for {key!r}")
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise IntriguingError(f"{where}: weights do not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state)
    check_finite_parameters(model, where)
    return model


# --- a user's PyTorch state dict, read without unpickling ------------------------------------------------

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")
# Keys under which training scripts commonly nest the state dict of a checkpoint.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor] | str:
    """The tensors of a ``.pt``/``.pth`` state dict, read with ``torch.load(weights_only=True)``.

    Returns the path itself for safetensors files (read by :func:`~intriguing.checkpoint.load_weights`).
    """
    path = Path(path)
    if not path.is_file():
        raise IntriguingError(f"{path}: no such weights file")
    if path.suffix not in STATE_DICT_SUFFIXES:
        # e.g. the model's .py file given by mistake: not a "damaged checkpoint", and not one to delete
        if path.suffix != ".safetensors" and not _is_safetensors(path):
            raise IntriguingError(f"{path}: not a weights file; give a .safetensors file or a .pt/.pth state dict "
                                  "(torch.save(model.state_dict(), path))")
        return str(path)
    try:
        with warnings.catch_warnings():  # the refusal below explains itself; torch's warnings would not
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a plain state dict"
        raise IntriguingError(
            f"{path}: not a plain state dict of tensors, so loading it would need a full unpickle, which can run "
            f"arbitrary code; re-save it as torch.save(model.state_dict(), path) or as safetensors "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    return _tensors_only(state, path)


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: an 8-byte little-endian header length, then a
    JSON header opening with ``{``. A damaged body is still reported as a damaged checkpoint later."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") <= path.stat().st_size and head[8:9] == b"{"


def _tensors_only(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in NESTED_STATE_KEYS:
            if isinstance(state.get(key), dict) and not isinstance(state.get(key), torch.Tensor):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IntriguingError(
            f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}; "
            "save it with torch.save(model.state_dict(), path)"
        )
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
