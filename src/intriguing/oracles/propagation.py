"""Sound bounds on a network's pre-activations over a set of inputs: interval and linear (CROWN) propagation.

The input set is the box ``[0, 1]^m`` around an image ``x0`` intersected with an L-inf ball or an
L2 ball (a :class:`Domain`). Two methods bound every neuron's pre-activation ``z_k`` on it:

* **interval** (IBP): push ``[l, u]`` through each layer with ``W+ l + W- u``; fast, loose;
* **linear** (CROWN, Zhang et al. 2018, "Efficient neural network robustness certification with
  general activation functions"): relax each activation between two lines on ``[l, u]`` and
  substitute backwards to a linear function of the input, minimised exactly over the domain.

These bounds are what makes the exact MIP small (Tjeng et al. 2019: a neuron whose bounds do not
straddle 0 needs no binary variable, and tight bounds make a tight big-M), and a proof that the
target class cannot win inside a ball is a certified lower bound on the minimal distortion
(Szegedy et al. 2014, Sec. 4.1, Eq. 1). Everything is float64; the bounds are valid up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from intriguing.errors import IntriguingError
from intriguing.chains import Chain

Bounds = list[tuple[torch.Tensor, torch.Tensor]]  # per hidden layer k: (lower, upper) of z_k


@dataclass(frozen=True)
class Domain:
    """Inputs ``x`` with ``low <= x <= high`` (the box, already cut to the L-inf ball) and ``||x - x0||_2 <= radius``.

    ``radius=math.inf`` means no L2 constraint. Build it with :meth:`linf` or :meth:`l2`.
    """

    x0: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    radius: float = math.inf

    @staticmethod
    def linf(x0: torch.Tensor, eps: float, bounds: tuple[float, float] = (0.0, 1.0)) -> Domain:
        x0 = x0.double()
        return Domain(x0, (x0 - eps).clamp(min=bounds[0]), (x0 + eps).clamp(max=bounds[1]))

    @staticmethod
    def l2(x0: torch.Tensor, radius: float, bounds: tuple[float, float] = (0.0, 1.0)) -> Domain:
        """The L2 ball of ``radius`` around ``x0`` inside the box (every coordinate moves at most ``radius``)."""
        cut = Domain.linf(x0, radius, bounds)
        return Domain(cut.x0, cut.low, cut.high, float(radius))

    def minimise(self, a: torch.Tensor, c: torch.Tensor, multiplier: torch.Tensor | None = None) -> torch.Tensor:
        """A lower bound on ``min a_i . x + c_i`` over the domain, for each row of ``a`` (k, m).

        ``multiplier`` (k, 1): the ball's dual multipliers to use instead of the optimal ones
        (:meth:`multiplier`); any positive value gives a sound bound.
        """
        box = a.clamp(min=0) @ self.low + a.clamp(max=0) @ self.high + c
        if math.isinf(self.radius):
            return box
        return torch.maximum(box, self._l2_dual(a, multiplier) + c)

    def _l2_dual(self, a: torch.Tensor, lam: torch.Tensor | None = None) -> torch.Tensor:
        """Lagrangian dual of ``min a.x`` over box and ball: ``max_lam min_box a.x + lam (||x - x0||^2 - r^2)``.

        For fixed ``lam > 0`` the inner minimiser is the clipped point ``x0 - a / (2 lam)``; every
        ``lam`` gives a valid bound (weak duality), and :meth:`multiplier` finds the one where the
        ball constraint becomes tight (the dual optimum).
        """
        lam = self.multiplier(a) if lam is None else lam
        x = self.inner(a, lam)
        return (a * x).sum(1) + lam.squeeze(1) * ((x - self.x0).pow(2).sum(1) - self.radius**2)

    def multiplier(self, a: torch.Tensor) -> torch.Tensor:
        """Per row of ``a`` (k, m) the dual multiplier (k, 1) at which ``x0 - t a`` clipped to the box has norm ``radius``.

        With ``t = 1 / (2 lam)`` coordinate ``i`` moves as ``-t a_i`` until it hits its box face at
        ``t_i``; so ``||x(t) - x0||^2`` is ``sum_{t_i <= t} face_i^2 + t^2 sum_{t_i > t} a_i^2``, piecewise
        quadratic and increasing. Sorting the ``t_i`` finds the piece where it crosses ``r^2`` and
        solves it in closed form: exact, in one sort (a bisection needs ~50 passes). Where the whole
        clipped ray stays inside the ball the multiplier is tiny (the box bound is then the answer).
        """
        a = a.detach()
        face = torch.where(a > 0, self.low - self.x0, self.high - self.x0)  # where -t a_i stops, (k, m)
        safe = torch.where(a == 0, 1.0, a)
        t_hit = torch.where(a == 0, math.inf, (-face / safe).clamp(min=0))
        t_hit, order = t_hit.sort(dim=1)
        face_sq = face.gather(1, order).pow(2)
        a_sq = a.gather(1, order).pow(2)
        done = face_sq.cumsum(1)  # coordinates stopped at their face, up to and including j
        moving = a_sq.sum(1, keepdim=True) - a_sq.cumsum(1)  # coordinates still moving after j
        at_hit = torch.where(torch.isinf(t_hit), math.inf, done + t_hit.clamp(max=1e150).pow(2) * moving.clamp(min=0))
        inside = (at_hit <= self.radius**2).sum(1, keepdim=True)  # breakpoints inside the ball
        stopped = torch.where(inside > 0, done.gather(1, (inside - 1).clamp(min=0)), 0.0)
        rest = torch.where(inside > 0, moving.gather(1, (inside - 1).clamp(min=0)), a_sq.sum(1, keepdim=True))
        t = ((self.radius**2 - stopped).clamp(min=0) / rest.clamp(min=1e-300)).sqrt()
        t = torch.where(rest > 0, t, 1e300)
        return 1.0 / (2.0 * t.clamp(min=1e-300, max=1e300))

    def inner(self, a: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """The minimiser over the box of ``a.x + lam ||x - x0||^2``: ``x0 - a / (2 lam)`` clipped."""
        return torch.minimum(torch.maximum(self.x0 - a / (2 * lam), self.low), self.high)


def relaxation(kind: str, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Lines ``(ls, li, us, ui)`` with ``ls z + li <= phi(z) <= us z + ui`` for every ``z`` in ``[low, high]``.

    ReLU: the triangle relaxation with CROWN's adaptive lower slope (1 if ``high > -low`` else 0).
    Sigmoid: chord and tangent where it is convex (``high <= 0``) or concave (``low >= 0``); across 0
    two parallel lines of the smallest slope on the interval (valid since the slope never falls below it).
    """
    if kind == "relu":
        return _relu_relaxation(low, high)
    if kind == "sigmoid":
        return _sigmoid_relaxation(low, high)
    raise IntriguingError(f"relaxation: unknown activation {kind!r}")


