"""Where tensors live: one function turns the user's ``--device`` into a ``torch.device``.

The library itself never assumes the CPU: it puts new tensors on the device of its inputs. Only
the entry points (the command line, :func:`intriguing.models.resolve_model`) choose a device, and
they do it here, so that asking for a GPU that is not there fails at once with one clear line
instead of deep inside an attack.
"""

from __future__ import annotations

import torch

from intriguing.errors import IntriguingError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available() -> list[str]:
    """The device kinds this machine can use now, best first (``cpu`` is always last)."""
    kinds = []
    if torch.cuda.is_available():
        kinds.append("cuda")
    if _mps_available():
        kinds.append("mps")
    return [*kinds, "cpu"]


def _check_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        built = "without CUDA support" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}"
        raise IntriguingError(
            f"device {str(device)!r}: no CUDA GPU is available (this torch {torch.__version__} is built {built}); "
            f"use --device cpu or auto, or install a CUDA build of torch on a machine with a GPU"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise IntriguingError(
            f"device {str(device)!r}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}"
        )


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), ``"mps"`` or ``"auto"`` (the best available) as a device.

    A device that is named but not available is an error saying what is available, never a
    silent fall-back to the CPU: a run that was meant for a GPU should not quietly take hours.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        return torch.device(available()[0])
    try:
        device = torch.device(name.strip().lower() if isinstance(name, str) else name)
    except (RuntimeError, TypeError):
        raise IntriguingError(f"device {name!r}: expected one of {', '.join(DEVICES)} (or cuda:N)") from None
    if device.type == "cuda":
        _check_cuda(device)
    elif device.type == "mps":
        if not _mps_available():
            raise IntriguingError(
                f"device 'mps': Apple's Metal backend is not available here; available: {', '.join(available())}"
            )
    elif device.type != "cpu":
        raise IntriguingError(f"device {str(device)!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")
    return device


def describe(device: torch.device) -> str:
    """A short human description for logs and records, e.g. ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
