"""Benchmark of the batched L-BFGS attack (issues 3, 13): speed, exactness, strength and scale, in one run.

1. Speed, FC100-100-10, random targets: ``intriguing.attacks.LBFGS`` on N test examples against a
   per-example reference written here the way the older toolkits (foolbox 2, cleverhans, advbox)
   run it: scipy's L-BFGS-B on one image at a time, objective ``|r|^2 + c' CE`` (the paper's, with
   ``c' = 1/c``), ``c'`` doubled from 1e-5 until adversarial, then bisected down to an absolute
   tolerance of 1e-5, every solve cold-started from ``x`` (``maxiter=150``, ``m=15``), the closest
   adversarial seen at any evaluation kept. The slow reference may run on the first K examples
   only (``--reference-n``); it handles one example at a time, so its examples/second measured on
   K examples holds for N.
2. Exactness, FC10(1e-4): our distortion over the exact optimum (QP, ``exact_linear``).
3. Strength, FC100-100-10 untargeted: our median L2 against foolbox 3.3.4's DDN and
   Carlini-Wagner L2 (9-step ``c`` search) on the same examples (``pip install foolbox==3.3.4``).
4. Scale: evaluations per image on seeded random ReLU conv nets at 1x28x28, 3x64x64 and
   3x128x128, targeted, refined and paper-faithful (issue 13: large inputs should cost about as
   many evaluations as MNIST-sized ones).

Usage: ``python benchmarks/attack_speed.py [--n 1000] [--reference-n 20] [--untargeted-n 200]``.
All attacks see the same correctly classified test examples. Timings are wall-clock and process
CPU time; on a shared machine CPU time is the steadier of the two.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import contextmanager

import numpy as np
import scipy.optimize
import torch
from torch.nn import functional as F

from intriguing import data, zoo
from intriguing.attacks import LBFGS, LBFGSConfig, exact_linear, rms_distortion


@contextmanager
def timed(record: dict):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    record["wall"], record["cpu"] = time.perf_counter() - wall, time.process_time() - cpu


def trained(name: str):
    """The zoo's trained model in eval mode (``zoo.trained`` returns a record holding it)."""
    found = zoo.trained(name)
    return getattr(found, "model", found).eval()


def examples(model, n: int, seed: int = 0):
    """The first ``n`` test images the model classifies correctly, with seeded random targets != label."""
    x, y = data.load_mnist("test")
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct][:n], y[correct][:n]
    shift = torch.randint(1, 10, (len(y),), generator=torch.Generator().manual_seed(seed))
    return x, y, (y + shift) % 10


def older_toolkit_attack(model, x, target, epsilon=1e-5, maxiter=150, memory=15):
    """One example, the older toolkits' way (see the module docstring). Returns (x_adv or None, evaluations)."""
    shape, x0 = x.shape, x.detach().flatten().double().numpy()
    bounds = [(0.0, 1.0)] * len(x0)
    goal = torch.tensor([target])
    state = {"evals": 0, "best": None, "best_sq": math.inf}

    def loss(z, c):
        state["evals"] += 1
        point = torch.from_numpy(z).float().view(1, *shape[1:]).requires_grad_(True)
        logits = model(point)
        ce = F.cross_entropy(logits, goal)
        (grad,) = torch.autograd.grad(ce, point)
        r = z - x0
        sq = float(r @ r)
        if int(logits.argmax()) == target and sq < state["best_sq"]:
            state["best"], state["best_sq"] = z.copy(), sq
        return sq + c * float(ce.detach()), 2 * r + c * grad.double().numpy().ravel()

    def adversarial_at(c):
        z, _, _ = scipy.optimize.fmin_l_bfgs_b(loss, x0, args=(c,), bounds=bounds, m=memory, maxiter=maxiter)
        with torch.no_grad():
            return int(model(torch.from_numpy(z).float().view(1, *shape[1:])).argmax()) == target

    c = epsilon
    for _ in range(30):
        c *= 2
        if adversarial_at(c):
            break
    else:
        return state["best"], state["evals"]
    low, high = 0.0, c
    while high - low >= epsilon:
        middle = (low + high) / 2
        if adversarial_at(middle):
            high = middle
        else:
            low = middle
    return state["best"], state["evals"]


