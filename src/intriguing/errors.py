"""One error type for everything a user can get wrong, and the shared input checks.

Every message says *what* is wrong, *where* (argument, file, model) and *how to fix it*, so the
command line can print it as one line instead of a traceback.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable
from typing import Any

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


# Counts and seeds become torch's int64: anything larger overflows deep inside torch.
LARGEST_INT = 2**63 - 1


def check_count(name: str, value: Any, smallest: int = 1) -> int:
    """``value`` as an int in ``[smallest, 2**63 - 1]``: a count, a size or a seed (numpy integers welcome,
    ``True`` and ``2.5`` refused, as a float count is usually a mistaken argument order)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < smallest:
        raise IntriguingError(f"{name}: expected an integer >= {smallest}, got {value!r}")
    if value > LARGEST_INT:
        raise IntriguingError(f"{name}: {value} is too large; expected an integer from {smallest} to 2**63 - 1")
    return int(value)


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` as an int that torch's and numpy's generators take (a float seed failed deep inside them)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise IntriguingError(f"{name}: expected an integer, got {value!r}")
    if abs(value) > LARGEST_INT:
        raise IntriguingError(f"{name}: {value} is too large; expected an integer of at most 2**63 - 1")
    return int(value)


def check_limit(value: Any, name: str = "limit") -> int | None:
    """``None`` (every image) or a positive count of the first images: a negative one would slice off the last."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise IntriguingError(f"{name}: expected an integer >= 1 (the first images of the split) or None, "
                              f"got {value!r}")
    return value


def check_non_negative(name: str, value: Any, note: str = "") -> float:
    """A finite real number >= 0 (a weight, a rate): NaN would train or search nothing, silently."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < float("inf"):
        raise IntriguingError(f"{name}: expected a finite number >= 0{note}, got {value!r}")
    return float(value)


def check_greater(name: str, value: Any, floor: float = 0.0, what: str = "number") -> float:
    """A finite real number above ``floor`` (a tolerance, a learning rate, a growth factor)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not floor < value < float("inf"):
        raise IntriguingError(f"{name}: expected a finite {what} > {floor:g}, got {value!r}")
    return float(value)


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
