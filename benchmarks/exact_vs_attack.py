"""How close is the L-BFGS attack to the true minimum? Exact MIP vs refined vs paper-faithful L-BFGS.

On the zoo's small ReLU net (FC50-50-10(ReLU); ``--tiny`` trains a 784-20-20-10 ReLU net here instead),
for ``--n`` correctly classified test examples with seeded random targets: the exact minimal L2
distortion (proven optimum, relative gap 1e-4 on ||r||^2), the attack's refined and paper-faithful
distortions, the certified lower bound, and the seconds each took. Ratios are to the exact minimum.

    .venv/bin/python benchmarks/exact_vs_attack.py --n 20 --time-limit 120
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from intriguing import zoo
from intriguing.attacks import LBFGS
from intriguing.data import load_mnist
from intriguing.oracles import certified_lower_bound, exact_minimal_distortion
from intriguing.seeding import random_targets, seeded

MODEL = "FC50-50-10(ReLU)"


def tiny_relu_net(examples: int = 10_000, epochs: int = 5) -> nn.Module:
    """784-20-20-10 ReLU trained on the first ``examples`` training images (about ten seconds)."""
    images, labels = load_mnist("train")
    x, y = images[:examples], labels[:examples]
    with seeded(0):
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(),
                              nn.Linear(20, 10))
        optimiser = torch.optim.Adam(model.parameters(), 2e-3)
        for _ in range(epochs):
            for i in range(0, len(x), 128):
                loss = nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--tiny", action="store_true", help="train a 784-20-20-10 ReLU net here instead of the zoo's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    name = "784-20-20-10 ReLU (trained here)" if args.tiny else MODEL
    model = tiny_relu_net() if args.tiny else zoo.trained(MODEL, progress=False).model
    print(f"model {name}: ready in {time.perf_counter() - start:.1f}s")
    images, labels = load_mnist("test")
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).nonzero().squeeze(1)[: args.n]
    x, y = images[correct], labels[correct]
    target = random_targets(y, 10, seed=0)
    start = time.perf_counter()
    found = LBFGS()(model, x, target=target)
    attack_seconds = time.perf_counter() - start
    start = time.perf_counter()
    lower = certified_lower_bound(model, x, target, upper=found.distortion)
    certify_seconds = time.perf_counter() - start
    exact = exact_minimal_distortion(model, x, target, start=found.adversarial, time_limit=args.time_limit)
    print(f"{'ex':>3} {'t':>2} {'exact':>8} {'status':>9} {'refined':>8} {'paper':>8} {'certif':>8} "
          f"{'ref/ex':>7} {'pap/ex':>7} {'cer/ex':>7} {'bin':>4} {'nodes':>6} {'sec':>6}")
    for i, e in enumerate(exact):
        r, p, c = float(found.distortion[i]), float(found.distortion_paper[i]), float(lower[i])
        print(f"{i:3d} {int(target[i]):2d} {e.rms:8.5f} {e.status:>9} {r:8.5f} {p:8.5f} {c:8.5f} "
              f"{r / e.rms:7.4f} {p / e.rms:7.4f} {c / e.rms:7.4f} {e.binaries:4d} {e.nodes:6d} {e.seconds:6.1f}")
    proven = [i for i, e in enumerate(exact) if e.proven and e.gap <= 1e-4]
    refined = [float(found.distortion[i]) / exact[i].rms for i in proven]
    paper = [float(found.distortion_paper[i]) / exact[i].rms for i in proven]
    certified = [float(lower[i]) / exact[i].rms for i in proven]
    bracket = all(float(lower[i]) <= e.lower_rms + 1e-9 and e.rms <= float(found.distortion[i]) + 1e-6
                  for i, e in enumerate(exact))
    print(f"proven optimal (gap <= 1e-4): {len(proven)}/{len(exact)}; certified <= exact <= found: {bracket}")
    if proven:
        print(f"refined/exact: median {statistics.median(refined):.4f}, worst {max(refined):.4f} (goal <= 1.02, <= 1.10)")
        print(f"paper/exact:   median {statistics.median(paper):.4f}, worst {max(paper):.4f}")
        print(f"certified/exact: median {statistics.median(certified):.4f}, min {min(certified):.4f}")
    seconds = [e.seconds for e in exact]
    print(f"seconds: attack {attack_seconds:.1f} (all), certify {certify_seconds:.1f} (all), exact median "
          f"{statistics.median(seconds):.1f} / max {max(seconds):.1f} / total {sum(seconds):.1f}")


if __name__ == "__main__":
    main()
