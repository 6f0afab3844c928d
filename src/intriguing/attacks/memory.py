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

Each row keeps its pairs in its own ring of ``M`` positions of ``H``, so rows never influence each
other: a row's result does not depend on the batch it was solved in. The small per-pair tensors
(``c_i``, validity, the Gram matrices ``S^T S``, ``S^T Y``, ``Y^T Y``) are kept in chronological
order instead (oldest first; an insertion shifts them by one), so the formulas use them as they
are; only the ``2M`` inner products with ``q`` and the ``2M`` coefficients of the final product are
permuted between ring and chronological order. Empty or invalid positions enter the formulas as
zero pairs with ``R_ii = 1``, which removes them exactly.

Cost (issue 14): the two passes over ``H`` are the only work that grows with ``M m``, apart from
writing the new pair; the caller writes ``s``, ``y`` and ``q`` straight into the buffers returned by
:meth:`~CompactMemory.pair_buffers` and :meth:`~CompactMemory.q_buffer`, so nothing is copied. At
batch 512, ``M = 10`` and ``m = 784`` (31 MiB, more than the cache) the two passes alone cost about
1.5 plain evaluations of FC100-100-10 (``benchmarks/attack_overhead.py``, line (c)).
"""

from __future__ import annotations

import torch

CURVATURE_EPS = 1e-8  # a pair is kept when s.y > CURVATURE_EPS * |s| |y|


class CompactMemory:
    """The last ``memory`` curvature pairs of each of ``batch`` rows of dimension ``m``."""

    TENSORS = ("c_at", "valid", "G", "newest", "ring", "V", "out", "pending", "pending_c")

    def __init__(self, batch: int, m: int, memory: int, like: torch.Tensor):
        floats = dict(device=like.device, dtype=like.dtype)
        self._history(torch.zeros(batch, 2 * memory, m, **floats))  # S = H[:, :M], Y = H[:, M:], ring order
        # Per pair, chronological (oldest first): the c it was measured at, whether it is stored,
        # and the inner products of the stored pairs (y as stored, uncorrected), in float64.
        self.c_at = torch.zeros(batch, memory, **floats)
        self.valid = torch.zeros(batch, memory, device=like.device, dtype=torch.bool)
        self.G = torch.zeros(batch, 3, memory, memory, device=like.device, dtype=torch.float64)  # SS, SY, YY
        self.newest = torch.full((batch,), memory - 1, device=like.device, dtype=torch.int64)  # ring position
        # Row ``k`` of ``orders``: the ring positions of [S; Y] in chronological order when the newest pair sits at
        # position ``k`` (one lookup per insertion instead of four small operations).
        order = (torch.arange(memory, device=like.device)[:, None] + 1 + torch.arange(memory, device=like.device)) % memory
        self.orders = torch.cat((order, order + memory), 1)
        self.ring = self.orders[self.newest]  # the ring positions of [S; Y] in chronological order, per row
        self.eye = torch.eye(memory, device=like.device, dtype=torch.float64)
        self.ranks = torch.arange(1, memory + 1, device=like.device)  # chronological positions, from 1
        self.pending = torch.zeros(batch, device=like.device, dtype=torch.bool)  # a pair waits to be inserted
        self.pending_c = torch.zeros(batch, **floats)
        # Work buffers, reused every iteration (fresh large tensors cost page faults on a CPU):
        # V = [s, y, q] (the waiting pair and the vector to multiply), out = H q.
        self.V = torch.zeros(batch, 3, m, **floats)
        self.out = torch.zeros(batch, 1, m, **floats)
        self.work = torch.empty(batch, m, **floats)  # add's products: into a fresh (B, m) tensor they cost ~5x more

    @property
    def size(self) -> int:
        return self.c_at.shape[1]

    @property
    def S(self) -> torch.Tensor:
        return self.H[:, : self.size]

    @property
    def Y(self) -> torch.Tensor:
        return self.H[:, self.size :]

    def _history(self, H: torch.Tensor) -> None:
        """Store ``H`` (B, 2M, m) followed by one spare vector, the *sink*: an insertion copies every
        row's vector at once, rows that insert nothing into the sink (no gathers of the rows that do)."""
        self._flat = torch.cat((H.flatten(0, 1), H.new_zeros(1, H.shape[2])))
        self.H = self._flat[:-1].view(H.shape)
        rows, pairs = H.shape[:2]
        self._first = torch.arange(rows, device=H.device) * pairs  # each row's first vector in ``_flat``
        self._pair = torch.tensor([0, pairs // 2], device=H.device)  # from a ring position to its s and its y

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows in ``index``."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name)[index])
        self._history(self.H[index])
        self.work = self.work.new_empty(len(self.valid), self.work.shape[1])

    def forget(self, rows: torch.Tensor) -> None:
        """Drop every pair of the rows in the boolean mask ``rows`` (a waiting one too)."""
        self.valid[rows] = False
        self.pending &= ~rows

    def pair_buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffers (B, m) for the next pair's ``s`` and ``y``, to be filled (``out=``) and then
        handed to :meth:`add`. A pair still waiting in them is inserted first."""
        if self.pending.any():
            self._insert(None)
        return self.V[:, 0], self.V[:, 1]

    def q_buffer(self) -> torch.Tensor:
        """The buffer (B, m) for the vector ``q`` of the next :meth:`apply`."""
        return self.V[:, 2]

    def add(self, rows: torch.Tensor, s: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> None:
        """Store ``(s, y)``, measured at penalty ``c``, for the rows in the boolean mask ``rows``
        whose curvature condition holds. The pair waits for the next :meth:`apply` (which reads the
        history anyway). ``s`` and ``y`` may be the buffers of :meth:`pair_buffers` (no copy)."""
        V0, V1 = self.pair_buffers()
        sy, ss, yy = (torch.mul(u, v, out=self.work).sum(1) for u, v in ((s, y), (s, s), (y, y)))  # x * x: pow(x, 2)
        self.pending = rows & (sy > CURVATURE_EPS * (ss * yy).sqrt())
        if s.data_ptr() != V0.data_ptr():
            V0.copy_(s)
        if y.data_ptr() != V1.data_ptr():
            V1.copy_(y)
        self.pending_c.copy_(c)

    def _insert(self, q: torch.Tensor | None) -> torch.Tensor | None:
        """Insert the waiting pairs into the history and return ``[S; Y]^T q`` (B, 2M) in float64,
        chronological, for the updated history (``None`` without ``q``), from one read of the history."""
        size, pending = self.size, self.pending
        count = int(pending.sum())
        if count == 0:
            if q is None:
                return None
            return _dots(self.V[:, 2:], self.H)[:, 0].gather(1, self.ring).double()
        everyone = count == len(pending)  # the usual case in a full batch
        k = (self.newest + 1) % size
        self.newest = torch.where(pending, k, self.newest)
        # s and y in one call (index_put_, not index_copy_: also under deterministic mode), to the sink where not pending
        at = torch.where(pending[:, None], self._first[:, None] + k[:, None] + self._pair, len(self._flat) - 1)
        self._flat.index_put_((at,), self.V[:, :2])
        self.pending = torch.zeros_like(pending)
        # Inner products of the new pair with every stored one (itself included) and of q, in one
        # pass; then chronological, the new pair last.
        self.ring = self.orders[self.newest]
        dots = _dots(self.V[:, : 2 if q is None else 3], self.H)  # (B, 2 or 3, 2M)
        dots = dots.gather(2, self.ring[:, None, :].expand(-1, dots.shape[1], -1)).double()
        s_s, s_y, y_s, y_y = dots[:, 0, :size], dots[:, 0, size:], dots[:, 1, :size], dots[:, 1, size:]
        self.c_at = _shifted_in(self.c_at, pending, everyone, self.pending_c)
        self.valid = _shifted_in(self.valid, pending, everyone, True)
        # SS, SY, YY: SY[k, j] = s_k . y_j, then SY[i, k] = s_i . y_k (that one wins on the diagonal)
        self.G = _shifted_in(self.G, pending, everyone, torch.stack((s_s, s_y, y_y), 1),
                             torch.stack((s_s, y_s, y_y), 1))
        return None if q is None else dots[:, 2]

    def apply(self, q: torch.Tensor, c: torch.Tensor, negative: bool = False) -> torch.Tensor:
        """``H q`` (``-H q`` if ``negative``, exactly its negation, at no cost) for the objective at
        penalty ``c`` (B,); rows without pairs get ``q / |q|``. ``q`` may be the buffer of
        :meth:`q_buffer` (no copy)."""
        size = self.size
        if q.data_ptr() != self.V[:, 2].data_ptr():
            self.V[:, 2].copy_(q)
        q_dots = self._insert(q)  # (B, 2M), chronological: S^T q, then Y^T q
        e = (2 * (c[:, None] - self.c_at)).double()  # y_i(c) = y_i + e_i s_i
        SS, SY_stored, YY = self.G.unbind(1)
        SY = SY_stored + SS * e[:, None, :]  # s_i . y_j(c)
        YY = (YY + SY_stored.transpose(1, 2) * e[:, None, :]
              + SY_stored * e[:, :, None] + SS * e[:, :, None] * e[:, None, :])  # y_i(c) . y_j(c)
        sy, yy, ss = (t.diagonal(dim1=1, dim2=2) for t in (SY, YY, SS))
        valid = self.valid & (sy > CURVATURE_EPS * (ss * yy).clamp_min(0).sqrt())
        pair = valid[:, :, None] & valid[:, None, :]
        eye = self.eye
        a = torch.where(valid, q_dots[:, :size], 0.0)  # S^T q
        b = torch.where(valid, q_dots[:, size:] + e * a, 0.0)  # Y(c)^T q
        R = torch.where(pair, SY.triu(), eye)
        YY = torch.where(pair, YY, 0.0)
        some = valid.any(1)
        newest = (valid * self.ranks).argmax(1, keepdim=True)  # the newest valid pair (the highest rank; any without)
        gamma = (sy.gather(1, newest) / yy.gather(1, newest))[:, 0]
        if not bool(some.all()):  # rows without pairs: q / |q|, the norm of those rows only (not a (B, m) float64 copy)
            alone = (~some).nonzero().squeeze(1)
            gamma = gamma.index_put((alone,), 1.0 / q[alone].double().norm(dim=1).clamp_min(1e-30))
        gamma = gamma[:, None, None]
        p = torch.linalg.solve_triangular(R, a[:, :, None], upper=True)
        rhs = torch.where(valid, sy, 0.0)[:, :, None] * p + gamma * (torch.bmm(YY, p) - b[:, :, None])
        w = torch.linalg.solve_triangular(R.transpose(1, 2), rhs, upper=False)
        # H q = gamma q + S w - gamma Y(c) p, and Y(c) = Y + e S: back to ring order, one product with [S; Y].
        gamma, p, w = gamma[:, :, 0], p[:, :, 0], w[:, :, 0]
        chronological = torch.cat((w - gamma * e * p, -gamma * p), 1).to(q.dtype)
        gamma = gamma.to(q.dtype)
        if negative:  # IEEE rounding is symmetric: negated inputs give the exactly negated result
            chronological, gamma = chronological.neg_(), gamma.neg_()
        coef = torch.empty_like(chronological).scatter_(1, self.ring, chronological)
        torch.mul(q, gamma, out=self.out[:, 0])
        return self.out.baddbmm_(coef[:, None, :], self.H)[:, 0]  # a view of the buffer: use before the next call


def _shifted_in(t: torch.Tensor, rows: torch.Tensor, everyone: bool, last_row, last_col=None) -> torch.Tensor:
    """``t`` (B, M) or (B, k, M, M), chronological, with the rows in the mask ``rows`` shifted by one
    position (the oldest entry dropped) and the newest entry set: ``last_row`` (and, for matrices,
    the last column ``last_col``, written after the row)."""
    if t.dim() == 2:
        new = t.roll(-1, 1)
        new[:, -1] = last_row
        return new if everyone else torch.where(rows[:, None], new, t)
    new = t.roll((-1, -1), (2, 3))
    new[:, :, -1, :] = last_row
    new[:, :, :, -1] = last_col
    return new if everyone else torch.where(rows[:, None, None, None], new, t)


def _dots(v: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """``v_k . h_j`` for every vector and stored vector: v (B, k, m), history (B, 2M, m) -> (B, k, 2M),
    in the history's float type. The product in this orientation streams the history once."""
    return torch.bmm(v, history.transpose(1, 2))
