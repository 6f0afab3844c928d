"""Time the whole AlexNet-size Table 5 (Section 4.3) and compare Lanczos with plain power iteration.

    python benchmarks/spectral_speed.py [--threads 1] [--seed 0] [--tol 1e-5]

Target: every layer of the Krizhevsky et al. network (random weights, 3x227x227 input), bound and
exact norm, in at most 2 minutes on 2 CPU cores. One torch thread is the default: on a machine whose
cores are busy with other jobs a second OpenMP thread stalls every operation (measured: 35 s with one
thread, 186 s with two, on the same shared 2-core machine); on an idle machine try ``--threads 2``.

Prints each layer's time and the total, then, measured in the same run, why the exact norms use
Lanczos (plain power iteration given the same number of ``A^T A`` products lands further below the
top singular value) and which form of the paper's stride-4 formula is tighter.
"""

from __future__ import annotations

import argparse
import time

import torch

from intriguing import alexnet, spectral

BUDGET_SECONDS = 120.0


def power_iteration(linear_map, input_shape: tuple[int, ...], steps: int, seed: int) -> float:
    """The textbook reference: ``v <- A^T A v / ||A^T A v||``, returning ``||A v||`` after ``steps`` products."""
    origin = torch.zeros((1, *input_shape), requires_grad=True)
    with torch.enable_grad():
        image = linear_map(origin)
    v = torch.randn(origin.shape, generator=torch.Generator().manual_seed(seed))
    for _ in range(steps):
        v = v / v.norm()
        (v,) = torch.autograd.grad(image, origin, linear_map(v), retain_graph=True)
    return float(linear_map(v / v.norm()).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = alexnet.alexnet(seed=args.seed)
    spectral.layer_bounds(torch.nn.Linear(8, 8), (8,))  # warm-up: first autograd and LAPACK calls
    print(f"torch {torch.__version__}, {args.threads} threads, AlexNet with random weights (seed {args.seed}), "
          f"tol {args.tol:g}")

    start = time.perf_counter()
    rows = spectral.layer_bounds(model, alexnet.INPUT_SHAPE, tol=args.tol, seed=args.seed)
    total = time.perf_counter() - start
    print(f"{'layer':<8} {'kind':<18} {'size':<13} {'bound':>8} {'exact':>8} {'ratio':>7} {'seconds':>8}  how")
    for row in rows:
        print(f"{row.name:<8} {row.kind:<18} {row.size:<13} {row.bound:8.4f} {row.exact:8.4f} {row.ratio:7.4f} "
              f"{row.seconds:8.2f}  {row.method}")
    verdict = "within" if total <= BUDGET_SECONDS else "OVER"
    print(f"total {total:.1f} s for {len(rows)} layers ({verdict} the {BUDGET_SECONDS:.0f} s budget)")

    conv3 = model.conv3
    shape = (conv3.in_channels, 13, 13)
    linear_map = spectral.conv2d_map(conv3)
    begin = time.perf_counter()
    lanczos = spectral.operator_norm(linear_map, shape, settings=spectral.NormSettings(tol=args.tol, seed=args.seed))
    lanczos_seconds = time.perf_counter() - begin
    begin = time.perf_counter()
    power = power_iteration(linear_map, shape, lanczos.steps, args.seed)
    power_seconds = time.perf_counter() - begin
    print(f"conv3, {lanczos.steps} products of A^T A each: Lanczos {lanczos.value:.7f} ({lanczos_seconds:.1f} s), "
          f"power iteration {power:.7f} ({power_seconds:.1f} s): power iteration is "
          f"{(lanczos.value - power) / lanczos.value:.1e} below, time ratio power/Lanczos "
          f"{power_seconds / lanczos_seconds:.2f}")

    conv1 = model.conv1
    aware, note = spectral.conv_fourier_bound(conv1.weight, (227, 227), stride=4)
    plain, _ = spectral.conv_fourier_bound(conv1.weight, (227, 227), stride=1)
    exact = next(row.exact for row in rows if row.name == "conv1")
    print(f"conv1 (stride 4): stride-aware formula {aware:.4f} [{note}] vs stride-1 formula then subsampling "
          f"{plain:.4f}: the stride-aware one is {plain / aware:.2f}x tighter; exact norm {exact:.4f}")


if __name__ == "__main__":
    main()
