"""A batched, box-constrained L-BFGS solver that searches the penalty constant ``c`` per row.

The paper (Section 4.1) finds adversarial examples by minimising, for a row ``(x, l)``::

    f_c(z) = c * ||z - x||^2 + loss(z, l)      subject to  low <= z <= high,      (z = x + r)

with box-constrained L-BFGS, for the largest ``c`` whose minimiser is still adversarial. Here
every row of a batch runs that whole procedure at once, on tensors shaped (B, m):

* **projected L-BFGS** (L-BFGS-B style): coordinates held at a bound by the gradient stay fixed,
  the quasi-Newton direction is computed on the others, and trial points are projected onto the
  box, so the box is respected exactly, never by a change of variables or a clamp after the fact;
* each row has its own memory of ``(s, y)`` pairs (:class:`~intriguing.attacks.memory.CompactMemory`),
  its own backtracking Armijo line search (per-row step sizes) and its own convergence test;
* the ``c`` search is per row (:mod:`~intriguing.attacks.c_search`: the first ``c``, the bracket, the
  next ``c``); each solve is warm-started and keeps its curvature pairs, corrected exactly for the new ``c``;
* the closest successful point seen at *any* function evaluation is kept, not only minimisers;
* the batch is a set of *slots* that stream rows: a row that finishes frees its slot for the next
  row, so each model call serves a full batch until the queue runs dry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from intriguing.attacks.c_search import PenaltySearch, norm2
from intriguing.attacks.config import LBFGSConfig
from intriguing.attacks.criteria import SAFE_MARGIN
from intriguing.attacks.memory import CompactMemory

LOST_MARGIN = 1.0  # logits: a solve started adversarial ends below this margin (``outside_in``)

# Slot phases: empty; waiting for the evaluation at the clean input; needing a new search
# direction; waiting for the evaluation of a trial step.
EMPTY, START, DIRECTION, TRIAL = 0, 1, 2, 3

# Objective: (z, x, goal, true, c) rows -> (f, grad f, margin of goal, success to record, |z - x|^2) rows.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                     tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class SearchOutcome:
    """Per row: the closest adversarial point seen (the clean input where none), its squared L2
    distance (inf where none), the ``c`` it was found at, and the evaluations spent."""

    best: torch.Tensor
    best_sq: torch.Tensor
    best_c: torch.Tensor
    evaluations: torch.Tensor


class _Slots:
    """The solver's per-slot state: tensors shaped (B, ...), and the slots' L-BFGS memory.

    ``margin`` is the success margin at ``z``; ``c_adv``/``m_adv`` the largest ``c`` whose minimiser
    was adversarial and that minimiser's margin, ``c_fail``/``m_fail`` the smallest failing one;
    ``m_clean`` is the margin at the clean input, ``c_prev``/``m_prev`` the previous solve's;
    ``side`` says which end of the bracket moved last.
    """

    PER_SLOT = ("row", "phase", "x", "goal", "true", "z", "f", "g", "margin", "d", "step", "iters", "backtracks",
                "c", "c_adv", "m_adv", "c_fail", "m_fail", "m_clean", "c_prev", "m_prev", "side", "solves", "f_hist",
                "z_adv", "g_adv", "f_adv", "margin_adv", "start_adv")

    def __init__(self, n: int, m: int, memory: int, like: torch.Tensor, window: int = 1, outside_in: bool = False):
        floats = dict(device=like.device, dtype=like.dtype)
        ints = dict(device=like.device, dtype=torch.int64)
        self.row = torch.full((n,), -1, **ints)
        self.phase = torch.full((n,), EMPTY, **ints)
        self.goal, self.true, self.iters, self.backtracks, self.solves, self.side = (
            torch.zeros(n, **ints) for _ in range(6))
        self.x, self.z, self.g, self.d = (torch.zeros(n, m, **floats) for _ in range(4))
        (self.f, self.margin, self.step, self.c, self.c_adv, self.m_adv, self.c_fail, self.m_fail, self.m_clean,
         self.c_prev, self.m_prev, self.f_adv, self.margin_adv) = (torch.zeros(n, **floats) for _ in range(13))
        # The solver's state at the adversarial end of the bracket (``outside_in``): z, the gradient and f at c_adv.
        self.z_adv, self.g_adv = (torch.zeros(n, m if outside_in else 0, **floats) for _ in range(2))
        self.start_adv = torch.zeros(n, device=like.device, dtype=torch.bool)  # the solve started adversarial
        self.f_hist = torch.zeros(n, window, **floats)  # f after each of the last ``window`` iterations
        self.memory = CompactMemory(n, m, memory, like)
        self._scratch(n, m)

    def _scratch(self, n: int, m: int) -> None:
        """Work buffers (n, m), reused every iteration: inside the attack a product into a fresh (512, 784)
        tensor took 1.2 ms on average (torch.profiler, FC100-100-10), into a reused one 0.1-0.3 ms (issue 14).
        ``free`` holds the free-coordinate mask while a direction is built, ``work`` any other product."""
        self.free, self.work = (self.z.new_empty(n, m) for _ in range(2))

    def __len__(self) -> int:
        return len(self.row)

    def keep(self, index: torch.Tensor) -> None:
        """Drop every slot not in ``index`` (used when the queue is empty and the batch thins out)."""
        for name in self.PER_SLOT:
            setattr(self, name, getattr(self, name)[index])
        self.memory.keep(index)
        self._scratch(*self.z.shape)


class CSearch(PenaltySearch):
    """Runs the per-row ``c`` search over all rows, streaming them through ``batch_size`` slots."""

    ARMIJO = 1e-4
    MAX_BACKTRACKS = 20
    FULL_BATCH = 0.75  # evaluate every slot while at least this share of them is occupied
    # From this many values in a (B, m) batch on, an update of a few rows gathers them rather than making a
    # pass over every row (a pass costs ~1 ns a value, a gather ~10 us a call: about even at 2^15 values).
    GATHER_FROM = 1 << 15

    def __init__(self, objective: Objective, settings: LBFGSConfig, progress: bool = False):
        self.objective = objective
        self.settings = settings
        self.low, self.high = settings.bounds
        self.progress = progress

    def run(self, x: torch.Tensor, goal: torch.Tensor, true: torch.Tensor) -> SearchOutcome:
        """Search every row ``(x[i], goal[i])``; ``true`` goes to the objective's success test."""
        self.rows_x, self.rows_goal, self.rows_true = x, goal, true
        n_rows, m = x.shape
        self.out = SearchOutcome(
            best=x.clone(),
            best_sq=torch.full((n_rows,), math.inf, device=x.device, dtype=x.dtype),
            best_c=torch.full((n_rows,), math.nan, device=x.device, dtype=x.dtype),
            evaluations=torch.zeros(n_rows, device=x.device, dtype=torch.int64),
        )
        self.one = torch.ones((), device=x.device, dtype=torch.int64)  # an evaluation, counted
        self.slots = _Slots(min(self.settings.batch_size, n_rows), m, self.settings.memory, x,
                            self.settings.stall_window, self.settings.outside_in)
        self.next_row = 0
        with tqdm(total=n_rows, desc="attack (c search)", unit="row",
                  disable=None if self.progress else True,
                  leave=False) as self.bar:
            self._load()
            while (self.slots.phase != EMPTY).any():
                self._iterate()
        return self.out

    # -- the iteration -------------------------------------------------------------------------

    def _iterate(self) -> None:
        """One batched model evaluation and everything it decides, for every occupied slot."""
        s = self.slots
        need = s.phase == DIRECTION
        if need.any():
            self._new_directions(need)
        starting = s.phase == START
        trial = torch.addcmul(s.z, s.step[:, None], s.d).clamp_(self.low, self.high)  # d = 0 at START
        f, g, margin, success, sq = self._evaluate(trial)
        self._record_best(trial, success, sq)
        if starting.any():
            self._start(starting, f, g, margin, success)
        self._line_search(s.phase == TRIAL, trial, f, g, margin)
        self._load()

    def _evaluate(self, trial: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``f``, its gradient, the margin, success and ``|trial - x|^2`` for the occupied slots
        (inf, -, -inf, False, - elsewhere).

        While at least ``FULL_BATCH`` of the slots are occupied, the empty ones (stale but finite
        rows) are evaluated too: cheaper than gathering the live rows and scattering the results.
        """
        s = self.slots
        occupied = s.phase != EMPTY
        live = occupied.nonzero().squeeze(1)
        c = s.c.masked_fill(s.phase == START, 0.0)
        self.out.evaluations.index_put_((s.row[live],), self.one, accumulate=True)
        if len(live) >= self.FULL_BATCH * len(s):
            f, g, margin, success, sq = self.objective(trial, s.x, s.goal, s.true, c)
            if len(live) == len(s):
                return f, g, margin, success, sq
            return (torch.where(occupied, f, math.inf), g, torch.where(occupied, margin, -math.inf),
                    success & occupied, sq)
        f = torch.full_like(s.f, math.inf)
        g = torch.zeros_like(s.g)
        margin = torch.full_like(s.f, -math.inf)
        success = torch.zeros_like(s.row, dtype=torch.bool)
        sq = torch.zeros_like(s.f)
        f[live], g[live], margin[live], success[live], sq[live] = self.objective(
            trial[live], s.x[live], s.goal[live], s.true[live], c[live])
        return f, g, margin, success, sq

    def _record_best(self, trial: torch.Tensor, success: torch.Tensor, sq: torch.Tensor) -> None:
        """Keep, per row, the closest successful point seen at any evaluation."""
        s = self.slots
        better = success & (sq < self.out.best_sq[s.row.clamp_min(0)])
        if better.any():
            rows = s.row[better]
            self.out.best[rows] = trial[better]
            self.out.best_sq[rows] = sq[better]
            self.out.best_c[rows] = torch.where(s.phase[better] == START, math.nan, s.c[better])

    # -- starting a row --------------------------------------------------------------------------

    def _load(self) -> None:
        """Fill empty slots with the next rows; compact the batch once the queue has run dry."""
        s = self.slots
        remaining = len(self.rows_x) - self.next_row
        if remaining == 0:
            occupied = (s.phase != EMPTY).nonzero().squeeze(1)
            if 0 < len(occupied) <= len(s) // 2:
                s.keep(occupied)
            return
        empty = (s.phase == EMPTY).nonzero().squeeze(1)[:remaining]
        if len(empty) == 0:  # the usual case while the queue lasts: every slot busy
            return
        rows = torch.arange(self.next_row, self.next_row + len(empty), device=s.row.device)
        self.next_row += len(empty)
        s.row[empty] = rows
        s.phase[empty] = START
        s.x[empty] = s.z[empty] = self.rows_x[rows]
        s.d[empty], s.step[empty] = 0.0, 0.0  # the first trial is the clean input itself
        s.goal[empty], s.true[empty] = self.rows_goal[rows], self.rows_true[rows]
        s.c_adv[empty], s.c_fail[empty] = 0.0, math.inf
        s.solves[empty] = s.iters[empty] = s.side[empty] = 0
        s.start_adv[empty] = False
        loaded = torch.zeros_like(s.row, dtype=torch.bool)
        loaded[empty] = True
        s.memory.forget(loaded)

    def _start(self, starting: torch.Tensor, f: torch.Tensor, g: torch.Tensor, margin: torch.Tensor,
               success: torch.Tensor) -> None:
        """Evaluated at the clean input (r = 0): finish rows already adversarial, pick ``c`` for the rest."""
        s = self.slots
        rows = starting.nonzero().squeeze(1)  # usually a few: copy and start those rows only
        s.f = torch.where(starting, f, s.f)
        s.g[rows] = g[rows]
        s.margin = torch.where(starting, margin, s.margin)
        s.m_clean = torch.where(starting, margin, s.m_clean)
        s.m_prev = torch.where(starting, margin, s.m_prev)
        s.c_prev = torch.where(starting, math.inf, s.c_prev)  # the clean input is the solve at c = inf
        s.c = s.c.index_put((rows,), self._initial_c(f[rows], g[rows], s.z[rows]))
        s.phase[starting] = DIRECTION
        self._finish(starting & success)

    # -- directions and line search ------------------------------------------------------------

    def _free(self, z: torch.Tensor, g: torch.Tensor, out: torch.Tensor | None = None,
              work: torch.Tensor | None = None) -> torch.Tensor:
        """Coordinates free to move (1.0, else 0.0): not held at a bound by a gradient pointing out
        of the box. ``side = sign(z - low) - sign(high - z)``, i.e. ``(z > low) - (z < high)`` as z is
        in the box, is -1 at the lower bound, +1 at the upper, 0 inside; a coordinate is free where
        ``side * g >= 0`` (not where g is NaN). Float arithmetic in place (5 passes): boolean masks of
        this size cost far more on a CPU; ``out`` and ``work`` (buffers shaped like ``z``, fresh ones
        by default) take the result and the temporary."""
        side = torch.gt(z, self.low, out=torch.empty_like(z) if out is None else out)
        side.sub_(torch.lt(z, self.high, out=torch.empty_like(z) if work is None else work))
        return side.mul_(g).ge_(0)

    def _new_directions(self, need: torch.Tensor) -> None:
        """Projected L-BFGS direction on the free coordinates, and a unit first step.

        Coordinates held at a bound are excluded from ``q`` and from the direction, so the step
        only moves variables that can move (the active-set idea of L-BFGS-B).
        """
        s = self.slots
        free = self._free(s.z, s.g, s.free, s.work)
        minus_hq = s.memory.apply(torch.mul(s.g, free, out=s.memory.q_buffer()), s.c, negative=True)
        held = (~need).nonzero().squeeze(1)  # rows still in a line search keep their direction
        kept_d = s.d[held] if len(held) else None
        d = torch.mul(minus_hq, free, out=s.d)
        fallback = need & (torch.mul(d, s.g, out=s.work).sum(1) >= 0)
        if fallback.any():  # curvature pairs gone stale: restart from steepest descent
            s.memory.forget(fallback)
            rows = fallback.nonzero().squeeze(1)
            steepest = -s.g[rows] * free[rows]
            d[rows] = steepest / steepest.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if kept_d is not None:
            d[held] = kept_d
        s.step = torch.where(need, torch.ones_like(s.step), s.step)
        s.backtracks[need] = 0
        s.phase[need] = TRIAL

    def _line_search(self, trying: torch.Tensor, trial: torch.Tensor, f: torch.Tensor, g: torch.Tensor,
                     margin: torch.Tensor) -> None:
        """Armijo test on the projected step: accept (update memory, test convergence) or backtrack."""
        s = self.slots
        step = torch.sub(trial, s.z, out=s.memory.pair_buffers()[0])  # written where the memory reads it
        slope = torch.mul(step, s.g, out=s.work).sum(1)
        accept = trying & torch.isfinite(f) & (slope < 0) & (f <= s.f + self.ARMIJO * slope)
        reject = trying & ~accept
        if accept.any():
            self._accept(accept, trial, step, f, g, margin)
        if reject.any():
            self._backtrack(reject, f, slope)

    def _accept(self, accept: torch.Tensor, trial: torch.Tensor, step: torch.Tensor, f: torch.Tensor,
                g: torch.Tensor, margin: torch.Tensor) -> None:
        s, cfg = self.slots, self.settings
        s.memory.add(accept, step, torch.sub(g, s.g, out=s.memory.pair_buffers()[1]), s.c)
        decrease = s.f - f
        scale = torch.maximum(torch.maximum(s.f.abs(), f.abs()), torch.ones_like(f))
        projected_grad = torch.sub(trial, g, out=s.work).clamp_(self.low, self.high).sub_(trial).abs_().amax(1)
        s.iters += accept.long()
        converged = accept & ((decrease <= cfg.ftol * scale) | (projected_grad <= cfg.pgtol)
                              | (s.iters >= cfg.max_iter) | self._stalled(accept, f, scale) | self._lost(accept, margin))
        # trial and g are fresh tensors: take them over, with the few rows that keep their point copied
        # back in (a torch.where over (B, m) writes a fresh tensor: 1.4 ms each at batch 512 in the profile)
        kept = (~accept).nonzero().squeeze(1)
        if len(kept):
            trial[kept], g[kept] = s.z[kept], s.g[kept]
        s.z, s.g = trial, g
        s.f = torch.where(accept, f, s.f)
        s.margin = torch.where(accept, margin, s.margin)
        s.phase[accept] = DIRECTION
        if converged.any():
            self._next_c(converged)

    def _stalled(self, accept: torch.Tensor, f: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Rows whose last ``stall_window`` iterations lowered ``f`` by at most ``stall_rtol`` (relative):
        on a ReLU network the loss is piecewise linear, its gradient never gets small and L-BFGS
        creeps with decreases each above ``ftol``; only progress over a window shows the end."""
        s, cfg = self.slots, self.settings
        if not cfg.stall_rtol:
            return torch.zeros_like(accept)
        slot = (s.iters % cfg.stall_window)[:, None]
        before = s.f_hist.gather(1, slot)[:, 0]
        s.f_hist.scatter_(1, slot, torch.where(accept, f, before)[:, None])
        return accept & (s.iters > cfg.stall_window) & (before - f <= cfg.stall_rtol * scale)

    def _lost(self, accept: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        """Rows (``outside_in``) whose solve started adversarial and whose margin fell below ``-LOST_MARGIN``:
        ``c`` is too large, the bracket's failing end is found, and the rest of the solve would only pull
        ``r`` further towards ``x`` (EfficientNet-Lite0 at 3x224x224: such solves collapsed ``|r|`` tenfold,
        20 evaluations each; ending them saved 6% of the evaluations, MNIST FC100-100-10 5%)."""
        if not self.settings.outside_in:
            return torch.zeros_like(accept)
        return accept & self.slots.start_adv & (margin < -LOST_MARGIN)

    def _backtrack(self, reject: torch.Tensor, f: torch.Tensor, slope: torch.Tensor) -> None:
        """Shrink the step by safeguarded quadratic interpolation; a failed search ends the solve."""
        s = self.slots
        curvature = f - s.f - slope
        ratio = torch.where(torch.isfinite(f) & (curvature > 0), -slope / (2 * curvature), torch.full_like(f, 0.1))
        s.step = torch.where(reject, s.step * ratio.clamp(0.1, 0.5), s.step)
        s.backtracks += reject.long()
        stuck = reject & (s.backtracks >= self.MAX_BACKTRACKS)
        if stuck.any():
            s.phase[stuck] = DIRECTION
            s.memory.forget(stuck)
            self._next_c(stuck)

    def _change_c(self, moving: torch.Tensor, new_c: torch.Tensor) -> None:
        """Move to the new ``c`` without a model call: the penalty's value and gradient change in
        closed form, and the memory corrects its pairs itself (:class:`CompactMemory`)."""
        s = self.slots
        # Only the moving rows change (the others' dc is 0): on a wide batch, update those rows alone.
        rows = moving.nonzero().squeeze(1) if s.z.numel() >= self.GATHER_FROM else slice(None)
        dc = new_c[rows] - s.c[rows]
        r = s.z[rows] - s.x[rows]
        s.f[rows] = s.f[rows] + dc * norm2(r)
        s.g[rows] = s.g[rows] + 2 * dc[:, None] * r
        s.c = new_c
        s.start_adv = torch.where(moving, s.margin > SAFE_MARGIN, s.start_adv)
        s.iters[moving] = 0
        s.phase[moving] = DIRECTION

    def _finish(self, done: torch.Tensor) -> None:
        s = self.slots
        count = int(done.sum())
        if count:
            s.phase[done] = EMPTY
            s.row[done] = -1
            self.bar.update(count)