def speed(n: int, reference_n: int, batch_size: int) -> None:
    model = trained("FC100-100-10")
    x, _, target = examples(model, n)
    print(f"\n== 1. Speed: FC100-100-10, {len(x)} test examples, random targets ==")
    ours_time: dict = {}
    with timed(ours_time):
        ours = LBFGS(batch_size=batch_size)(model, x, target=target)
    k = min(reference_n, len(x))
    ref_time: dict = {}
    ref_adv, ref_evals = [], []
    with timed(ref_time):
        for i in range(k):
            adv, evals = older_toolkit_attack(model, x[i : i + 1], int(target[i]))
            ref_adv.append(adv)
            ref_evals.append(evals)
    ref_ok = torch.tensor([a is not None for a in ref_adv])
    ref_dist = torch.tensor([
        float(rms_distortion(x[i : i + 1], torch.from_numpy(a).float().view(1, *x.shape[1:]))) if a is not None
        else math.nan for i, a in enumerate(ref_adv)])
    print(f"ours:      {len(x)} examples in {ours_time['wall']:.2f} s wall / {ours_time['cpu']:.2f} s CPU; "
          f"success {100 * ours.success_rate:.1f}%; {ours.evaluations.float().mean():.1f} evaluations/example")
    print(f"reference: timed on the first {k} of those examples (it runs one example at a time, so its "
          f"examples/second holds for all {len(x)}): {ref_time['wall']:.2f} s wall / {ref_time['cpu']:.2f} s CPU; "
          f"success {100 * float(ref_ok.float().mean()):.1f}%; {np.mean(ref_evals):.1f} evaluations/example")
    for clock in ("wall", "cpu"):
        ours_rate, ref_rate = len(x) / ours_time[clock], k / ref_time[clock]
        print(f"examples/second ({clock:4}): ours {ours_rate:.1f}, reference {ref_rate:.3f}"
              f" -> ratio {ours_rate / ref_rate:.0f}x")
    per_eval = (ref_time["cpu"] / sum(ref_evals)) / (ours_time["cpu"] / float(ours.evaluations.sum()))
    print(f"of which: {np.mean(ref_evals) / float(ours.evaluations.float().mean()):.1f}x fewer evaluations, "
          f"{per_eval:.0f}x cheaper per evaluation (CPU)")
    both = ref_ok & ours.success[:k]
    ratio = ours.distortion[:k][both] / ref_dist[both]
    paper_ratio = ours.distortion_paper[:k][both] / ref_dist[both]
    print(f"median distortion on the {int(both.sum())} examples both solved: ours {ours.distortion[:k][both].median():.4f}"
          f" (paper-faithful {ours.distortion_paper[:k][both].median():.4f}), reference {ref_dist[both].median():.4f}")
    print(f"median per-example distortion ratio ours/reference: {ratio.median():.3f} "
          f"(paper-faithful, before refinement: {paper_ratio.median():.3f})")
    print(f"all {len(x)} examples: median distortion {ours.distortion.nanmedian():.4f}, "
          f"paper-faithful {ours.distortion_paper.nanmedian():.4f}")


def exactness(n: int, batch_size: int) -> None:
    model = trained("FC10(1e-4)")
    x, _, target = examples(model, n)
    print(f"\n== 2. Exactness: FC10(1e-4), {len(x)} test examples, random targets, against the exact QP ==")
    ours = LBFGS(batch_size=batch_size)(model, x, target=target)
    exact = exact_linear(model, x, target)
    ok = ours.success & exact.success
    for label, mine in (("ours", ours.distortion), ("paper-faithful (no refinement)", ours.distortion_paper)):
        ratio = mine[ok] / exact.distortion[ok]
        print(f"{label}: distortion / exact optimum: median {ratio.median():.4f}, worst {ratio.max():.4f}, "
              f"best {ratio.min():.4f}")
    print(f"success: ours {100 * ours.success_rate:.1f}%, exact {100 * exact.success_rate:.1f}%")


