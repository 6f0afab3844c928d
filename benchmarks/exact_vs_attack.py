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
from intriguing.data import load_mnist
from intriguing.oracles.compare import compare_with_attack
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
    parser.add_argument("--model", default=MODEL, help="zoo ReLU MLP to solve (default %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="train a 784-20-20-10 ReLU net here instead of the zoo's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    name = "784-20-20-10 ReLU (trained here)" if args.tiny else args.model
    model = tiny_relu_net() if args.tiny else zoo.trained(args.model, progress=False).model
    print(f"model {name}: ready in {time.perf_counter() - start:.1f}s", flush=True)
    images, labels = load_mnist("test")
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).nonzero().squeeze(1)[: args.n]
    x, y = images[correct], labels[correct]
    target = random_targets(y, 10, seed=0)
    out = compare_with_attack(model, x, target, time_limit=args.time_limit)
    print(f"{'ex':>3} {'t':>2} {'exact':>8} {'status':>9} {'refined':>8} {'paper':>8} {'certif':>8} "
          f"{'ref/ex':>7} {'pap/ex':>7} {'cer/ex':>7} {'bin':>4} {'nodes':>6} {'sec':>6}")
    for r in out["rows"]:
        print(f"{r['index']:3d} {int(target[r['index']]):2d} {r['exact']:8.5f} {r['status']:>9} {r['refined']:8.5f} "
              f"{r['paper']:8.5f} {r['certified']:8.5f} {r['refined_ratio']:7.4f} {r['paper_ratio']:7.4f} "
              f"{r['certified_ratio']:7.4f} {r['binaries']:4d} {r['nodes']:6d} {r['seconds']:6.1f}")
    s = out["summary"]
    print(f"proven optimal (gap <= 1e-4): {s['solved']}/{s['examples']}; "
          f"certified <= exact (proven) and exact <= found for all: {s['ordered']}")
    if s["solved"]:
        print(f"refined/exact: median {s['median_refined_ratio']:.4f}, worst {s['worst_refined_ratio']:.4f} "
              "(goal <= 1.02, <= 1.10)")
        print(f"paper/exact:   median {s['median_paper_ratio']:.4f}, worst {s['worst_paper_ratio']:.4f}")
        print(f"certified/exact: median {s['median_certified_ratio']:.4f}, min {s['worst_certified_ratio']:.4f}")
    seconds = [r["seconds"] for r in out["rows"]]
    print(f"seconds: attack {s['attack_seconds']:.1f} (all), certify {s['certify_seconds']:.1f} (all), exact median "
          f"{statistics.median(seconds):.1f} / max {max(seconds):.1f} / total {sum(seconds):.1f}")


if __name__ == "__main__":
    main()
