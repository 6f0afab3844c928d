"""How much the L-BFGS attack spends beyond its model evaluations (issue 14), in one run.

On FC100-100-10, one torch thread, subnormal floats flushed, the first ``--n`` (1,000) test images:

(a) a plain evaluation: forward plus the input gradient by autograd, batch 512, timed per example;
(b) the attack (``LBFGS()``, seeded random targets): its time divided by the evaluations it spent
    (``result.evaluations``, summed over the examples), i.e. per example-evaluation.

Times are process CPU times (steadier than wall-clock on a shared machine; one thread, so equal on
a quiet one): each is the least of its repeats ((a) and (c): many short passes, (b): ``--repeat`` attacks),
the one least disturbed by other processes, which only ever add time.

It prints both and their ratio: the attack's bookkeeping (line search, ``c`` search, memory,
projections) is the ratio minus one. The goal is a ratio of at most 3. It also splits (b) by phase
(:mod:`~intriguing.attacks.lbfgs` runs the ``c`` search, then ``refine``, then ``shrink``): each phase's
evaluations, its CPU time per evaluation of its own, and its share of the ratio (its time over every
evaluation of the attack, in units of (a)); the shares add up to the ratio less the time spent outside
the three phases (input checks, the final re-verification).

(c) a floor for (b), per example: the two passes over the L-BFGS history that every iteration needs
    (:mod:`~intriguing.attacks.memory`: ``[s, y, q] . [S; Y]`` and ``[S; Y]^T coef``, batch 512,
    ``memory`` 10, float32, ~31 MiB, more than the cache). One evaluation plus these passes is the
    least an iteration can cost without a smaller or coarser history.

(d) the fixed cost of one iteration of the solver: the paper's attack with ``batch_size=1`` on the first 8
    images, one row per iteration, so its time per evaluation is the cost of an iteration's ~540 small
    tensor operations, whatever the batch. It is what rows pay while the batch thins out at the end of a
    run (the queue has run dry), and what an iteration costs beyond its share of (a) and (c) at any size.

From (a), (c) and (d) it prints the least ratio the solver allows: one evaluation, the two history passes
and the fixed cost shared by a full batch of 512, with nothing else (no thinning tail, no per-row work).

Usage: ``python benchmarks/attack_overhead.py [--n 1000] [--standin | --weights FILE] [--repeat 2]
[--batch-size 512 ...] [--config refined|paper|pool ...]``. The model is the zoo's trained FC100-100-10
(trained and cached on first use); ``--weights FILE`` loads FC100-100-10's weights from a safetensors
file or a ``.pt`` state dict (never unpickled) instead (the same weights from run to run while the zoo's
training code changes); ``--standin`` trains a quick 784-100-100-10 sigmoid network with the same weight
decay on test images the benchmark does not attack. ``--config`` picks the attack: ``refined`` (the
default ``LBFGS()``, c search then refinement), ``paper`` (Tables 1-4: the c search alone), ``pool``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from intriguing import data, zoo
from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.attacks import lbfgs as lbfgs_module
from intriguing.checkpoint import load_weights, read_state_dict


def zoo_model() -> nn.Module:
    return zoo.trained("FC100-100-10").model.eval()


def standin_model(x: torch.Tensor, y: torch.Tensor, epochs: int = 8) -> nn.Module:
    """A sigmoid 784-100-100-10 with FC100-100-10's weight decay (1e-5, 1e-5, 1e-6), trained by Adam."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.Sigmoid(), nn.Linear(100, 100), nn.Sigmoid(),
                              nn.Linear(100, 10))
    decay = {1: 1e-5, 3: 1e-5, 5: 1e-6}
    groups = [{"params": model[i].parameters(), "weight_decay": lam} for i, lam in decay.items()]
    optimiser = torch.optim.Adam(groups, lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for batch in order.split(100):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def plain_seconds_per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeat: int) -> float:
    """Forward plus input gradient, batch 512: the least CPU time of ``10 * repeat`` passes over ``x``."""
    times = []
    for i in range(10 * repeat + 1):  # the first pass warms up
        start = time.process_time()
        for batch in torch.arange(len(x)).split(512):
            point = x[batch].requires_grad_(True)
            loss = F.cross_entropy(model(point), y[batch], reduction="sum")
            torch.autograd.grad(loss, point)
        if i:
            times.append(time.process_time() - start)
    return min(times) / len(x)


def history_seconds_per_example(m: int, memory: int = 10, batch: int = 512, repeat: int = 20) -> float:
    """The two passes over a batch's L-BFGS history, as the memory makes them: least CPU time per row."""
    history, vectors = torch.randn(batch, 2 * memory, m), torch.randn(batch, 3, m)
    coef, out = torch.randn(batch, 1, 2 * memory), torch.zeros(batch, 1, m)
    times = []
    for _ in range(repeat + 1):
        start = time.process_time()
        torch.bmm(vectors, history.transpose(1, 2))
        out.baddbmm_(coef, history)
        times.append(time.process_time() - start)
    return min(times[1:]) / batch


PHASES = {"c search": ("CSearch", "run"), "refine": (None, "refine"), "shrink": (None, "shrink")}


