"""The search on the penalty constant ``c`` of Section 4.1, per row: the first ``c``, the bracket, the next ``c``.

The paper minimises ``c |r|^2 + loss(x + r, l)`` over the box for the largest ``c`` whose minimiser is
still adversarial. :class:`~intriguing.attacks.solver.CSearch` runs the L-BFGS solves; after each one it
asks this mixin for the next ``c``:

* A solve tells whether its minimiser reaches the row's class ``l`` and by how much (the logit margin
  of ``l``). As ``|r|`` shrinks like ``1/c``, the margin is close to linear in ``1/c``: the next ``c``
  is the root of that line through the last two solves (at first the clean input, ``c = inf``, and the
  first solve) before a bracket exists, or through both ends of the bracket (regula falsi, Illinois
  variant, kept a little inside the bracket). The search ends when ``c_fail / c_adv <= 1 + rtol``
  (about 7 solves on FC100-100-10, bisection needs 10).
* Each solve is warm-started from the previous minimiser; a change of ``c`` changes the objective's
  value and gradient in closed form, without a model call.
* On large inputs (``scale_aware``, ``outside_in``) the solves are cut short by ``max_iter`` long before
  they converge, and the margin at a solve's end says more about where it started than about ``c``.
  The search then starts on the target's side (a first ``c`` lowered with the input's size), moves
  ``c`` geometrically until bracketed, takes a failure from a non-adversarial start as no bound, ends a
  solve started adversarial once it is clearly lost (the solver's ``LOST_MARGIN``), and restarts each
  solve after a failed one from the adversarial end of the bracket: it approaches the
  boundary from outside, where the solves find shorter perturbations (EfficientNet-Lite0 at
  3x224x224: 8% less distortion for 22% fewer evaluations than from the inside).
"""

from __future__ import annotations

import math

import torch

from intriguing.attacks.criteria import SAFE_MARGIN

MNIST_SIZE = 28 * 28  # the input size the unscaled first c is calibrated on (``scale_aware``)


