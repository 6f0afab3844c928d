"""Per-row L-BFGS memory in compact form, for a whole batch, with a penalty constant that may change.

The inverse-Hessian approximation of L-BFGS after pairs ``(s_i, y_i)`` is applied with the compact
representation of Byrd, Nocedal and Schnabel (1994, Theorem 2.2)::

    H q = gamma q + S w - gamma Y p,   p = R^-1 S^T q,   w = R^-T ((D + gamma Y^T Y) p - gamma Y^T q)

with ``R`` the upper triangle of ``S^T Y`` (pairs in chronological order) and ``D`` its diagonal.
The history lives in one buffer ``H = [S; Y]`` (B, 2M, m), and an iteration reads it exactly twice:
one batched product gives every inner product it needs (``S^T q``, ``Y^T q`` and those of the pair
stored since the last direction, which :meth:`CompactMemory.add` only records and the next
:meth:`~CompactMemory.apply` inserts), one more forms ``S w + Y p``. Everything else works on
(B, M, M) matrices. The two-loop recursion would need ~4M separate passes instead.

The objective of the attack is ``c ||z - x||^2 + loss``: changing ``c`` by ``dc`` adds exactly
``2 dc s_i`` to every ``y_i``. Each pair therefore records the ``c`` it was measured at, and the
correction ``y_i + 2 (c - c_i) s_i`` is applied to the small matrices only, at no cost; a pair
whose corrected curvature ``s_i . y_i`` is no longer positive is left out.

Each row keeps its pairs in its own ring of ``M`` positions, so rows never influence each other:
a row's result does not depend on the batch it was solved in. Empty or invalid positions enter
the formulas as zero pairs with ``R_ii = 1``, which removes them exactly.
"""

from __future__ import annotations

import torch

CURVATURE_EPS = 1e-8  # a pair is kept when s.y > CURVATURE_EPS * |s| |y|


