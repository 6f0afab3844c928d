"""What every attack shares: the result record, the distortion measure, input checks and verification.

An attack's own code only searches; checking the inputs, deciding what counts as a success and
re-verifying every success by a forward pass happen here, once, for every attack (STYLE.md #1).

The paper (Section 4.1, Eq. 1) asks for the smallest ``r`` such that ``f(x + r) = l`` with
``x + r`` in the box ``[0, 1]^m``. Two modes follow:

* **targeted** (``target=l`` given): a success is ``argmax f(x') = l``;
* **untargeted** (``labels=y`` given, the true classes): a success is ``argmax f(x') != y``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from intriguing.errors import IntriguingError, check_images, check_labels

Bounds = tuple[float, float]

# During a search a point counts as adversarial only if its success margin exceeds this many logits.
# The final verification is a forward pass at another batch size, and a model's logits change by a
# few 1e-6 with the batch size (blocked matrix products): 1e-4 guarantees that it confirms.
SAFE_MARGIN = 1e-4


@dataclass
class AttackResult:
    """Per-example outcome of an attack on a batch of ``N`` inputs (all tensors on the input's device).

    ``adversarial`` is shaped like the input; where the attack failed it is the input itself,
    unchanged, and ``distortion`` is NaN. ``success`` has been re-verified by a forward pass:
    classified as the target (targeted) or not as the true label (untargeted), and inside the box.
    ``distortion`` is the paper's RMS distortion ``sqrt(sum((x' - x)^2) / n)`` of ``adversarial``;
    ``distortion_paper`` is the same measure for the paper-faithful minimiser found by the ``c``
    search, before any refinement (equal to ``distortion`` when there is none). ``target`` is the
    class reached: the requested target in targeted mode, the model's class of ``adversarial`` in
    untargeted mode. ``c`` is the penalty constant of the returned solution (NaN where it has
    none) and ``evaluations`` counts the loss-and-gradient evaluations spent on each example.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    distortion: torch.Tensor
    distortion_paper: torch.Tensor
    target: torch.Tensor
    c: torch.Tensor
    evaluations: torch.Tensor
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Fraction of the batch for which a verified adversarial example was found."""
        return float(self.success.float().mean())

    def summary(self) -> dict[str, Any]:
        """Scalar statistics over the successful examples (JSON-ready; NaN when nothing succeeded)."""
        ok = self.success
        distortion = self.distortion[ok].double()
        paper = self.distortion_paper[ok].double()
        return {
            "n": len(ok),
            "success_rate": self.success_rate,
            "mean_distortion": _mean(distortion),
            "median_distortion": _median(distortion),
            "mean_distortion_paper": _mean(paper),
            "median_distortion_paper": _median(paper),
            "mean_evaluations": float(self.evaluations.double().mean()),
        }

    def per_example(self) -> dict[str, Any]:
        """Every per-example field except the images, as plain lists (for JSON records)."""
        return {
            name: getattr(self, name).detach().cpu().tolist()
            for name in ("success", "distortion", "distortion_paper", "target", "c", "evaluations")
        }


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if len(values) else math.nan


def _median(values: torch.Tensor) -> float:
    return float(values.quantile(0.5)) if len(values) else math.nan


def rms_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """The paper's distortion per example: ``sqrt(mean over the n pixels of (x_adv - x)^2)``, shape (N,)."""
    if x.shape != x_adv.shape:
        raise IntriguingError(f"x_adv: expected the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    return (x_adv - x).flatten(1).pow(2).mean(1).sqrt()


def random_targets(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A seeded random class different from each label, uniform over the other ``num_classes - 1``."""
    check_labels(labels, "labels", len(labels), num_classes)
    shift = torch.randint(1, num_classes, labels.shape, generator=torch.Generator().manual_seed(seed))
    return (labels + shift.to(labels.device)) % num_classes


def check_bounds(bounds: Any) -> Bounds:
    """``bounds`` as a pair of finite floats ``(low, high)`` with ``low < high``."""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise IntriguingError(f"bounds: expected a pair (low, high) of numbers, got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise IntriguingError(f"bounds: expected finite low < high, got ({low}, {high})")
    return low, high


def warn_if_training(model: nn.Module) -> None:
    """Dropout or batch statistics in train mode make the attacked function random; say so, change nothing."""
    if model.training:
        warnings.warn(
            "the model is in train mode: dropout/batch-norm make its output random or batch-dependent; "
            "call model.eval() before attacking it (the attack leaves the mode as it is)",
            stacklevel=3,
        )


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The model's logits on ``x`` (no gradients), after checking they are shaped (N, classes)."""
    parts = [model(x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    if not all(isinstance(p, torch.Tensor) for p in parts):
        raise IntriguingError(f"model: expected it to return a logits tensor, got {type(parts[0]).__name__}")
    logits = torch.cat(parts)
    if logits.dim() != 2 or logits.shape[0] != len(x) or logits.shape[1] < 2:
        raise IntriguingError(
            f"model: expected logits shaped (N, classes) = ({len(x)}, K >= 2) for a batch of {len(x)} "
            f"inputs, got {tuple(logits.shape)}; wrap the model so that it returns one row of class scores per input"
        )
    return logits


def checked_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`logits_of` the clean inputs, which must also be finite."""
    logits = logits_of(model, x)
    if not torch.isfinite(logits).all():
        raise IntriguingError("model: returned NaN or infinite logits on the clean inputs x; check its weights")
    return logits


@dataclass(frozen=True)
class Task:
    """A validated attack request: the inputs, what counts as success, and the clean logits.

    ``goal`` holds the target classes (targeted) or the true classes (untargeted).
    """

    x: torch.Tensor
    goal: torch.Tensor
    targeted: bool
    bounds: Bounds
    clean_logits: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.clean_logits.shape[1]


def make_task(model: nn.Module, x: torch.Tensor, target: Any, labels: Any, bounds: Any) -> Task:
    """Check an attack's arguments and return the :class:`Task`, or raise one clear error."""
    if not isinstance(model, nn.Module):
        raise IntriguingError(f"model: expected a torch.nn.Module returning logits, got {type(model).__name__}")
    bounds = check_bounds(bounds)
    check_images(x, "x", bounds)
    if (target is None) == (labels is None):
        raise IntriguingError(
            "target/labels: pass exactly one: target=classes for a targeted attack, "
            "or labels=true classes for an untargeted one"
        )
    name, goal = ("target", target) if target is not None else ("labels", labels)
    if isinstance(goal, torch.Tensor) and goal.dim() == 1 and len(goal) != len(x):
        raise IntriguingError(f"{name}: expected {len(x)} classes, one per input in x, got {len(goal)}")
    warn_if_training(model)
    logits = checked_logits(model, x)
    check_labels(goal, name, len(x), logits.shape[1])
    return Task(x=x, goal=goal.to(device=x.device, dtype=torch.int64), targeted=target is not None,
                bounds=bounds, clean_logits=logits)


def reached(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Which rows of ``logits`` count as adversarial: the target is the top class, or the true class is not."""
    predicted = logits.argmax(1)
    return predicted == goal if targeted else predicted != goal


def success_margin(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How far each row is into (> 0) or short of (< 0) success, in logits.

    Targeted: ``z_goal - max_{j != goal} z_j``; untargeted (``goal`` = true class):
    ``max_{j != goal} z_j - z_goal``. A tie gives 0, which is not a success.
    """
    own = logits.gather(1, goal[:, None])[:, 0]
    best_other = logits.scatter(1, goal[:, None], -math.inf).amax(1)
    return own - best_other if targeted else best_other - own


def safely_reached(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Rows that a search may record as adversarial: finite logits and a margin above ``SAFE_MARGIN``."""
    return torch.isfinite(logits).all(1) & (success_margin(logits, goal, targeted) > SAFE_MARGIN)


def verified_result(model: nn.Module, task: Task, adversarial: torch.Tensor, *, distortion_paper: torch.Tensor,
                    c: torch.Tensor, evaluations: torch.Tensor, config: dict[str, Any]) -> AttackResult:
    """Re-check every candidate by a forward pass and the box, and build the :class:`AttackResult`.

    A candidate that fails the check (wrong class, outside the box, non-finite input or logits) is
    reported as a failure: its ``adversarial`` becomes the clean input and its distortions NaN.
    """
    x = task.x
    adversarial = adversarial.detach().to(dtype=x.dtype).reshape(x.shape)
    low, high = task.bounds
    flat = adversarial.flatten(1)
    inside = torch.isfinite(flat).all(1) & (flat >= low).all(1) & (flat <= high).all(1)
    candidate = torch.where(inside.view(-1, *[1] * (x.dim() - 1)), adversarial, x)
    logits = logits_of(model, candidate)
    success = inside & torch.isfinite(logits).all(1) & reached(logits, task.goal, task.targeted)
    keep = success.view(-1, *[1] * (x.dim() - 1))
    adversarial = torch.where(keep, candidate, x)
    nan = torch.full_like(success, math.nan, dtype=x.dtype)
    predicted = torch.where(success, logits.argmax(1), task.clean_logits.argmax(1))
    return AttackResult(
        adversarial=adversarial,
        success=success,
        distortion=torch.where(success, rms_distortion(x, adversarial), nan),
        distortion_paper=torch.where(success, distortion_paper.to(nan), nan),
        target=task.goal.clone() if task.targeted else predicted,
        c=c.to(nan),
        evaluations=evaluations.to(device=x.device, dtype=torch.int64),
        config=config,
    )