def _relu_relaxation(low, high):
    active, unstable = low >= 0, (low < 0) & (high > 0)
    width = (high - low).clamp(min=1e-300)
    us = torch.where(active, 1.0, torch.where(unstable, high / width, 0.0))
    ui = torch.where(unstable, -low * high / width, 0.0)
    ls = torch.where(active, 1.0, torch.where(unstable & (high > -low), 1.0, 0.0))
    return ls.double(), torch.zeros_like(low), us.double(), ui


def _sigmoid_relaxation(low, high):
    s_low, s_high = torch.sigmoid(low), torch.sigmoid(high)
    slope = lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))  # noqa: E731
    narrow = (high - low) < 1e-9
    chord = torch.where(narrow, slope(low), (s_high - s_low) / (high - low).clamp(min=1e-300))
    mid = (low + high) / 2
    tangent_s, tangent_i = slope(mid), torch.sigmoid(mid) - slope(mid) * mid
    chord_i = s_low - chord * low
    flat = torch.minimum(slope(low), slope(high))  # the smallest slope on [low, high]
    convex, concave = high <= 0, low >= 0
    ls = torch.where(convex, tangent_s, torch.where(concave, chord, flat))
    li = torch.where(convex, tangent_i, torch.where(concave, chord_i, s_low - flat * low))
    us = torch.where(convex, chord, torch.where(concave, tangent_s, flat))
    ui = torch.where(convex, chord_i, torch.where(concave, tangent_i, s_high - flat * high))
    return ls, li - 1e-12, us, ui + 1e-12  # a hair of slack for rounding


def interval_bounds(chain: Chain, domain: Domain) -> Bounds:
    """Interval bounds (IBP) on every hidden pre-activation ``z_k``, ``k < L - 1``."""
    low, high = domain.low, domain.high
    out: Bounds = []
    for k, kind in enumerate(chain.activations):
        w, b = chain.weights[k], chain.biases[k]
        pos, neg = w.clamp(min=0), w.clamp(max=0)
        zl, zu = pos @ low + neg @ high + b, pos @ high + neg @ low + b
        out.append((zl, zu))
        low, high = _monotone(kind, zl), _monotone(kind, zu)
    return out