class CompactMemory:
    """The last ``memory`` curvature pairs of each of ``batch`` rows of dimension ``m``."""

    TENSORS = ("H", "c_at", "valid", "SS", "SY", "YY", "newest", "V", "out", "pending", "pending_c")

    def __init__(self, batch: int, m: int, memory: int, like: torch.Tensor):
        floats = dict(device=like.device, dtype=like.dtype)
        self.H = torch.zeros(batch, 2 * memory, m, **floats)  # S = H[:, :M], Y = H[:, M:]
        self.c_at = torch.zeros(batch, memory, **floats)
        self.valid = torch.zeros(batch, memory, device=like.device, dtype=torch.bool)
        # Inner products of the stored pairs (y as stored, uncorrected), in float64: (B, M, M).
        self.SS, self.SY, self.YY = (torch.zeros(batch, memory, memory, device=like.device, dtype=torch.float64)
                                     for _ in range(3))
        self.newest = torch.full((batch,), memory - 1, device=like.device, dtype=torch.int64)  # per row
        self.pending = torch.zeros(batch, device=like.device, dtype=torch.bool)  # a pair waits to be inserted
        self.pending_c = torch.zeros(batch, **floats)
        # Work buffers, reused every iteration (fresh large tensors cost page faults on a CPU):
        # V = [s, y, q] (the waiting pair and the vector to multiply), out = H q.
        self.V = torch.zeros(batch, 3, m, **floats)
        self.out = torch.zeros(batch, 1, m, **floats)

    @property
    def size(self) -> int:
        return self.c_at.shape[1]

    @property
    def S(self) -> torch.Tensor:
        return self.H[:, : self.size]

    @property
    def Y(self) -> torch.Tensor:
        return self.H[:, self.size :]

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows in ``index``."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name)[index])

    def forget(self, rows: torch.Tensor) -> None:
        """Drop every pair of the rows in the boolean mask ``rows`` (a waiting one too)."""
        self.valid[rows] = False
        self.pending &= ~rows

    def add(self, rows: torch.Tensor, s: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> None:
        """Store ``(s, y)``, measured at penalty ``c``, for the rows in the boolean mask ``rows``
        whose curvature condition holds. The pair waits for the next :meth:`apply` (which reads the
        history anyway)."""
        if self.pending.any():
            self._insert(None)
        sy, ss, yy = (s * y).sum(1), s.pow(2).sum(1), y.pow(2).sum(1)
        self.pending = rows & (sy > CURVATURE_EPS * (ss * yy).sqrt())
        self.V[:, 0].copy_(s)
        self.V[:, 1].copy_(y)
        self.pending_c.copy_(c)

    def _insert(self, q: torch.Tensor | None) -> torch.Tensor | None:
        """Insert the waiting pairs into the history and return ``[S; Y]^T q`` (B, 2M) in float64
        for the updated history (``None`` without ``q``), from one read of the history."""
        rows = self.pending.nonzero().squeeze(1)
        if len(rows) == 0:
            return None if q is None else _dots(self.V[:, 2:], self.H)[:, 0]
        everyone = len(rows) == len(self.pending)  # the usual case: no gathers, no copies

        def of(t: torch.Tensor) -> torch.Tensor:
            return t if everyone else t[rows]

        size = self.size
        k = (self.newest[rows] + 1) % size
        self.newest[rows] = k
        self.H[rows, k] = of(self.V[:, 0])
        self.H[rows, size + k] = of(self.V[:, 1])
        self.c_at[rows, k] = of(self.pending_c)
        self.valid[rows, k] = True
        self.pending = torch.zeros_like(self.pending)
        # Inner products of the new pair with every stored one (itself included) and of q, in one pass.
        dots = _dots(self.V[:, : 2 if q is None else 3], self.H)  # (B, 2 or 3, 2M)
        new = of(dots)
        s_s, s_y, y_s, y_y = new[:, 0, :size], new[:, 0, size:], new[:, 1, :size], new[:, 1, size:]
        self.SS[rows, k, :] = s_s
        self.SS[rows, :, k] = s_s
        self.SY[rows, k, :] = s_y  # s_k . y_j
        self.SY[rows, :, k] = y_s  # s_i . y_k
        self.YY[rows, k, :] = y_y
        self.YY[rows, :, k] = y_y
        return None if q is None else dots[:, 2]

    def apply(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``H q`` for the objective at penalty ``c`` (B,); rows without pairs get ``q / |q|``."""
        size = self.size
        self.V[:, 2].copy_(q)
        q_dots = self._insert(q)  # (B, 2M): S^T q, then Y^T q
        # Each row's ring order -> chronological (oldest first), applied to the small tensors only.
        order = (self.newest[:, None] + 1 + torch.arange(size, device=q.device)) % size  # (B, M)
        rows_cols = (order[:, :, None].expand(-1, -1, size), order[:, None, :].expand(-1, size, -1))

        def chronological(t: torch.Tensor) -> torch.Tensor:
            return t.gather(1, order) if t.dim() == 2 else t.gather(1, rows_cols[0]).gather(2, rows_cols[1])

        e = chronological(2 * (c[:, None] - self.c_at)).double()  # y_i(c) = y_i + e_i s_i
        SS = chronological(self.SS)
        SY_stored = chronological(self.SY)
        SY = SY_stored + SS * e[:, None, :]  # s_i . y_j(c)
        YY = (chronological(self.YY) + SY_stored.transpose(1, 2) * e[:, None, :]
              + SY_stored * e[:, :, None] + SS * e[:, :, None] * e[:, None, :])  # y_i(c) . y_j(c)
        sy, yy, ss = (t.diagonal(dim1=1, dim2=2) for t in (SY, YY, SS))
        valid = chronological(self.valid) & (sy > CURVATURE_EPS * (ss * yy).clamp_min(0).sqrt())
        pair = valid[:, :, None] & valid[:, None, :]
        eye = torch.eye(size, device=q.device, dtype=torch.float64)
        a = torch.where(valid, chronological(q_dots[:, :size]), 0.0)  # S^T q
        b = torch.where(valid, chronological(q_dots[:, size:]) + e * a, 0.0)  # Y(c)^T q
        R = torch.where(pair, SY.triu(), eye)
        YY = torch.where(pair, YY, 0.0)
        newest = (size - 1 - valid.flip(1).to(torch.int8).argmax(1))[:, None]  # newest valid pair
        gamma = torch.where(valid.any(1), (sy.gather(1, newest) / yy.gather(1, newest))[:, 0],
                            1.0 / q.double().norm(dim=1).clamp_min(1e-30))[:, None, None]
        p = torch.linalg.solve_triangular(R, a[:, :, None], upper=True)
        rhs = torch.where(valid, sy, 0.0)[:, :, None] * p + gamma * (torch.bmm(YY, p) - b[:, :, None])
        w = torch.linalg.solve_triangular(R.transpose(1, 2), rhs, upper=False)
        # H q = gamma q + S w - gamma Y(c) p, and Y(c) = Y + e S: back to ring order, one product with [S; Y].
        gamma, p, w = gamma[:, :, 0], p[:, :, 0], w[:, :, 0]
        coef = torch.empty(len(q), 1, 2 * size, dtype=torch.float64, device=q.device)
        coef[:, 0, :size].scatter_(1, order, w - gamma * e * p)
        coef[:, 0, size:].scatter_(1, order, -gamma * p)
        torch.mul(q, gamma.to(q.dtype), out=self.out[:, 0])
        return self.out.baddbmm_(coef.to(q.dtype), self.H)[:, 0]  # a view of the buffer: use before the next call


def _dots(v: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """``v_k . h_j`` for every vector and stored vector: v (B, k, m), history (B, 2M, m) -> (B, k, 2M)
    in float64. The product in this orientation streams the history once, at memory speed."""
    return torch.bmm(v, history.transpose(1, 2)).double()