@contextlib.contextmanager
def phase_timer(spent: dict[str, list[float]]) -> Iterator[None]:
    """Time the attack's phases where :mod:`~intriguing.attacks.lbfgs` calls them (``CSearch.run``,
    ``refine``, ``shrink``): ``spent[phase]`` collects [CPU seconds, evaluations] while inside."""

    def timed(phase, call):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            outcome = call(*args, **kwargs)
            spent.setdefault(phase, [0.0, 0])
            spent[phase][0] += time.process_time() - start
            spent[phase][1] += int(outcome.evaluations.sum())
            return outcome
        return wrapper

    patched = []
    for phase, (owner, name) in PHASES.items():
        target = getattr(lbfgs_module, owner) if owner else lbfgs_module
        patched.append((target, name, getattr(target, name)))
        setattr(target, name, timed(phase, getattr(target, name)))
    try:
        yield
    finally:
        for target, name, original in patched:
            setattr(target, name, original)


def attack_seconds_per_evaluation(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                                  repeat: int, batch_size: int = 512,
                                  config: str = "refined") -> tuple[float, float, float, dict[str, list[float]]]:
    """The attack's CPU seconds per example-evaluation (best of ``repeat``), mean evaluations, median
    distortion, and that best run's [CPU seconds, evaluations] per phase."""
    attack = LBFGS(getattr(LBFGSConfig, config)(batch_size=batch_size))
    attack(model, x[:64], target=targets[:64])  # warm-up
    best, result, phases = float("inf"), None, {}
    for _ in range(repeat):
        spent: dict[str, list[float]] = {}
        with phase_timer(spent):
            start = time.process_time()
            result = attack(model, x, target=targets)
            seconds = time.process_time() - start
        if seconds < best:
            best, phases = seconds, spent
    evaluations = int(result.evaluations.sum())
    return best / evaluations, evaluations / len(x), float(result.distortion.nanmedian()), phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-size", type=int, action="append", default=None,
                        help="the attack's batch_size (rows solved together); repeat it to compare several")
    parser.add_argument("--config", action="append", choices=("refined", "paper", "pool"), default=None,
                        help="the attack's LBFGSConfig constructor (default refined, i.e. LBFGS()); repeat it for several")
    parser.add_argument("--standin", action="store_true", help="train a quick stand-in instead of the zoo model")
    parser.add_argument("--weights", help="FC100-100-10 weights (safetensors, or a .pt state dict read with "
                        "weights_only=True) instead of the zoo's cached model, so numbers do not move when it retrains")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    images, labels = data.load_mnist("test")
    x, y = images[: args.n], labels[: args.n]
    model, name = None, "FC100-100-10 (zoo)"
    if args.weights:
        model, name = zoo.build("FC100-100-10").eval(), f"FC100-100-10 with the weights in {args.weights}"
        load_weights(model, read_state_dict(args.weights))
    elif not args.standin:
        model = zoo_model()
    else:
        model, name = standin_model(images[args.n :], labels[args.n :]), "stand-in 784-100-100-10 sigmoid"
    model.requires_grad_(False)
    targets = (y + torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(0))) % 10  # random_targets
    plain = plain_seconds_per_example(model, x, y, args.repeat)
    print(f"model: {name}; {len(x)} test examples, 1 thread, subnormals flushed, CPU times")
    print(f"(a) plain evaluation (forward + input gradient, batch 512): {1e6 * plain:8.1f} us per example")
    passes = history_seconds_per_example(x[0].numel())
    print(f"(c) floor: the two passes over the L-BFGS history (batch 512, memory 10): {1e6 * passes:8.1f} us per "
          f"example; (a) + (c) = {(plain + passes) / plain:.1f} x (a)")
    fixed, _, _, _ = attack_seconds_per_evaluation(model, x[:8], targets[:8], args.repeat, 1, "paper")
    print(f"(d) one row per iteration (paper, batch_size=1): {1e3 * fixed:.2f} ms per evaluation, the fixed cost of an "
          f"iteration: {fixed / (512 * plain):.1f} x a plain evaluation of a whole batch of 512")
    print(f"least ratio this solver allows, every batch full (512) and no other work: 1 + (c) + (d) = "
          f"{1 + passes / plain + fixed / (512 * plain):.1f}")
    for config in args.config or ["refined"]:
        for batch_size in args.batch_size or [512]:
            per_eval, mean_evals, median, phases = attack_seconds_per_evaluation(model, x, targets, args.repeat,
                                                                                 batch_size, config)
            print(f"(b) attack LBFGS(LBFGSConfig.{config}(batch_size={batch_size})): {mean_evals:.1f} evaluations "
                  f"per example, median distortion {median:.6f}, {1e6 * per_eval:8.1f} us per evaluation")
            total = sum(evaluations for _, evaluations in phases.values())
            print("    by phase: " + "; ".join(
                f"{phase} {evaluations} evaluations, {1e6 * seconds / max(evaluations, 1):.1f} us each, "
                f"{seconds / total / plain:.1f} of the ratio" for phase, (seconds, evaluations) in phases.items()))
            print(f"ratio (b) / (a): {per_eval / plain:.1f}  (goal <= 3)", flush=True)


if __name__ == "__main__":
    main()
