"""The refined attack's last step: shrinking each result along its ray to the decision boundary.

Tiny hand-made models, so the boundary along each ray is known in closed form.
"""

from __future__ import annotations

import torch
from torch import nn

from intriguing.attacks import LBFGS, LBFGSConfig, Targeted
from intriguing.attacks.radial import shrink


def two_class_linear(w: torch.Tensor, b: float) -> nn.Module:
    """Logits ``(0, w . u + b)``: class 1's margin is linear, ``w . u + b``."""
    layer = nn.Linear(len(w), 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros_like(w), w]))
        layer.bias.copy_(torch.tensor([0.0, b]))
    return layer.eval()


def test_shrink_finds_the_boundary_along_the_ray_and_counts_its_passes():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=gen)
    model = two_class_linear(w, -1.0)
    x = torch.rand(5, 8, generator=gen) * 0.2 + 0.4
    x = x - ((x @ w - 1.0 + 0.5) / w.dot(w))[:, None] * w  # margin -0.5 at x: class 0
    r = w / w.norm() * torch.linspace(0.3, 0.6, 5)[:, None]  # deep inside class 1, ray along w
    start = (x + r).clamp(0, 1)
    start_sq = (start - x).pow(2).sum(1)
    margin_x, margin_start = x @ w - 1.0, start @ w - 1.0
    assert bool((margin_x < 0).all() and (margin_start > 0.1).all())
    t_boundary = -margin_x / (margin_start - margin_x)  # the margin is linear along the ray
    found = shrink(model, (8,), x, start, start_sq, torch.ones(5, dtype=torch.int64), Targeted(torch.ones(5)),
                   steps=5, batch_size=3)
    t = (found.best_sq / start_sq).sqrt()
    assert bool((t >= t_boundary).all()) and bool((t <= t_boundary + 1e-3).all())
    with torch.no_grad():
        assert bool((model(found.best).argmax(1) == 1).all())
    assert found.evaluations.tolist() == [7] * 5  # the start, x, then 5 trials


def test_shrink_leaves_rows_without_a_start_alone_and_never_makes_a_point_worse():
    model = two_class_linear(torch.tensor([1.0, 0.0]), -0.5)
    x = torch.tensor([[0.2, 0.5], [0.3, 0.5], [0.4, 0.5]])
    # a failure, a point on the boundary, none (already adversarial), one inside
    start = torch.tensor([[0.2, 0.5], [0.50021, 0.5], [0.4, 0.5], [0.9, 0.5]])
    x = torch.cat([x, torch.tensor([[0.1, 0.5]])])
    start_sq = (start - x).pow(2).sum(1)
    start_sq[0] = float("inf")
    found = shrink(model, (2,), x, start, start_sq, torch.ones(4, dtype=torch.int64), Targeted(torch.ones(4)),
                   steps=4, batch_size=8)
    assert found.evaluations.tolist() == [0, 1, 0, 6]
    assert torch.equal(found.best[:3], start[:3])
    assert 0.5 < float(found.best[3, 0]) < 0.51


def test_the_attack_shrinks_results_left_inside_by_short_solves_and_counts_the_passes():
    """Solves cut at two iterations end inside the target's region; shrinking brings them to the
    boundary (never farther), for 1 forward pass per attacked example, ``shrink_steps + 2`` where
    the margin says the point is inside."""
    gen = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(3 * torch.randn(p.shape, generator=gen))
    x = torch.rand(24, 6, generator=gen)
    target = (model(x).argmax(1) + 1) % 3
    short = {"max_iter": 2, "max_solves": 30, "refine": False, "outside_in": False}  # the paper's search, cut short
    plain = LBFGS(shrink_steps=0, **short)(model, x, target=target)
    shrunk = LBFGS(shrink_steps=5, **short)(model, x, target=target)
    assert LBFGSConfig.paper().shrink_steps == 0 and LBFGSConfig.pool().shrink_steps == 0
    assert torch.equal(plain.success, shrunk.success) and int(shrunk.success.sum()) > 12
    ok = shrunk.success & (plain.distortion > 0)
    assert bool((shrunk.distortion[ok] <= plain.distortion[ok] * (1 + 1e-6)).all())
    ratio = shrunk.distortion[ok] / plain.distortion[ok]
    assert float(ratio.median()) < 1.0 and float(ratio.min()) < 0.99
    extra = (shrunk.evaluations - plain.evaluations)[ok]
    assert bool(((extra == 1) | (extra == 7)).all())  # the start; then, unless on the boundary, x and 5 trials
    with torch.no_grad():
        assert bool((model(shrunk.adversarial).argmax(1)[shrunk.success] == target[shrunk.success]).all())
