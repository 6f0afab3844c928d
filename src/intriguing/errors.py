"""One error type for everything a user can get wrong, and the shared input checks.

Every message says *what* is wrong, *where* (argument, file, model) and *how to fix it*, so the
command line can print it as one line instead of a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch


class IntriguingError(ValueError):
    """Bad input or a bad file: the message alone tells the user what to change."""


def unknown_name_error(kind: str, name: str, known: Iterable[str], *, plural: str | None = None,
                       where: str = "") -> IntriguingError:
    """An error for a name missing from a registry, listing the close matches: ``unknown {kind} {name}{where}:
    ... known {plural}{where}: ...`` (``plural`` defaults to ``kind + "s"``; ``where``, e.g. " in file.py")."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return IntriguingError(
        f"unknown {kind} {name!r}{where}: {hint}known {plural or kind + 's'}{where}: {', '.join(known)}"
    )


def check_images(x: torch.Tensor, name: str = "x", bounds: tuple[float, float] = (0.0, 1.0)) -> None:
    """Reject a batch that is not a finite floating tensor inside ``bounds``.

    Attacks and analyses silently produce wrong answers on pixels outside the box, so this is an
    error, never a clamp.
    """
    if not isinstance(x, torch.Tensor):
        raise IntriguingError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise IntriguingError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype}; "
            "convert with x.float() / 255 for uint8 images"
        )
    if x.dim() < 2 or x.shape[0] == 0:
        raise IntriguingError(
            f"{name}: expected a non-empty batch shaped (N, ...), got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise IntriguingError(f"{name}: contains NaN or infinite values")
    lo, hi = bounds
    xmin, xmax = float(x.detach().min()), float(x.detach().max())  # no warning for inputs that require grad
    if xmin < lo or xmax > hi:
        raise IntriguingError(
            f"{name}: values must lie in [{lo}, {hi}], got range [{xmin:.4g}, {xmax:.4g}]; "
            "rescale the images (e.g. divide uint8 pixels by 255) or pass matching bounds"
        )


def check_labels(labels: torch.Tensor, name: str, n: int, num_classes: int | None = None) -> None:
    """Reject labels that are not an int tensor of shape (n,) with values in ``[0, num_classes)``."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise IntriguingError(f"{name}: expected an int64 tensor of class indices, got {got}")
    if tuple(labels.shape) != (n,):
        raise IntriguingError(
            f"{name}: expected shape ({n},) to match the batch of {n} inputs, got {tuple(labels.shape)}"
        )
    if num_classes is not None and n and (labels.min() < 0 or labels.max() >= num_classes):
        raise IntriguingError(
            f"{name}: class indices must lie in [0, {num_classes - 1}], "
            f"got range [{int(labels.min())}, {int(labels.max())}]"
        )


def check_finite_parameters(model: torch.nn.Module, where: str = "model") -> None:
    """Reject a model with NaN or infinite weights: every result computed from it would be garbage."""
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise IntriguingError(
                f"{where}: parameter {pname!r} contains NaN or infinite values; "
                "retrain it or load a healthy checkpoint"
            )
