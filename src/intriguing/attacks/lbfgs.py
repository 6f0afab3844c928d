"""The paper's attack: box-constrained L-BFGS with a line search on ``c`` (Section 4.1), batched.

Szegedy et al. define the minimal adversarial perturbation of ``x`` towards class ``l`` as the
solution of ``minimise ||r||  subject to  f(x + r) = l,  x + r in [0, 1]^m`` (Eq. 1) and
approximate it by minimising ``c |r|^2 + loss_f(x + r, l)`` over the box with L-BFGS, searching for
the largest ``c`` whose minimiser is still classified as ``l`` (the smallest ``r``). This module
turns a batch of inputs into *rows* (one per input and class to reach), runs that search for all
rows at once (:mod:`intriguing.attacks.solver`), optionally refines each result towards ``x``
(:mod:`intriguing.attacks.refine`) and shrinks it along its ray to the decision boundary
(:mod:`intriguing.attacks.radial`), and re-verifies everything (:mod:`intriguing.attacks.base`).

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
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from intriguing.attacks.base import Attack, Found, Task
from intriguing.attacks.config import LBFGSConfig
from intriguing.attacks.criteria import Criterion, safe, success_margin
from intriguing.attacks.radial import shrink
from intriguing.attacks.refine import refine
from intriguing.attacks.solver import CSearch
from intriguing.errors import IntriguingError
from intriguing.numerics import subnormals_flushed


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
        example, goal, true = task.criterion.rows(task.num_classes)
        flat = task.x.detach().flatten(1)
        return Rows(flat[example], goal, true, example)


class PenalisedLoss:
    """The paper's objective per row, ``c ||z - x||^2 + CE(model(z), goal)``, with its gradient.

    It also returns the margin of ``goal`` over the other classes (which steers the ``c`` search)
    and whether the point counts as a success under the attack's criterion (the ``goal`` safely on
    top, or, untargeted, ``true`` safely beaten). Only the input gets a gradient
    (``torch.autograd.grad``): nothing accumulates in the model's parameters and its train/eval
    mode is left alone.
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], criterion: Criterion):
        self.model, self.shape, self.criterion = model, shape, criterion
        self._work = torch.empty(0)

    def __call__(self, z: torch.Tensor, x: torch.Tensor, goal: torch.Tensor, true: torch.Tensor,
                 c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, gradient, margin of ``goal``, success and ``|z - x|^2`` of each row at ``z``."""
        with torch.enable_grad():
            point = z.detach().requires_grad_(True)
            logits = self.model(point.view(-1, *self.shape))
            loss = F.cross_entropy(logits, goal, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), point)
        logits = logits.detach()
        r, r2 = self._buffers(z)  # a product into a fresh (512, 784) tensor costs ~1 ms in the attack (issue 14)
        torch.sub(z, x, out=r)
        sq = torch.pow(r, 2, out=r2).sum(1)
        finite = torch.isfinite(logits).all(1)
        value = torch.where(finite, torch.addcmul(loss.detach(), c, sq), math.inf)
        margin = success_margin(logits, goal, targeted=True)
        # A targeted row's class is its goal, so its success margin is this one; untargeted, it is the true class's.
        success = safe(finite, margin if self.criterion.targeted else self.criterion.margin(logits, true))
        grad.addcmul_(r, 2 * c[:, None])  # autograd's fresh tensor: the penalty's gradient is added in place
        return value, grad, torch.where(finite, margin, -math.inf), success, sq

    def _buffers(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two work tensors shaped like ``z``, kept from call to call while the batch keeps its shape."""
        if self._work.shape != (2, *z.shape) or self._work.dtype != z.dtype or self._work.device != z.device:
            self._work = z.new_empty(2, *z.shape)
        return self._work[0], self._work[1]


class LBFGS(Attack):
    """Minimal adversarial examples by box-constrained L-BFGS with a per-example ``c`` search.

    Paper: Szegedy et al. 2014, Section 4.1 (Eq. 1), L2 norm, box ``config.bounds``. Call it as
    ``attack(model, x, Targeted(t))`` / ``attack(model, x, target=t)`` (targeted) or
    ``attack(model, x, Untargeted(y))`` / ``attack(model, x, labels=y)`` (untargeted: the
    smallest perturbation over all classes ``l != y``). ``model`` is any classifier returning
    logits (N, K), ideally in eval mode; ``x`` is (N, ...) inside the box.

    ``config`` is an :class:`~intriguing.attacks.LBFGSConfig` (default ``LBFGSConfig.refined()``);
    keyword ``overrides`` replace its fields, e.g. ``LBFGS(LBFGSConfig.paper(), max_solves=10)``;
    the paper's attack is ``LBFGS(LBFGSConfig.paper())``. ``progress=True`` shows a progress bar.

    ``result.c`` is the ``c`` at which the returned point (or, refined, its starting point) was
    found; ``result.evaluations`` counts model evaluations with a gradient (and the shrink's forward
    passes without one, each as a full evaluation), summed over the ``K - 1`` classes tried for an
    untargeted example. On a shared CPU run torch with one thread.
    """

    def __init__(self, config: LBFGSConfig | None = None, *, progress: bool = False, **overrides: Any):
        if config is not None and not isinstance(config, LBFGSConfig):
            raise IntriguingError(f"config: expected an LBFGSConfig, got {type(config).__name__}")
        base = config if config is not None else LBFGSConfig.refined()
        self.config = LBFGSConfig.refined(**{**_fields(base), **overrides}) if overrides else base
        self.progress = progress

    @property
    def bounds(self) -> tuple[float, float]:
        return self.config.bounds

    def record(self) -> dict[str, Any]:
        """The hyper-parameters, as recorded in every result."""
        return self.config.to_dict()

    def _search(self, model: nn.Module, task: Task) -> Found:
        """The paper's ``c`` search on every row, optionally refined, then shrunk along each ray, reduced to
        one point per input."""
        cfg, x = self.config, task.x
        rows = Rows.of(task)
        objective = PenalisedLoss(model, tuple(x.shape[1:]), task.criterion)
        with subnormals_flushed():  # the hot path neither makes nor meets subnormal floats
            found = CSearch(objective, cfg, self.progress).run(rows.x, rows.goal, rows.true)
            paper_sq, best, best_sq = found.best_sq, found.best, found.best_sq
            evaluations = found.evaluations
            if cfg.refine and cfg.refine_steps:
                refined = refine(model, x.shape[1:], rows.x, best, best_sq, rows.goal, rows.true, task.criterion,
                                 cfg.bounds, cfg.refine_steps, cfg.batch_size, self.progress)
                best, best_sq = refined.best, refined.best_sq
                evaluations = evaluations + refined.evaluations
            if cfg.shrink_steps:
                shrunk = shrink(model, x.shape[1:], rows.x, best, best_sq, rows.true, task.criterion, cfg.shrink_steps,
                                cfg.batch_size)
                best, best_sq = shrunk.best, shrunk.best_sq
                evaluations = evaluations + shrunk.evaluations
        choice = _closest_row_per_example(best_sq, len(x))
        paper_choice = _closest_row_per_example(paper_sq, len(x))
        m = rows.x.shape[1]
        return Found(
            adversarial=best[choice].reshape(x.shape),
            distortion_paper=(paper_sq[paper_choice] / m).sqrt(),
            c=found.best_c[choice],
            evaluations=torch.zeros(len(x), dtype=torch.int64, device=x.device).index_add_(0, rows.example,
                                                                                           evaluations),
        )


def _fields(config: LBFGSConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _closest_row_per_example(sq: torch.Tensor, n: int) -> torch.Tensor:
    """For each of ``n`` examples, the index of its row with the smallest squared distance.

    Rows come grouped by example, the same number per example (1, or K - 1 untargeted): (n, k).
    """
    return sq.view(n, -1).argmin(1) + torch.arange(n, device=sq.device) * (len(sq) // n)
