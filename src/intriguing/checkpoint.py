"""Model weights in safetensors: saved atomically, loaded with shape and finiteness checks.

safetensors stores raw tensors only, so loading a checkpoint never runs code (unlike pickle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from intriguing.errors import IntriguingError, check_finite_parameters
from intriguing.records import write_bytes


def save_model(model: torch.nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write the model's state dict (and string ``metadata``) to ``path`` atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_bytes(path, save(state, metadata=dict(metadata or {})))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise IntriguingError(f"{path}: not a readable safetensors file ({e})") from None


def _read_state(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(source)
    if not path.is_file():
        raise IntriguingError(f"{path}: no such checkpoint file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise IntriguingError(
            f"{path}: not a readable safetensors file ({e}); checkpoints must be safetensors, "
            "convert a PyTorch state dict with safetensors.torch.save_file"
        ) from None


def load_weights(model: torch.nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load weights from a safetensors file or a state dict into ``model`` and return it.

    Every mismatch (missing or unexpected key, wrong shape) is reported in one error listing both
    shapes; NaN or infinite weights are refused.
    """
    where = str(source) if not isinstance(source, Mapping) else "state dict"
    state = dict(source) if isinstance(source, Mapping) else _read_state(source)
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