def norm2(v: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row."""
    return v.pow(2).sum(1)


class PenaltySearch:
    """The ``c`` search's decisions, mixed into :class:`~intriguing.attacks.solver.CSearch`, which provides
    ``slots`` (the per-row state), ``settings`` (an :class:`~intriguing.attacks.LBFGSConfig`), ``_free``
    (the coordinates free to move), ``_change_c`` (start the next solve) and ``_finish`` (end a row)."""

    C_MIN = 1e-12
    INSIDE = 0.1  # a regula-falsi step lands at least this fraction (in log c) inside the bracket

    def _initial_c(self, loss: torch.Tensor, grad: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """A first ``c`` per row: the linearised minimiser ``r = -grad / 2c`` lowers the loss by
        ``|grad|^2 / 2c``; ask for it to reach about ``log 2`` (the target as likely as the best
        other class). Erring towards a large ``c`` is cheap: that minimiser lies close to ``x``.
        A fixed ``initial_c`` overrides the estimate.

        With ``scale_aware``, inputs of more than ``MNIST_SIZE`` values get ``c`` lowered by
        ``sqrt(MNIST_SIZE / m)``: on a large network the gradient at ``x`` underestimates the distance
        to the target's region and the solves, cut short, do not converge, so the search should start
        on the target's side (``outside_in``). Calibrated on two sizes, not derived: on
        EfficientNet-Lite0, three 3x128x128 photos, with ``outside_in``, 0.1x the estimate gave 7% less
        distortion than 1x for 10% more evaluations (0.05x: the same distortion, 40% more evaluations;
        0.2x: 5% more distortion); at 3x224x224 (this rule: x0.072) half or twice the factor gave 1% more
        distortion; MNIST FC100-100-10 is best with the estimate itself (0.1x: 45% more evaluations, the
        same distortion). ``loss``, ``grad`` and ``z`` (default: every slot's point) are those of the rows to start."""
        if self.settings.initial_c is not None:
            return torch.full_like(loss, self.settings.initial_c)
        free = self._free(self.slots.z if z is None else z, grad)
        excess = (loss - math.log(2.0)).clamp_min(0.1)
        c = norm2(grad * free) / (2.0 * excess)
        if self.settings.scale_aware and grad.shape[1] > MNIST_SIZE:
            c = c * math.sqrt(MNIST_SIZE / grad.shape[1])
        return c.clamp_min(self.C_MIN * 10)

    def _next_c(self, solved: torch.Tensor) -> None:
        """After a solve: update the bracket on ``c``, then finish the row or move to the next ``c``.

        With ``outside_in``, a solve cut short by ``max_iter`` that failed from a non-adversarial start
        (the clean input) sets no bound on ``c``: it may only not have got there yet. Before a bracket
        exists, solves cut short move ``c`` geometrically (:meth:`_geometric`), and a failed solve's
        successor starts from the adversarial end of the bracket (:meth:`_restart`).
        """
        s, cfg = self.slots, self.settings
        adv = s.margin > SAFE_MARGIN
        cut_short = solved & (s.iters >= cfg.max_iter) if cfg.outside_in else torch.zeros_like(solved)
        self._update_bracket(solved & ~(cut_short & ~adv & ~s.start_adv), adv)
        s.solves += solved.long()
        bracketed = (s.c_adv > 0) & torch.isfinite(s.c_fail)
        new_c = self._proposed(solved, bracketed, adv)
        if cut_short.any():
            new_c = torch.where(cut_short & ~bracketed, self._geometric(adv), new_c)
        s.c_prev = torch.where(solved, s.c, s.c_prev)
        s.m_prev = torch.where(solved, s.margin, s.m_prev)
        done = solved & (
            (bracketed & (s.c_fail <= s.c_adv * (1 + cfg.c_rtol))) | (s.solves >= cfg.max_solves) | (new_c < self.C_MIN)
        )
        moving = solved & ~done
        if cfg.outside_in:
            self._restart(moving & ~adv & (s.c_adv > 0))
        if moving.any():
            self._change_c(moving, torch.where(moving, new_c, s.c))
        self._finish(done)

    def _proposed(self, solved: torch.Tensor, bracketed: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """The next ``c`` of the ``solved`` rows (other rows: any value): inside the bracket where one exists,
        extrapolated elsewhere. A rule no solved row needs is not computed (each costs some 25 small operations)."""
        inside, outside = bool((solved & bracketed).any()), bool((solved & ~bracketed).any())
        if not outside:
            return self._inside_bracket()
        if not inside:
            return self._extrapolated(adv)
        return torch.where(bracketed, self._inside_bracket(), self._extrapolated(adv))

    def _update_bracket(self, solved: torch.Tensor, adv: torch.Tensor) -> None:
        """Move one end of the bracket to the current ``c``; when the same end moves twice in a row,
        halve the other end's margin (Illinois), which keeps regula falsi from stalling."""
        s = self.slots
        to_adv = solved & adv & (s.c > s.c_adv)
        to_fail = solved & ~adv & (s.c < s.c_fail)
        s.m_fail = torch.where(to_adv & (s.side == 1), s.m_fail / 2, s.m_fail)
        s.m_adv = torch.where(to_fail & (s.side == -1), s.m_adv / 2, s.m_adv)
        s.c_adv = torch.where(to_adv, s.c, s.c_adv)
        s.m_adv = torch.where(to_adv, s.margin, s.m_adv)
        if self.settings.outside_in and to_adv.any():
            s.z_adv[to_adv], s.g_adv[to_adv] = s.z[to_adv], s.g[to_adv]
            s.f_adv, s.margin_adv = torch.where(to_adv, s.f, s.f_adv), torch.where(to_adv, s.margin, s.margin_adv)
        s.c_fail = torch.where(to_fail, s.c, s.c_fail)
        s.m_fail = torch.where(to_fail, s.margin, s.m_fail)
        s.side = torch.where(to_adv, 1, torch.where(to_fail, -1, s.side))

    def _inside_bracket(self) -> torch.Tensor:
        """Regula falsi on ``margin ~ a + b / c`` between the bracket's ends, kept ``INSIDE`` of the
        bracket's width (in log c) away from either end."""
        s = self.slots
        t_adv, t_fail = 1 / s.c_adv.clamp_min(self.C_MIN), 1 / s.c_fail
        theta = s.m_adv / (s.m_adv - s.m_fail).clamp_min(torch.finfo(s.c.dtype).tiny)
        guess = 1 / (t_adv + theta * (t_fail - t_adv)).clamp_min(torch.finfo(s.c.dtype).tiny)
        log_lo, log_hi = s.c_adv.clamp_min(self.C_MIN).log(), s.c_fail.log()
        width = log_hi - log_lo
        return guess.log().clamp(log_lo + self.INSIDE * width, log_hi - self.INSIDE * width).exp()

    def _extrapolated(self, adv: torch.Tensor) -> torch.Tensor:
        """Before a bracket exists: the root of the line (in ``1/c``) through the previous solve (at
        first the clean input, ``c = inf``) and this one, aimed past the root so that the next
        solve likely lands on the other side: 2% past after the first solve, three times further
        after each further solve on the same side; at most a factor ``c_factor`` per step."""
        s, cfg = self.slots, self.settings
        tiny = torch.finfo(s.c.dtype).tiny
        t, t_prev = 1 / s.c, 1 / s.c_prev
        slope = (s.margin - s.m_prev) / (t - t_prev).abs().clamp_min(tiny)  # margin gained per unit of 1/c
        slope = slope * torch.sign(t - t_prev)
        root = 1 / (t - s.margin / slope).clamp_min(tiny)
        usable = (slope > 0) & torch.isfinite(root)
        root = torch.where(usable, root, torch.where(adv, s.c * cfg.c_factor, s.c / cfg.c_factor))
        overshoot = 1 + 0.02 * 3.0 ** (s.solves - 1).clamp(0, 6).to(s.c.dtype)
        aimed = torch.where(adv, root * overshoot, root / overshoot)
        step_up = aimed.clamp(s.c * (1 + cfg.c_rtol), s.c * cfg.c_factor)
        step_down = aimed.clamp(s.c / cfg.c_factor, s.c / (1 + cfg.c_rtol))
        return torch.where(adv, step_up, step_down)

    def _geometric(self, adv: torch.Tensor) -> torch.Tensor:
        """``c`` times ``sqrt(c_factor)`` after an adversarial solve, divided by it after a failed one: the
        margin at the end of a solve cut short hardly depends on ``c``, so the line through two of them
        (:meth:`_extrapolated`) says little; EfficientNet-Lite0 at 3x224x224 needed ``c`` 10-30x the first."""
        s = self.slots
        factor = math.sqrt(self.settings.c_factor)
        return torch.where(adv, s.c * factor, s.c / factor)

    def _restart(self, rows: torch.Tensor) -> None:
        """Start the next solve of ``rows`` from the minimiser at ``c_adv`` instead of the failed one: a
        solve cut short moves little from where it starts, and the failed minimiser (often collapsed
        towards ``x`` by a large ``c``) is a poor start. Value and gradient follow in closed form."""
        s = self.slots
        if not rows.any():
            return
        s.z[rows], s.g[rows] = s.z_adv[rows], s.g_adv[rows]
        s.f, s.margin, s.c = (torch.where(rows, new, old) for new, old in
                              ((s.f_adv, s.f), (s.margin_adv, s.margin), (s.c_adv, s.c)))
