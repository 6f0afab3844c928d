"""The paper's attack: box-constrained L-BFGS with a line search on ``c`` (Section 4.1), batched.

Szegedy et al. define the minimal adversarial perturbation of ``x`` towards class ``l`` as the
solution of ``minimise ||r||  subject to  f(x + r) = l,  x + r in [0, 1]^m`` (Eq. 1) and
approximate it by minimising ``c |r|^2 + loss_f(x + r, l)`` over the box with L-BFGS, searching for
the largest ``c`` whose minimiser is still classified as ``l`` (the smallest ``r``). This module
turns a batch of inputs into *rows* (one per input and class to reach), runs that search for all
rows at once (:mod:`intriguing.attacks.solver`), optionally refines each result towards ``x``
(:mod:`intriguing.attacks.refine`), and re-verifies everything (:mod:`intriguing.attacks.base`).

Example::

    from intriguing import zoo, data
    from intriguing.attacks import LBFGS
    model = zoo.trained("FC100-100-10")
    x, y = data.load_mnist("test")
    result = LBFGS()(model, x[:100], labels=y[:100])        # untargeted
    result.distortion.nanmedian(), result.success_rate
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from intriguing.attacks.base import (AttackResult, Task, check_bounds, make_task, safely_reached, success_margin,
                                     verified_result)
from intriguing.attacks.refine import refine
from intriguing.attacks.solver import CSearch, SolverSettings
from intriguing.errors import IntriguingError


@dataclasses.dataclass(frozen=True)
class Rows:
    """The unit of work: one ``(input, class to reach)`` pair per row, inputs flattened to (R, m).

    Targeted mode has one row per input. Untargeted mode has one row per input and class
    ``l != y`` (N * (K - 1) rows). Each row runs exactly the targeted attack towards ``l``; only
    what it records as a success differs: any point no longer classified as ``y``. So an
    untargeted result is never farther than the targeted one towards any class, and loses nothing:
    the closest misclassified point lies on the border of some class ``l``'s region.
    """

    x: torch.Tensor
    goal: torch.Tensor
    true: torch.Tensor
    example: torch.Tensor

    @staticmethod
    def of(task: Task) -> Rows:
        n, k = len(task.x), task.num_classes
        flat = task.x.detach().flatten(1)
        if task.targeted:
            index = torch.arange(n, device=flat.device)
            return Rows(flat, task.goal, task.goal, index)
        classes = torch.arange(k, device=flat.device).expand(n, k)
        others = classes != task.goal[:, None]
        example = torch.arange(n, device=flat.device)[:, None].expand(n, k)[others]  # (N * (K - 1),)
        return Rows(flat[example], classes[others], task.goal[example], example)


class PenalisedLoss:
    """The paper's objective per row, ``c ||z - x||^2 + CE(model(z), goal)``, with its gradient.

    It also returns the margin of ``goal`` over the other classes (which steers the ``c`` search)
    and whether the point counts as a success (the ``goal`` safely on top, or, untargeted, ``true``
    safely beaten). Only the input gets a gradient (``torch.autograd.grad``): nothing accumulates in the model's
    parameters and its train/eval mode is left alone.
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], targeted: bool):
        self.model, self.shape, self.targeted = model, shape, targeted

    def __call__(self, z: torch.Tensor, x: torch.Tensor, goal: torch.Tensor, true: torch.Tensor,
                 c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, gradient, margin of ``goal`` and success of each row at ``z``."""
        with torch.enable_grad():
            point = z.detach().requires_grad_(True)
            logits = self.model(point.view(-1, *self.shape))
            loss = F.cross_entropy(logits, goal, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), point)
        r = z - x
        value = c * r.pow(2).sum(1) + loss.detach()
        finite = torch.isfinite(logits.detach()).all(1)
        value = torch.where(finite, value, torch.full_like(value, math.inf))
        margin = torch.where(finite, success_margin(logits.detach(), goal, targeted=True), -math.inf)
        return value, grad + 2 * c[:, None] * r, margin, safely_reached(logits.detach(), true, self.targeted)


class LBFGS:
    """Minimal adversarial examples by box-constrained L-BFGS with a per-example ``c`` search.

    Paper: Szegedy et al. 2014, Section 4.1 (Eq. 1), L2 norm, box ``bounds``. Call it as
    ``attack(model, x, target=t)`` (targeted) or ``attack(model, x, labels=y)`` (untargeted:
    the smallest perturbation over all classes ``l != y``). ``model`` is any classifier
    returning logits (N, K), ideally in eval mode; ``x`` is (N, ...) inside ``bounds``.

    Keyword-only hyper-parameters (the defaults reach 100% success on the MNIST zoo):

    * ``bounds=(0, 1)``: the box; e.g. ``(0, 1)`` also suits sigmoid activations of a sub-network.
    * ``refine=True``: after the paper's search, move each example towards ``x`` along the decision
      boundary (:mod:`~intriguing.attacks.refine`) — a smaller perturbation than the paper's method
      finds. ``result.distortion`` is the refined value, ``result.distortion_paper`` the paper's.
    * ``initial_c=None``: first ``c`` per example (``None``: estimated from the gradient at ``x``).
    * ``c_factor=10``: the most ``c`` may grow or shrink in one step before it is bracketed.
    * ``c_rtol=0.01``: the search stops when the largest adversarial ``c`` and the smallest failing
      one are within ``c_fail / c_adv <= 1 + c_rtol``.
    * ``max_solves=30``: at most this many L-BFGS solves (values of ``c``) per example.
    * ``memory=10``: L-BFGS curvature pairs per example.
    * ``max_iter=100``, ``ftol=1e-5``, ``pgtol=1e-5``: one solve stops after ``max_iter`` iterations,
      or when the objective falls by less than ``ftol`` (relative), or the projected gradient's
      largest entry is below ``pgtol``.
    * ``refine_steps=5``: at most this many linearise-and-project steps of the refinement.
    * ``batch_size=512``: rows solved together (memory ~ ``2 * memory * batch_size * m`` floats).
    * ``progress=False``: show a progress bar.

    ``result.c`` is the ``c`` at which the returned point (or, refined, its starting point) was
    found; ``result.evaluations`` counts model evaluations with a gradient, summed over the
    ``K - 1`` classes tried for an untargeted example. On a shared CPU run torch with one thread.
    """

    def __init__(self, *, bounds=(0.0, 1.0), refine: bool = True, initial_c: float | None = None,
                 c_factor: float = 10.0, c_rtol: float = 0.01, max_solves: int = 30, memory: int = 10,
                 max_iter: int = 100, ftol: float = 1e-5, pgtol: float = 1e-5, refine_steps: int = 5,
                 batch_size: int = 512, progress: bool = False):
        self.solver_settings = SolverSettings(
            bounds=check_bounds(bounds), initial_c=_positive("initial_c", initial_c, optional=True),
            c_factor=_greater("c_factor", c_factor, 1.0), c_rtol=_positive("c_rtol", c_rtol),
            max_solves=_count("max_solves", max_solves), memory=_count("memory", memory),
            max_iter=_count("max_iter", max_iter), ftol=_positive("ftol", ftol), pgtol=_positive("pgtol", pgtol),
            batch_size=_count("batch_size", batch_size),
        )
        self.refine_steps = _count("refine_steps", refine_steps, allow_zero=True) if refine else 0
        self.progress = progress

    @property
    def config(self) -> dict:
        """The hyper-parameters, as recorded in every result."""
        settings = dataclasses.asdict(self.solver_settings)
        settings["bounds"] = list(settings["bounds"])
        settings["refine"] = self.refine_steps > 0
        settings["refine_steps"] = self.refine_steps
        return {"method": "LBFGS", **settings}

    def __call__(self, model: nn.Module, x: torch.Tensor, *, target: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> AttackResult:
        task = make_task(model, x, target, labels, self.solver_settings.bounds)
        rows = Rows.of(task)
        objective = PenalisedLoss(model, tuple(x.shape[1:]), task.targeted)
        found = CSearch(objective, self.solver_settings, self.progress).run(rows.x, rows.goal, rows.true)
        paper_sq, best, best_sq = found.best_sq, found.best, found.best_sq
        evaluations = found.evaluations
        if self.refine_steps:
            refined = refine(model, x.shape[1:], rows.x, best, best_sq, rows.goal, rows.true, task.targeted,
                             self.solver_settings.bounds, self.refine_steps, self.solver_settings.batch_size,
                             self.progress)
            best, best_sq = refined.best, refined.best_sq
            evaluations = evaluations + refined.evaluations
        choice = _closest_row_per_example(best_sq, len(x))
        paper_choice = _closest_row_per_example(paper_sq, len(x))
        m = rows.x.shape[1]
        return verified_result(
            model, task, best[choice].reshape(x.shape),
            distortion_paper=(paper_sq[paper_choice] / m).sqrt(),
            c=found.best_c[choice],
            evaluations=torch.zeros(len(x), dtype=torch.int64, device=x.device).index_add_(0, rows.example, evaluations),
            config=self.config,
        )


def _closest_row_per_example(sq: torch.Tensor, n: int) -> torch.Tensor:
    """For each of ``n`` examples, the index of its row with the smallest squared distance.

    Rows come grouped by example, the same number per example (1, or K - 1 untargeted): (n, k).
    """
    return sq.view(n, -1).argmin(1) + torch.arange(n, device=sq.device) * (len(sq) // n)


def _positive(name: str, value, optional: bool = False):
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise IntriguingError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def _greater(name: str, value, floor: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= floor:
        raise IntriguingError(f"{name}: expected a finite number > {floor}, got {value!r}")
    return float(value)


def _count(name: str, value, allow_zero: bool = False) -> int:
    smallest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
        raise IntriguingError(f"{name}: expected an integer >= {smallest}, got {value!r}")
    return value