def untargeted(n: int, batch_size: int) -> None:
    import foolbox

    model = trained("FC100-100-10")
    x, y, _ = examples(model, n)
    print(f"\n== 3. Untargeted: FC100-100-10, {len(x)} test examples, against foolbox {foolbox.__version__} ==")
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    rows = []
    attacks = (
        ("ours (LBFGS)", lambda: LBFGS(batch_size=batch_size)(model, x, labels=y).adversarial),
        ("foolbox DDN (1000 steps)", lambda: foolbox.attacks.DDNAttack(steps=1000)(fmodel, x, y, epsilons=None)[1]),
        ("foolbox C&W-L2 (9 c steps x 10000)", lambda: foolbox.attacks.L2CarliniWagnerAttack()(fmodel, x, y, epsilons=None)[1]),
    )
    for label, attack in attacks:
        clock: dict = {}
        with timed(clock):
            adv = attack()
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y
        l2 = torch.where(fooled, (adv - x).flatten(1).norm(dim=1), torch.tensor(math.inf))
        rows.append((label, l2, clock))
        print(f"{label:36} median L2 {l2.median():.4f}  success {100 * float(fooled.float().mean()):.1f}%  "
              f"{clock['wall']:.1f} s wall / {clock['cpu']:.1f} s CPU")
    ours_l2 = rows[0][1]
    best_other = min(float(l2.median()) for _, l2, _ in rows[1:])
    print(f"ours / best foolbox median L2: {float(ours_l2.median()) / best_other:.4f}")
    for label, l2, _ in rows[1:]:
        ratio = ours_l2 / l2
        print(f"  per example, ours / {label}: median {ratio.median():.4f}, worst {ratio.max():.4f}, "
              f"ours smaller on {100 * float((ratio < 1).float().mean()):.0f}% of examples")


def conv_net(channels: int, size: int, seed: int = 0) -> torch.nn.Module:
    """Two stride-2 ReLU convolutions and a linear layer, seeded default initialisation (as the tests)."""
    nn = torch.nn
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(channels, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * (size // 4) ** 2, 10)).eval()


def scale(n: int, batch_size: int) -> None:
    """Section 4.1's search should cost about as many evaluations on large inputs as on MNIST-sized ones."""
    print(f"\n== 4. Scale: random ReLU conv nets, {n} uniform random images, random targets ==")
    for channels, size in ((1, 28), (3, 64), (3, 128)):
        model = conv_net(channels, size)
        x = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            label = model(x).argmax(1)
        target = (label + torch.randint(1, 10, label.shape, generator=torch.Generator().manual_seed(0))) % 10
        for name, config in (("refined", LBFGSConfig.refined()), ("paper", LBFGSConfig.paper())):
            clock: dict = {}
            with timed(clock):
                result = LBFGS(config, batch_size=batch_size)(model, x, target=target)
            print(f"{channels}x{size}x{size} {name:8} {result.evaluations.double().mean():6.1f} evaluations/image, "
                  f"success {100 * result.success_rate:.0f}%, median distortion {result.distortion.nanmedian():.6f}, "
                  f"{clock['cpu']:.1f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="examples attacked by our attack (speed, exactness)")
    parser.add_argument("--reference-n", type=int, default=20, help="examples for the slow per-example reference")
    parser.add_argument("--untargeted-n", type=int, default=200, help="examples for the foolbox comparison")
    parser.add_argument("--batch-size", type=int, default=512, help="our attack's batch size")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default: on a shared 2-core machine a second OpenMP thread "
                             "makes small tensor operations far slower")
    parser.add_argument("--scale-n", type=int, default=32, help="images per input size for the scale part")
    parser.add_argument("--skip", choices=("speed", "exactness", "untargeted", "scale"), action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); models from the zoo cache (trained if missing)")
    if "speed" not in args.skip:
        speed(args.n, args.reference_n, args.batch_size)
    if "exactness" not in args.skip:
        exactness(args.n, args.batch_size)
    if "untargeted" not in args.skip:
        untargeted(args.untargeted_n, args.batch_size)
    if "scale" not in args.skip:
        scale(args.scale_n, args.batch_size)


if __name__ == "__main__":
    main()
