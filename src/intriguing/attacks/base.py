"""The attack contract: check the inputs, search, verify by a forward pass, once for every attack.

An :class:`Attack` is configured in its constructor and called with data::

    result = attack(model, x, Targeted(t))        # or target=t;  Untargeted(y) or labels=y

``Attack.__call__`` checks the model and the inputs, builds the criterion, hands a validated
:class:`Task` to the subclass's ``_search`` and re-verifies the :class:`Found` candidates by a
forward pass and the box. A subclass only searches. The paper (Section 4.1, Eq. 1) asks for the
smallest ``r`` with ``f(x + r) = l`` and ``x + r`` in the box; the criteria say what ``f(x + r) = l``
means (:mod:`~intriguing.attacks.criteria`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from intriguing.attacks.config import check_bounds
from intriguing.attacks.criteria import Criterion, criterion_of
from intriguing.errors import IntriguingError, check_images

Bounds = tuple[float, float]


@dataclass
class AttackResult:
    """Per-example outcome of an attack on a batch of ``N`` inputs (all tensors on the input's device).

    ``adversarial`` is shaped like the input; where the attack failed it is the input itself,
    unchanged, and ``distortion`` is NaN. ``success`` has been re-verified by a forward pass:
    classified as the target (targeted) or not as the true label (untargeted), and inside the box.
    ``distortion`` is the paper's RMS distortion ``sqrt(sum((x' - x)^2) / n)`` of ``adversarial``;
    ``distortion_paper`` is the same measure for the minimiser the ``c`` search found, before any
    refinement or shrink (equal to ``distortion`` when there is none): the paper's attack where the
    search is the paper's (``LBFGSConfig.paper()``); the refined configuration's search is shorter and
    starts differently (see :class:`~intriguing.attacks.LBFGSConfig`). ``target`` is the
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
    for name, value in (("x", x), ("x_adv", x_adv)):
        if not isinstance(value, torch.Tensor):
            raise IntriguingError(f"{name}: expected a torch.Tensor, got {type(value).__name__}; convert with torch.as_tensor")
    if x.shape != x_adv.shape:
        raise IntriguingError(f"x_adv: expected the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    return (x_adv - x).flatten(1).pow(2).mean(1).sqrt()


@dataclass(frozen=True)
class Task:
    """A validated attack request: the inputs, what counts as success, the box and the clean logits."""

    x: torch.Tensor
    criterion: Criterion
    bounds: Bounds
    clean_logits: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.clean_logits.shape[1]


@dataclass
class Found:
    """What a search returns, before verification: a candidate per input (shaped like ``x``), the
    paper-faithful RMS distortion, the ``c`` of each candidate (NaN where none) and evaluations."""

    adversarial: torch.Tensor
    distortion_paper: torch.Tensor
    c: torch.Tensor
    evaluations: torch.Tensor


class Attack:
    """Base class of every attack: ``attack(model, x, criterion)`` checks, searches, verifies.

    Subclasses set ``bounds`` (the box), implement ``_search(model, task) -> Found`` and
    ``record() -> dict`` (the hyper-parameters stored with every result). ``target=`` and
    ``labels=`` are shorthand for ``Targeted(target)`` and ``Untargeted(labels)``; giving both is
    ``Targeted(target, labels)``, which refuses a target equal to its true label.
    """

    bounds: Bounds = (0.0, 1.0)

    def __call__(self, model: nn.Module, x: torch.Tensor, criterion: Criterion | None = None, *,
                 target: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> AttackResult:
        task = make_task(model, x, criterion_of(criterion, target, labels), self.bounds)
        return verified_result(model, task, self._search(model, task), config=self.record())

    def _search(self, model: nn.Module, task: Task) -> Found:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        raise NotImplementedError


def make_task(model: nn.Module, x: torch.Tensor, criterion: Criterion, bounds: Any) -> Task:
    """Check an attack's arguments and return the :class:`Task`, or raise one clear error."""
    if not isinstance(model, nn.Module):
        raise IntriguingError(f"model: expected a torch.nn.Module returning logits, got {type(model).__name__}")
    bounds = check_bounds(bounds)
    check_images(x, "x", bounds)
    classes = criterion.classes
    if isinstance(classes, torch.Tensor) and classes.dim() == 1 and len(classes) != len(x):
        raise IntriguingError(
            f"{criterion.argument}: expected {len(x)} classes, one per input in x, got {len(classes)}")
    warn_if_training(model)
    logits = checked_logits(model, x)
    criterion = criterion.checked(len(x), logits.shape[1], x.device)
    if criterion.targeted:
        _warn_if_targets_look_like_labels(criterion.classes, logits)
    return Task(x=x, criterion=criterion, bounds=bounds, clean_logits=logits)


def warn_if_training(model: nn.Module) -> None:
    """Dropout or batch statistics in train mode make the attacked function random; say so, change nothing."""
    if model.training:
        warnings.warn(
            "the model is in train mode: dropout/batch-norm make its output random or batch-dependent; "
            "call model.eval() before attacking it (the attack leaves the mode as it is)",
            stacklevel=4,
        )


def _warn_if_targets_look_like_labels(targets: torch.Tensor, logits: torch.Tensor) -> None:
    """Targets that are mostly the model's own classes are probably the true labels passed as targets."""
    same = int((logits.argmax(1) == targets).sum())
    if len(targets) > 1 and same > len(targets) // 2:
        warnings.warn(
            f"target: {same} of {len(targets)} targets are already the model's class on the clean input, "
            "so they count as successes at distortion 0; if these are the true labels, pass labels= "
            "(untargeted) or target=other classes, labels=true classes",
            stacklevel=4,
        )


def checked_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The clean logits (N, K), after checking the model takes ``x`` and returns finite logits, not probabilities."""
    logits = model_output(model, x)
    if not torch.isfinite(logits).all():
        raise IntriguingError("model: returned NaN or infinite logits on the clean inputs x; check its weights")
    if _looks_like_probabilities(logits):
        raise IntriguingError(
            f"model: its outputs look like probabilities (non-negative rows summing to 1, shape "
            f"{tuple(logits.shape)}), but the attack's loss needs logits; remove the final softmax "
            "(or return log-probabilities)"
        )
    return logits


def model_output(model: nn.Module, x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """The model's outputs (N, K) on ``x``, or one line naming both shapes (or dtypes) when it cannot take them."""
    _check_dtype(model, x, name)
    try:
        return logits_of(model, x)
    except IntriguingError:
        raise
    except (RuntimeError, ValueError) as error:  # a shape the model cannot take
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = _expected_input(model) + ("; or, as the model is in train mode, call model.eval() first"
                                         if model.training else "")
        raise IntriguingError(f"{name}: the model cannot take inputs shaped {tuple(x.shape)} ({reason}); "
                              f"{hint}") from None


def _looks_like_probabilities(logits: torch.Tensor) -> bool:
    return bool((logits >= 0).all()) and bool(((logits.double().sum(1) - 1).abs() <= 1e-4).all())


def _check_dtype(model: nn.Module, x: torch.Tensor, name: str = "x") -> None:
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    if parameter is not None and parameter.dtype != x.dtype:
        raise IntriguingError(
            f"{name}: expected dtype {parameter.dtype} (the model's parameters), got {x.dtype}; "
            f"convert the inputs with x.to({parameter.dtype}) (or the model with model.to({x.dtype}))"
        )


def _expected_input(model: nn.Module) -> str:
    """What the model's first layer takes, as a hint for the shape error."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return (f"its first layer, Linear({module.in_features} -> {module.out_features}), expects "
                    f"{module.in_features} values per example, e.g. shaped (N, {module.in_features}) "
                    "or images that flatten to that size")
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = {nn.Conv1d: "L", nn.Conv2d: "H, W", nn.Conv3d: "D, H, W"}[type(module)]
            return (f"its first layer, {type(module).__name__}({module.in_channels} -> {module.out_channels}), "
                    f"expects inputs shaped (N, {module.in_channels}, {dims}) at the image size it was built for")
    return "pass inputs shaped as the model was built for"


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


def verified_result(model: nn.Module, task: Task, found: Found, *, config: dict[str, Any]) -> AttackResult:
    """Re-check every candidate by a forward pass and the box, and build the :class:`AttackResult`.

    A candidate that fails the check (wrong class, outside the box, non-finite input or logits) is
    reported as a failure: its ``adversarial`` becomes the clean input and its distortions NaN.
    """
    x = task.x
    adversarial = found.adversarial.detach().to(dtype=x.dtype).reshape(x.shape)
    low, high = task.bounds
    flat = adversarial.flatten(1)
    inside = torch.isfinite(flat).all(1) & (flat >= low).all(1) & (flat <= high).all(1)
    candidate = torch.where(inside.view(-1, *[1] * (x.dim() - 1)), adversarial, x)
    logits = logits_of(model, candidate)
    success = inside & torch.isfinite(logits).all(1) & task.criterion.reached(logits)
    keep = success.view(-1, *[1] * (x.dim() - 1))
    adversarial = torch.where(keep, candidate, x)
    nan = torch.full_like(success, math.nan, dtype=x.dtype)
    predicted = torch.where(success, logits.argmax(1), task.clean_logits.argmax(1))
    return AttackResult(
        adversarial=adversarial,
        success=success,
        distortion=torch.where(success, rms_distortion(x, adversarial), nan),
        distortion_paper=torch.where(success, found.distortion_paper.to(nan), nan),
        target=task.criterion.reported_target(predicted),
        c=found.c.to(nan),
        evaluations=found.evaluations.to(device=x.device, dtype=torch.int64),
        config=config,
    )