def _monotone(kind: str, z: torch.Tensor) -> torch.Tensor:
    return torch.relu(z) if kind == "relu" else torch.sigmoid(z)


def backward_lower(chain: Chain, layer: int, spec: torch.Tensor, bounds: Bounds, domain: Domain) -> torch.Tensor:
    """CROWN: a lower bound on ``spec @ z_layer`` over the domain for each row of ``spec`` (rows, n_layer).

    Walks back from layer ``layer``: each activation is replaced by its lower line where the
    coefficient is positive and its upper line where negative, each affine map is substituted.
    Needs ``bounds[k]`` for every ``k < layer``.
    """
    lam = spec @ chain.weights[layer]
    const = spec @ chain.biases[layer]
    for k in reversed(range(layer)):
        ls, li, us, ui = relaxation(chain.activations[k], *bounds[k])
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        const = const + pos @ li + neg @ ui
        lam = pos * ls + neg * us
        const = const + lam @ chain.biases[k]
        lam = lam @ chain.weights[k]
    return domain.minimise(lam, const)


def linear_bounds(chain: Chain, domain: Domain) -> Bounds:
    """CROWN bounds on every hidden pre-activation, intersected with the interval bounds (both are sound)."""
    ibp = interval_bounds(chain, domain)
    out: Bounds = []
    for k in range(len(chain.activations)):
        n = chain.weights[k].shape[0]
        eye = torch.eye(n, dtype=torch.float64)
        both = backward_lower(chain, k, torch.cat([eye, -eye]), out, domain)  # lower of z and of -z
        zl, zu = torch.maximum(both[:n], ibp[k][0]), torch.minimum(-both[n:], ibp[k][1])
        out.append((zl, torch.maximum(zu, zl)))
    return out


def layer_bounds(chain: Chain, domain: Domain, method: str = "linear") -> Bounds:
    """Bounds on every hidden pre-activation by ``method``: ``"linear"`` (CROWN) or ``"interval"`` (IBP)."""
    if method == "linear":
        return linear_bounds(chain, domain)
    if method == "interval":
        return interval_bounds(chain, domain)
    raise IntriguingError(f"method: expected 'linear' or 'interval', got {method!r}")


def margin_lower_bounds(chain: Chain, target: int, bounds: Bounds, domain: Domain) -> torch.Tensor:
    """Lower bounds on ``logit_j - logit_target`` for every class ``j`` (``-inf`` at ``j = target``).

    If any entry is positive, class ``j`` beats the target everywhere in the domain, so the target
    cannot win there.
    """
    k = chain.num_classes
    others = [j for j in range(k) if j != target]
    spec = torch.zeros(len(others), k, dtype=torch.float64)
    spec[range(len(others)), others] = 1.0
    spec[:, target] = -1.0
    out = torch.full((k,), -math.inf, dtype=torch.float64)
    out[others] = backward_lower(chain, len(chain.weights) - 1, spec, bounds, domain)
    return out


def split_bounds(chain: Chain, domain: Domain, base: Bounds, phases: list[torch.Tensor]) -> Bounds | None:
    """Bounds on every hidden layer inside one branch-and-bound node, or None if the node is empty.

    ``phases[k]`` holds 1 (active: ``z >= 0``), -1 (inactive: ``z <= 0``) or 0 (open) per neuron of
    layer ``k``; ``base`` are bounds valid on the whole domain. A fixed neuron is linear inside the
    node, so re-running CROWN through it tightens every later layer, as in the branch and bound of
    BaBSR and beta-CROWN (Bunel et al. 2020; Wang et al. 2021), which rebound after every split.
    Only neurons still unstable are re-bounded (the others cannot gain).
    """
    out: Bounds = []
    for k in range(len(chain.activations)):
        lo, hi = base[k][0].clone(), base[k][1].clone()
        open_ = ((lo < 0) & (hi > 0)).nonzero().squeeze(1)
        if k > 0 and len(open_):
            rows = torch.zeros(len(open_), len(lo), dtype=torch.float64)
            rows[torch.arange(len(open_)), open_] = 1.0
            both = backward_lower(chain, k, torch.cat([rows, -rows]), out, domain)
            lo[open_] = torch.maximum(lo[open_], both[: len(open_)])
            hi[open_] = torch.minimum(hi[open_], -both[len(open_):])
        lo = torch.where(phases[k] > 0, lo.clamp(min=0), lo)
        hi = torch.where(phases[k] < 0, hi.clamp(max=0), hi)
        if (lo > hi + 1e-9).any():
            return None
        out.append((lo, torch.maximum(hi, lo)))
    return out
