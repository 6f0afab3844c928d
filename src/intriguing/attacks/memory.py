"""Per-row L-BFGS memory in compact form, for a whole batch, with a penalty constant that may change.

The inverse-Hessian approximation of L-BFGS after pairs ``(s_i, y_i)`` is applied with the compact
representation of Byrd, Nocedal and Schnabel (1994, Theorem 2.2)::

    H q = gamma q + S w - gamma Y p,   p = R^-1 S^T q,   w = R^-T ((D + gamma Y^T Y) p - gamma Y^T q)

with ``R`` the upper triangle of ``S^T Y`` (pairs in chronological order) and ``D`` its diagonal.
Only four batched matrix products touch the (B, M, m) history per iteration; everything else
works on (B, M, M) matrices. The two-loop recursion would need ~4M separate passes instead.

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

    TENSORS = ("S", "Y", "c_at", "valid", "SS", "SY", "YY", "newest")

    def __init__(self, batch: int, m: int, memory: int, like: torch.Tensor):
        floats = dict(device=like.device, dtype=like.dtype)
        self.S = torch.zeros(batch, memory, m, **floats)
        self.Y = torch.zeros(batch, memory, m, **floats)
        self.c_at = torch.zeros(batch, memory, **floats)
        self.valid = torch.zeros(batch, memory, device=like.device, dtype=torch.bool)
        # Inner products of the stored pairs (y as stored, uncorrected), in float64: (B, M, M).
        self.SS, self.SY, self.YY = (torch.zeros(batch, memory, memory, device=like.device, dtype=torch.float64)
                                     for _ in range(3))
        self.newest = torch.full((batch,), memory - 1, device=like.device, dtype=torch.int64)  # per row

    @property
    def size(self) -> int:
        return self.S.shape[1]

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows in ``index``."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name)[index])

    def forget(self, rows: torch.Tensor) -> None:
        """Drop every pair of the rows in the boolean mask ``rows``."""
        self.valid[rows] = False

    def add(self, rows: torch.Tensor, s: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> None:
        """Store ``(s, y)``, measured at penalty ``c``, for the rows in the boolean mask ``rows``
        whose curvature condition holds."""
        sy, ss, yy = (s * y).sum(1), s.pow(2).sum(1), y.pow(2).sum(1)
        rows = rows & (sy > CURVATURE_EPS * (ss * yy).sqrt())
        index = rows.nonzero().squeeze(1)
        if len(index) == 0:
            return
        k = (self.newest[index] + 1) % self.size
        self.newest[index] = k
        self.S[index, k], self.Y[index, k] = s[index], y[index]
        self.c_at[index, k] = c[index]
        self.valid[index, k] = True
        # Inner products of the new pair with every stored one (itself included): one pass over S and Y.
        s_s, y_s = _dots(s[:, None], self.S)[index], _dots(y[:, None], self.S)[index]  # s_new.s_j, y_new.s_j
        s_y, y_y = _dots(s[:, None], self.Y)[index], _dots(y[:, None], self.Y)[index]
        self.SS[index, k, :] = s_s
        self.SS[index, :, k] = s_s
        self.SY[index, k, :] = s_y  # s_k . y_j
        self.SY[index, :, k] = y_s  # s_i . y_k
        self.YY[index, k, :] = y_y
        self.YY[index, :, k] = y_y

    def apply(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``H q`` for the objective at penalty ``c`` (B,); rows without pairs get ``q / |q|``."""
        # Each row's ring order -> chronological (oldest first), applied to the small tensors only.
        size = self.size
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
        a = torch.where(valid, chronological(_dots(q[:, None], self.S)), 0.0)  # S^T q
        b = torch.where(valid, chronological(_dots(q[:, None], self.Y)) + e * a, 0.0)  # Y(c)^T q
        R = torch.where(pair, SY.triu(), eye)
        YY = torch.where(pair, YY, 0.0)
        newest = (self.size - 1 - valid.flip(1).to(torch.int8).argmax(1))[:, None]  # newest valid pair
        gamma = torch.where(valid.any(1), (sy.gather(1, newest) / yy.gather(1, newest))[:, 0],
                            1.0 / q.double().norm(dim=1).clamp_min(1e-30))[:, None, None]
        p = torch.linalg.solve_triangular(R, a[:, :, None], upper=True)
        rhs = torch.where(valid, sy, 0.0)[:, :, None] * p + gamma * (torch.bmm(YY, p) - b[:, :, None])
        w = torch.linalg.solve_triangular(R.transpose(1, 2), rhs, upper=False)
        # H q = gamma q + S w - gamma Y(c) p, and Y(c) = Y + e S: back to ring order for the products.
        gamma, p, w = gamma[:, :, 0], p[:, :, 0], w[:, :, 0]
        coef_s = torch.empty_like(w).scatter_(1, order, w - gamma * e * p).to(q.dtype)
        coef_y = torch.empty_like(p).scatter_(1, order, -gamma * p).to(q.dtype)
        return (gamma.to(q.dtype) * q + torch.bmm(coef_s[:, None, :], self.S)[:, 0]
                + torch.bmm(coef_y[:, None, :], self.Y)[:, 0])


def _dots(v: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """``v . h_j`` for every stored vector: v (B, 1, m), history (B, M, m) -> (B, M) in float64.

    ``vecdot`` streams the history once; a batched ``bmm`` of many tiny mat-vecs is several
    times slower on CPU.
    """
    return torch.linalg.vecdot(v, history).double()
