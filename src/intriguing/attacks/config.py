"""Every hyper-parameter of the L-BFGS attack in one frozen, typed record (Section 4.1).

The paper's attack and its variants differ only in these numbers, so a settings class of an
experiment holds one :class:`LBFGSConfig` and the named constructors say which attack it is::

    LBFGSConfig.paper()      # Tables 1-4: the paper's c search, no refinement
    LBFGSConfig.pool()       # adversarial-training pools: the paper's attack, a coarser c search
    LBFGSConfig.refined()    # the defaults: the paper's search cut shorter, then steps to and along the boundary
    dataclasses.replace(LBFGSConfig.paper(), max_solves=10)   # a variant

Values are checked once, here, with one clear error per mistake.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from intriguing.errors import IntriguingError, check_count, check_greater, check_non_negative

# The paper-faithful search's numbers (Tables 1-4, adversarial training), which the refined attack cuts shorter.
PAPER_SEARCH = {"c_rtol": 0.01, "max_iter": 100, "stall_window": 10, "max_solves": 30}
# What the paper's attack leaves out: the refinement, the stall test, the shrink, the scale-aware and outside-in search.
PAPER_ONLY = {"refine": False, "stall_rtol": 0.0, "shrink_steps": 0, "outside_in": False, "scale_aware": False}


@dataclasses.dataclass(frozen=True)
class LBFGSConfig:
    """Hyper-parameters of :class:`~intriguing.attacks.LBFGS` (the defaults reach 100% on the MNIST zoo).

    * ``bounds=(0, 1)``: the box ``x + r`` must stay in (Eq. 1); e.g. also sigmoid activations.
    * ``refine=True``: after the paper's search, move each example towards ``x`` along the decision
      boundary (:mod:`~intriguing.attacks.refine`); ``False`` is the paper's attack.
    * ``initial_c=None``: first ``c`` per example (``None``: estimated from the gradient at ``x``).
    * ``scale_aware=True``: on inputs larger than MNIST's ``m = 784`` values, that estimate is lowered by
      ``sqrt(784 / m)`` (x0.07 at 3x224x224), so the first solve lands on the target's side
      (:meth:`~intriguing.attacks.solver.CSearch._initial_c`). ``False``, as in :meth:`paper` and :meth:`pool`:
      the estimate itself, which MNIST needs.
    * ``outside_in=True``: the search approaches the boundary from the target's side, as solves cut short by
      ``max_iter`` (large inputs) need: the solve after a failed one starts from the adversarial end of the
      bracket, not from the failed minimiser; a solve started adversarial ends once its margin falls
      below -1 logit (``c`` is too large); a solve cut short that failed from a non-adversarial start
      does not bound ``c``; before a bracket exists, solves cut short move ``c`` by ``sqrt(c_factor)``
      (:meth:`~intriguing.attacks.solver.CSearch._next_c`). ``False``, as in :meth:`paper` and :meth:`pool`:
      the paper's search, each solve warm-started from the previous one.
      With ``scale_aware``, ``max_iter=20`` and ``max_solves=8`` on EfficientNet-Lite0, five 3x224x224 photos
      (``benchmarks/imagenet_attack.py``, the whole attack): 228 -> 178 evaluations per image, median
      distortion -8% (every photo 5-21% less); MNIST FC100-100-10 (500 rows): 77.9 -> 73.2 evaluations,
      the same median distortion.
    * ``c_factor=10``: the most ``c`` may grow or shrink in one step before it is bracketed.
    * ``c_rtol=0.05``: the ``c`` search stops when ``c_fail / c_adv <= 1 + c_rtol`` (the paper's
      attack: 0.01).
    * ``max_solves=8``: at most this many L-BFGS solves (values of ``c``) per example (the paper's
      attack: 30). On large inputs, where every solve is cut short, this caps the evaluations (about
      ``max_solves * max_iter``); MNIST's searches rarely reach it.
    * ``memory=10``: L-BFGS curvature pairs per example.
    * ``max_iter=20``, ``ftol=1e-5``, ``pgtol=1e-5``: a solve stops after ``max_iter`` iterations
      (the paper's attack: 100), when the objective falls by less than ``ftol`` (relative), or when
      the projected gradient's largest entry is below ``pgtol``.
    * ``stall_window=5``, ``stall_rtol=1e-3``: a solve also stops when its last ``stall_window``
      iterations together lowered the objective by at most ``stall_rtol`` (relative, as ``ftol``).
      On ReLU networks the loss is piecewise linear, its gradient never becomes small and L-BFGS
      creeps on with tiny decreases; this test ends such solves. ``0`` turns it off, as in
      :meth:`paper` and :meth:`pool`, whose MNIST numbers (Tables 1-4, adversarial training) stay
      exactly as before (they also keep ``c_rtol=0.01``, ``max_iter=100``, ``max_solves=30``:
      :data:`PAPER_SEARCH`).
      The refined attack's shorter search (``c_rtol``, ``max_iter``, ``stall_window`` above) on
      EfficientNet-Lite0, two 3x96x96 photos: 454 -> 180 evaluations per image for the search,
      distortion +0.3% and +3.7%; MNIST FC100-100-10 (whole attack): 71 -> 68 evaluations, the same
      median distortion. ``max_iter`` 30 -> 20 and ``max_solves`` 30 -> 8 came with ``outside_in`` (at
      3x224x224, 15 iterations and 10 solves: 12% fewer evaluations, 1.4% more distortion; 25 and 7: 10%
      more evaluations, the same distortion).
    * ``shrink_steps=5``: after the search and the refinement, move each result along its ray
      towards ``x`` to the decision boundary (:mod:`~intriguing.attacks.radial`, a cheap phase beyond
      the paper: forward passes of the result and of ``x``, then ``shrink_steps`` more, each counted as an
      evaluation; results already on the boundary, e.g. refined ones on MNIST, cost one). The
      solves, cut short on large inputs, end well inside the target's region; this keeps their
      direction and fixes the length (EfficientNet-Lite0, two 3x224x224 photos: 7% and 3% less
      distortion for 7 evaluations). ``0`` turns it off, as in :meth:`paper` and :meth:`pool`.
    * ``refine_steps=8``: at most this many linearise-and-project steps (used when ``refine``), and,
      on a chain of ``Linear`` and ``ReLU`` layers, at most this many moves between linear regions
      (:mod:`~intriguing.attacks.regions`). A row stops early once its steps settle, or once a step
      fails and its linear model missed by far (EfficientNet-Lite0 at 3x224x224: 6 evaluations per
      photo, where 5 steps used to spend 30 and never succeeded). Against 5 steps without those
      rules: FC20-20-10(ReLU), 20 exact problems, refined/exact median 1.029 -> 1.000, worst 1.110 ->
      1.040 (300 targeted: median distortion -2.2%, mean -3.9%, evaluations 104 -> 104, CPU time x10:
      the region QPs); MNIST FC100-100-10, 500 targeted: median -0.2%, evaluations 77.0 -> 78.3.
    * ``batch_size=512``: rows solved together (memory ~ ``2 * memory * batch_size * m`` floats).
    """

    bounds: tuple[float, float] = (0.0, 1.0)
    refine: bool = True
    initial_c: float | None = None
    c_factor: float = 10.0
    c_rtol: float = 0.05
    max_solves: int = 8
    memory: int = 10
    max_iter: int = 20
    ftol: float = 1e-5
    pgtol: float = 1e-5
    refine_steps: int = 8
    batch_size: int = 512
    stall_window: int = 5
    stall_rtol: float = 1e-3
    shrink_steps: int = 5
    outside_in: bool = True
    scale_aware: bool = True

    def __post_init__(self) -> None:
        checked = {
            "bounds": check_bounds(self.bounds),
            "refine": _flag("refine", self.refine),
            "outside_in": _flag("outside_in", self.outside_in),
            "scale_aware": _flag("scale_aware", self.scale_aware),
            "initial_c": None if self.initial_c is None else check_greater("initial_c", self.initial_c),
            "c_factor": check_greater("c_factor", self.c_factor, 1.0),
            "c_rtol": check_greater("c_rtol", self.c_rtol),
            "ftol": check_greater("ftol", self.ftol),
            "pgtol": check_greater("pgtol", self.pgtol),
            "refine_steps": check_count("refine_steps", self.refine_steps, smallest=0),
            "stall_rtol": check_non_negative("stall_rtol", self.stall_rtol, " (0 turns it off)"),
            "shrink_steps": check_count("shrink_steps", self.shrink_steps, smallest=0),
        }
        for name in ("max_solves", "memory", "max_iter", "batch_size", "stall_window"):
            checked[name] = check_count(name, getattr(self, name))
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def paper(cls, **overrides: Any) -> LBFGSConfig:
        """The paper-faithful attack of Tables 1-4: the ``c`` search alone to 1%, no refinement, no
        shrinking, every solve run to ``ftol``/``pgtol``/``max_iter=100`` (no stall test)."""
        return cls.refined(**{**PAPER_SEARCH, **PAPER_ONLY, **overrides})

    @classmethod
    def pool(cls, **overrides: Any) -> LBFGSConfig:
        """The adversarial-training pool attack: the paper's, with at most 8 solves and ``c`` to 10%."""
        return cls.refined(**{**PAPER_SEARCH, **PAPER_ONLY, "max_solves": 8, "c_rtol": 0.1, **overrides})

    @classmethod
    def refined(cls, **overrides: Any) -> LBFGSConfig:
        """The defaults: the paper's search cut shorter (``c`` to 5%, at most 8 solves of at most 20
        iterations, the stall test), started scale-aware and run outside-in, then linearise-and-project
        steps towards ``x`` and a shrink along the ray."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise IntriguingError(
                f"{unknown[0]}: not an LBFGS hyper-parameter; choose from {', '.join(sorted(known))}")
        return cls(**overrides)

    def to_dict(self) -> dict[str, Any]:
        """The record stored with every result (``method``, the solver's settings, ``refine_steps``
        0 when ``refine`` is off)."""
        record: dict[str, Any] = {"method": "LBFGS", "bounds": list(self.bounds)}
        for name in ("initial_c", "c_factor", "c_rtol", "max_solves", "memory", "max_iter", "ftol", "pgtol",
                     "stall_window", "stall_rtol", "shrink_steps", "outside_in", "scale_aware", "batch_size"):
            record[name] = getattr(self, name)
        record["refine"] = self.refine
        record["refine_steps"] = self.refine_steps if self.refine else 0
        return record


def check_bounds(bounds: Any) -> tuple[float, float]:
    """``bounds`` as a pair of finite floats ``(low, high)`` with ``low < high``."""
    try:
        if isinstance(bounds, (str, bytes)):  # "01" would be read character by character as (0, 1)
            raise TypeError
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise IntriguingError(f"bounds: expected a pair (low, high) of numbers, got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise IntriguingError(f"bounds: expected finite low < high, got ({low}, {high})")
    return low, high


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise IntriguingError(f"{name}: expected True or False, got {value!r}")
    return value
